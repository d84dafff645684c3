import Foundation
import Glibc
import VigilCore

/// A process named so that a reused PID can never be mistaken for it: the PID plus the start
/// time from /proc/PID/stat (field 22, clock ticks since boot).
public struct ProcessIdentity: Codable, Hashable, Sendable, CustomStringConvertible {
    public var pid: Int32
    public var startTicks: UInt64

    public init(pid: Int32, startTicks: UInt64) {
        self.pid = pid
        self.startTicks = startTicks
    }

    enum CodingKeys: String, CodingKey {
        case pid
        case startTicks = "start_ticks"
    }

    public var description: String { "pid \(pid) (start \(startTicks))" }

    /// `PID:START_TICKS`, as handed between processes in an environment variable (the wrapper
    /// names itself to its runner this way: `VIGIL_WRAPPER`).
    public var token: String { "\(pid):\(startTicks)" }

    /// Parses `token`; nil for anything else.
    public init?(token: String) {
        let parts = token.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, let start = UInt64(parts[1]) else { return nil }
        self.init(pid: pid, startTicks: start)
    }

    /// When the process started, on the boot clock.
    public var startedAt: BootInstant {
        BootInstant(nanoseconds: Int64(startTicks) * 1_000_000_000 / Clock.ticksPerSecond)
    }

    /// This process.
    public static let current: ProcessIdentity = {
        guard let stat = ProcStat.read(pid: getpid()) else {
            fatalError("cannot read /proc/self/stat: /proc must be mounted")
        }
        return ProcessIdentity(pid: getpid(), startTicks: stat.startTicks)
    }()

    /// The identity of whatever runs as `pid` now, if anything (zombies excluded).
    public static func of(pid: Int32) -> ProcessIdentity? {
        guard pid > 0, let stat = ProcStat.read(pid: pid), !stat.isZombie else { return nil }
        return ProcessIdentity(pid: pid, startTicks: stat.startTicks)
    }

    public enum Liveness: Equatable, Sendable {
        /// Running with this identity.
        case alive
        /// No such process, a zombie, or the PID now belongs to another process.
        case gone
    }

    /// PID-reuse safe liveness. A zombie counts as gone. Cost: one small /proc read.
    public func liveness() -> Liveness {
        guard let stat = ProcStat.read(pid: pid), !stat.isZombie, stat.startTicks == startTicks else { return .gone }
        return .alive
    }

    public var isAlive: Bool { liveness() == .alive }

    /// Opens a pidfd and confirms, after opening, that it refers to this identity. Nil when the
    /// process is gone (or the PID is someone else's now).
    public func openPidFD() -> PidFD? {
        let fd = cvigilPidfdOpen(pid)
        guard fd >= 0 else { return nil }
        let pidfd = PidFD(fd: fd, identity: self)
        // The pidfd pins the process it was opened for: if /proc still shows our start time
        // now, the pidfd is ours and no later reuse of the PID can redirect a signal.
        guard liveness() == .alive else { return nil }
        return pidfd
    }

    /// Sends `signal` through a verified pidfd. Returns false (and sends nothing) when the
    /// process is not this identity any more.
    @discardableResult
    public func signal(_ signal: Signal) -> Bool {
        guard let pidfd = openPidFD() else { return false }
        return pidfd.signal(signal)
    }

    /// Resident set size in bytes, from /proc/PID/statm.
    public func residentBytes() -> UInt64? { ProcStat.residentBytes(pid: pid) }
}

/// The parts of /proc/PID/stat Vigil needs. Parsed after the last `)` so a command name with
/// spaces or parentheses cannot shift the fields.
public struct ProcStat: Sendable {
    public var state: Character
    public var parentPID: Int32
    public var processGroup: Int32
    public var session: Int32
    public var userTicks: UInt64
    public var systemTicks: UInt64
    public var startTicks: UInt64

    public var isZombie: Bool { state == "Z" || state == "X" || state == "x" }

    public static func read(pid: Int32) -> ProcStat? {
        // Hot path (every probe): one read into a stack buffer, fields parsed as bytes.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1024) { buf -> ProcStat? in
            guard let fd = try? FileDescriptor.open("/proc/\(pid)/stat", .readOnly),
                  let n = fd.closeAfter({ try? fd.read(into: UnsafeMutableRawBufferPointer(buf)) }), n > 0 else { return nil }
            let bytes = UnsafeBufferPointer(rebasing: buf[0..<n])
            guard var i = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
            i += 2 // ") "
            guard i < n else { return nil }
            let state = Character(UnicodeScalar(bytes[i]))
            var fields: [UInt64] = []
            fields.reserveCapacity(20)
            i += 2
            // fields 4 … 22 (ppid … starttime)
            while i < n && fields.count < 19 {
                var v: UInt64 = 0
                var neg = false
                if bytes[i] == UInt8(ascii: "-") { neg = true; i += 1 }
                while i < n, bytes[i] >= 48, bytes[i] <= 57 {
                    v = v &* 10 &+ UInt64(bytes[i] - 48)
                    i += 1
                }
                fields.append(neg ? 0 : v)
                i += 1
            }
            guard fields.count == 19 else { return nil }
            return ProcStat(state: state, parentPID: Int32(truncatingIfNeeded: fields[0]), processGroup: Int32(truncatingIfNeeded: fields[1]),
                            session: Int32(truncatingIfNeeded: fields[2]), userTicks: fields[10], systemTicks: fields[11],
                            startTicks: fields[18])
        }
    }

    /// The machine's memory (`/proc/meminfo`): what new work can still get without swapping
    /// (`MemAvailable`) and the total, in bytes.
    public static func systemMemory() -> (available: UInt64, total: UInt64)? {
        guard let text = readSmallFile("/proc/meminfo") else { return nil }
        var available: UInt64?, total: UInt64?
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 2, let kib = UInt64(f[1]) else { continue }
            if f[0] == "MemAvailable:" { available = kib * 1024 }
            if f[0] == "MemTotal:" { total = kib * 1024 }
        }
        guard let available, let total else { return nil }
        return (available, total)
    }

    public static func residentBytes(pid: Int32) -> UInt64? {
        guard let text = readSmallFile("/proc/\(pid)/statm") else { return nil }
        let f = text.split(separator: " ")
        guard f.count > 1, let pages = UInt64(f[1]) else { return nil }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The command line, NUL-separated fields joined with spaces (empty for kernel threads).
    public static func commandLine(pid: Int32) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Reads a small file with one `read` call into a stack-sized buffer: cheap enough for
    /// every tick.
    static func readSmallFile(_ path: String) -> String? {
        guard let fd = try? FileDescriptor.open(path, .readOnly) else { return nil }
        var buf = [UInt8](repeating: 0, count: 1024)
        guard let n = fd.closeAfter({ try? buf.withUnsafeMutableBytes { (b) throws(SystemError) in try fd.read(into: b) } }), n > 0 else { return nil }
        return String(decoding: buf[0..<n], as: UTF8.self)
    }
}
