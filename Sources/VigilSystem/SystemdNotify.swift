import Glibc
import VigilCore

/// The service manager's notification protocol (systemd's `Type=notify`; docs/operator-guide.md,
/// "Run under systemd"): newline-separated `KEY=value` lines in one datagram, sent over an
/// `AF_UNIX` `SOCK_DGRAM` socket to the address in `NOTIFY_SOCKET` — a path, or an abstract
/// name written `@name`. No library: one socket, `sendto`. Never blocks (`MSG_DONTWAIT`: a
/// service manager that does not read must not stall the caller) and never crashes: a failed
/// send is returned to the caller.
///
/// The owner closes it (`close()`); it holds one descriptor and the address, both constant.
public final class SystemdNotify: Sendable {
    /// Where the datagrams go.
    public enum Address: Equatable, Sendable, CustomStringConvertible {
        /// A socket file.
        case path(String)
        /// A name in the abstract namespace (`@name` in `NOTIFY_SOCKET`; no file, no leading NUL here).
        case abstract(String)

        /// `NOTIFY_SOCKET`'s value: `/path` or `@name`. Nil for anything else (empty, relative,
        /// longer than `sockaddr_un` holds, with a NUL byte).
        public init?(_ text: String) {
            let bytes = Array(text.utf8)
            guard bytes.count >= 2, !bytes.contains(0), bytes.count <= Address.maxLength else { return nil }
            switch bytes[0] {
            case UInt8(ascii: "/"): self = .path(text)
            case UInt8(ascii: "@"): self = .abstract(String(text.dropFirst()))
            default: return nil
            }
        }

        /// `sun_path` holds 108 bytes: a path needs its NUL, an abstract name its leading NUL.
        static let maxLength = 107

        public var description: String {
            switch self {
            case .path(let p): return p
            case .abstract(let n): return "@" + n
            }
        }
    }

    /// The environment variables of the protocol, read once at start and then removed so that
    /// children do not inherit them (docs/operator-guide.md, "Run under systemd").
    public static let socketVariable = "NOTIFY_SOCKET"
    public static let watchdogVariable = "WATCHDOG_USEC"
    public static let watchdogPIDVariable = "WATCHDOG_PID"

    public let address: Address
    private let fd: Int32

    /// Opens an unbound datagram socket for `address` (close-on-exec).
    public init(address: Address) throws(SystemError) {
        self.address = address
        fd = try sys("socket", "for \(address)") { socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
    }

    /// Sends `message` as one datagram. Throws the failed call (`ENOENT`/`ECONNREFUSED`: nobody
    /// listens; `EAGAIN`: the manager's queue is full).
    public func send(_ message: String) throws(SystemError) {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes: [UInt8]
        switch address {
        case .path(let p): pathBytes = Array(p.utf8) + [0]
        case .abstract(let n): pathBytes = [0] + Array(n.utf8)
        }
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard pathBytes.count <= capacity else { throw SystemError("sendto", errno: ENAMETOOLONG, subject: "\(address)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in pathBytes.enumerated() { raw[i] = b }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + pathBytes.count)
        let bytes = Array(message.utf8)
        let sent = try sys("sendto", "\(address)") {
            withUnsafePointer(to: &addr) { ap in
                ap.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    bytes.withUnsafeBytes { Glibc.sendto(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL), sa, length) }
                }
            }
        }
        if sent != bytes.count { throw SystemError("sendto", errno: EMSGSIZE, subject: "\(address)") }
    }

    public func close() { _ = Glibc.close(fd) }

    // MARK: - Messages

    /// One datagram of `fields`, in order: `KEY=value` lines joined by newlines. A newline in
    /// a value would start a new assignment: it becomes a space.
    public static func message(_ fields: [(String, String)]) -> String {
        fields.map { key, value in
            key + "=" + String(value.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
        }.joined(separator: "\n")
    }

    /// The assignments of a datagram, in order (for tests and tools; lines without `=` are
    /// skipped, as the service manager does).
    public static func parse(_ datagram: [UInt8]) -> [(String, String)] {
        String(decoding: datagram, as: UTF8.self).split(separator: "\n").compactMap { line in
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { return nil }
            return (String(parts[0]), String(parts[1]))
        }
    }

    /// The watchdog interval the manager asked for: `WATCHDOG_USEC` microseconds (a positive
    /// decimal), and only when `WATCHDOG_PID` is unset or names `pid` (the variable may have
    /// been inherited by a process it is not meant for). Nil: no watchdog pings.
    public static func watchdogInterval(usec: String?, pid watchdogPID: String?, ourPID: Int32) -> TimeSpan? {
        guard let usec, let us = Int64(usec), us > 0, us < Int64.max / 1000 else { return nil }
        if let watchdogPID {
            guard let p = Int32(watchdogPID), p == ourPID else { return nil }
        }
        return TimeSpan(nanoseconds: us * 1000)
    }
}
