import Glibc
import VigilCore

/// Questions about, and acts of, the calling process.
public enum ThisProcess {
    public static var pid: Int32 { getpid() }
    public static var parentPID: Int32 { getppid() }
    public static var userID: UInt32 { getuid() }
    public static var effectiveUserID: UInt32 { geteuid() }

    /// Ends the process with `code` (`exit(3)`: atexit handlers and stdio flushing run).
    public static func exit(_ code: Int32) -> Never { Glibc.exit(code) }

    /// Sends `signal` to this process (`kill(getpid(), sig)`; fault injection SIGKILLs itself).
    public static func raise(_ signal: Signal) { _ = kill(getpid(), signal.rawValue) }

    /// Sleeps the calling thread for `span`: one `nanosleep` (a signal that interrupts it
    /// sleeps on for what is left), so a one-second pause is one wake-up, not two (`usleep`
    /// takes less than a second per call).
    public static func pause(_ span: TimeSpan) {
        guard span.nanoseconds > 0 else { return }
        var request = timespec(tv_sec: Int(span.nanoseconds / 1_000_000_000), tv_nsec: Int(span.nanoseconds % 1_000_000_000))
        var left = timespec()
        while nanosleep(&request, &left) != 0 && lastErrno() == EINTR { request = left }
    }

    /// Sets environment variable `name` for this process and its future children.
    public static func setEnvironment(_ name: String, _ value: String?) {
        if let value { setenv(name, value, 1) } else { unsetenv(name) }
    }
}

/// Every process on the machine, as /proc lists them.
public enum ProcessTable {
    /// The PIDs under /proc now.
    public static func allPIDs() -> [Int32] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var out: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let pid = Int32(name), pid > 0 { out.append(pid) }
        }
        return out
    }

    /// Whether a process `pid` exists at all (`kill(pid, 0)`; EPERM: it exists, not ours).
    /// Not PID-reuse safe: for that, `ProcessIdentity.liveness`.
    public static func exists(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || cvigilErrno() == EPERM
    }
}

/// A process group, signalled as a whole (`kill(-pgid, sig)`). Only for a group whose id is
/// pinned by a process Vigil knows (a session leader it checked, a child not yet reaped).
public struct ProcessGroup: Sendable, Hashable {
    public let id: Int32
    public init(id: Int32) { self.id = id }

    /// True when the kernel accepted the signal for at least one member.
    @discardableResult
    public func signal(_ signal: Signal) -> Bool {
        guard id > 1 else { return false }
        return kill(-id, signal.rawValue) == 0
    }
}
