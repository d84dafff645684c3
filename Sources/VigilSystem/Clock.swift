import FoundationEssentials
import Glibc
import VigilCore

/// The one clock. `boot()` for every comparison (across processes too); `wall()` beside it for
/// people.
public enum Clock {
    /// `clock_gettime(CLOCK_BOOTTIME)`.
    public static func boot() -> BootInstant {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return BootInstant(nanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }

    /// Wall-clock time, for humans only.
    public static func wall() -> Date { Date() }

    /// CPU time used by this process (user + system).
    public static func processCPU() -> TimeSpan {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return TimeSpan(nanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }

    /// ISO-8601 with milliseconds, UTC: how times are shown to people and written in the journal.
    public static func iso(_ date: Date) -> String {
        let f = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)
        return date.formatted(f)
    }

    /// The kernel's boot id: boot instants are only comparable within one boot.
    public static let bootID: String = {
        (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingWhitespace() ?? "unknown"
    }()

    /// Clock ticks per second of /proc/PID/stat's start time.
    public static let ticksPerSecond: Int64 = Int64(sysconf(Int32(_SC_CLK_TCK)))
}

extension Clock {
    /// CPU time used by the calling thread.
    public static func threadCPU() -> TimeSpan {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return TimeSpan(nanoseconds: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }
}
