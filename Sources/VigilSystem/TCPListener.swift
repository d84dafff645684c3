import CVigil
import Glibc
import VigilCore

/// An IPv4 address and port to listen on (`"127.0.0.1:9464"`, `"localhost:9464"`,
/// `"0.0.0.0:9464"`), parsed without a resolver: only dotted quads and `localhost`.
public struct ListenAddress: Equatable, Sendable, CustomStringConvertible {
    /// The four bytes, most significant first.
    public var octets: [UInt8]
    public var port: UInt16

    public init(octets: [UInt8], port: UInt16) {
        self.octets = octets
        self.port = port
    }

    /// Nil with a reason when `text` is not `HOST:PORT` with an IPv4 host (or `localhost`) and
    /// a port from 0 to 65535 (0: any free port).
    public static func parse(_ text: String) -> Result<ListenAddress, ListenAddressError> {
        guard let colon = text.lastIndex(of: ":") else { return .failure(ListenAddressError("\(text.debugDescription) is not HOST:PORT (e.g. 127.0.0.1:9464)")) }
        let host = String(text[..<colon]), portText = String(text[text.index(after: colon)...])
        guard let port = UInt16(portText) else { return .failure(ListenAddressError("\(text.debugDescription): the port must be a number from 0 to 65535")) }
        if host == "localhost" { return .success(ListenAddress(octets: [127, 0, 0, 1], port: port)) }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        let bytes = parts.compactMap { p -> UInt8? in p.allSatisfy(\.isASCII) && !p.isEmpty && p.count <= 3 ? UInt8(p) : nil }
        guard parts.count == 4, bytes.count == 4 else {
            return .failure(ListenAddressError("\(text.debugDescription): the host must be an IPv4 address (e.g. 127.0.0.1) or localhost"))
        }
        return .success(ListenAddress(octets: bytes, port: port))
    }

    /// 127.0.0.0/8.
    public var isLoopback: Bool { octets.first == 127 }

    public var host: String { octets.map(String.init).joined(separator: ".") }
    public var description: String { "\(host):\(port)" }
}

public struct ListenAddressError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A listening TCP socket (IPv4, close-on-exec, `SO_REUSEADDR`) whose `accept` waits at most a
/// given time, and the connections it hands out. Small on purpose: one connection at a time is
/// what its user (the runner's `/metrics`) needs.
public final class TCPListener: Sendable {
    public let fd: Int32
    /// The address bound (with the port the kernel chose when 0 was asked for).
    public let address: ListenAddress

    public init(_ address: ListenAddress, backlog: Int32 = 16) throws(SystemError) {
        let fd = try sys("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        let o = address.octets
        addr.sin_addr.s_addr = (UInt32(o[0]) << 24 | UInt32(o[1]) << 16 | UInt32(o[2]) << 8 | UInt32(o[3])).bigEndian
        addr.sin_port = address.port.bigEndian
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if bound != 0 {
            let e = cvigil_errno()
            Glibc.close(fd)
            throw SystemError("bind", errno: e, subject: address.description)
        }
        if listen(fd, backlog) != 0 {
            let e = cvigil_errno()
            Glibc.close(fd)
            throw SystemError("listen", errno: e, subject: address.description)
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        self.fd = fd
        self.address = ListenAddress(octets: address.octets, port: UInt16(bigEndian: addr.sin_port))
    }

    deinit { Glibc.close(fd) }

    /// The next connection, waiting at most `timeoutMilliseconds`; nil when none came (or the
    /// accept failed: the peer gave up, descriptors ran out). Close-on-exec.
    public func accept(timeoutMilliseconds: Int32) -> TCPConnection? {
        guard FileDescriptor(rawValue: fd).poll(timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        // Close-on-exec set right after `accept`: this thread spawns nothing meanwhile, and the
        // runner's spawns hand children only the descriptors they name (`Spawner`).
        let c = Glibc.accept(fd, nil, nil)
        guard c >= 0 else { return nil }
        FileDescriptor(rawValue: c).setCloseOnExec()
        return TCPConnection(fd: c)
    }
}

/// One accepted connection; closed by `close()` (once).
public struct TCPConnection: Sendable {
    public let fd: Int32

    /// Reads what is there, waiting at most until `deadline`: nil on timeout, an empty array at
    /// the end of the stream (or an error).
    public func read(max: Int, until deadline: BootInstant) -> [UInt8]? {
        let left = deadline - Clock.boot()
        guard left > .zero, FileDescriptor(rawValue: fd).poll(timeoutMilliseconds: pollTimeout(left)) else { return nil }
        var buf = [UInt8](repeating: 0, count: max)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, max, Int32(MSG_DONTWAIT)) }
        if n < 0 && (cvigil_errno() == EAGAIN || cvigil_errno() == EINTR) { return read(max: max, until: deadline) }
        return n <= 0 ? [] : Array(buf[0..<n])
    }

    /// Sends all of `bytes`, waiting at most until `deadline` for a slow reader; false when it
    /// could not (the peer is gone or too slow).
    @discardableResult
    public func send(_ bytes: [UInt8], until deadline: BootInstant) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n > 0 { sent += n; continue }
            let e = cvigil_errno()
            guard n < 0, e == EAGAIN || e == EINTR else { return false }
            let left = deadline - Clock.boot()
            guard left > .zero else { return false }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, pollTimeout(left))
        }
        return true
    }

    public func close() {
        _ = shutdown(fd, Int32(SHUT_RDWR))
        _ = Glibc.close(fd)
    }

    /// Ends our side after an answer, then reads and drops what the peer still sends (at most
    /// `limit` bytes, until `deadline`) before closing: closing with unread input makes the
    /// kernel reset the connection, and a reset can discard the answer at the peer before it
    /// read it (a 400 for a request that was too large).
    public func closeAfterAnswer(discardingAtMost limit: Int, until deadline: BootInstant) {
        _ = shutdown(fd, Int32(SHUT_WR))
        var dropped = 0
        while dropped < limit, let chunk = read(max: 65536, until: deadline), !chunk.isEmpty { dropped += chunk.count }
        _ = Glibc.close(fd)
    }
}

/// A plain HTTP/1.x client call to an IPv4 address, for tests and benchmarks that talk to the
/// runner's `/metrics` or to a local server: sends `request` as is and returns everything the
/// server sent until it closed, or nil when it could not connect or the deadline passed.
public enum TCPClient {
    public static func exchange(_ address: ListenAddress, request: [UInt8], timeout: TimeSpan) -> [UInt8]? {
        guard let c = connect(address) else { return nil }
        defer { c.close() }
        let deadline = Clock.boot() + timeout
        guard c.send(request, until: deadline) else { return nil }
        var out: [UInt8] = []
        while true {
            guard let chunk = c.read(max: 65536, until: deadline) else { return nil }
            if chunk.isEmpty { return out }
            out += chunk
        }
    }

    /// A connected socket (blocking connect: the targets are local).
    public static func connect(_ address: ListenAddress) -> TCPConnection? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        let o = address.octets
        addr.sin_addr.s_addr = (UInt32(o[0]) << 24 | UInt32(o[1]) << 16 | UInt32(o[2]) << 8 | UInt32(o[3])).bigEndian
        addr.sin_port = address.port.bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { Glibc.close(fd); return nil }
        return TCPConnection(fd: fd)
    }
}

/// Milliseconds for `poll`, rounded up, at most an hour.
private func pollTimeout(_ span: TimeSpan) -> Int32 {
    span.nanoseconds <= 0 ? 0 : Int32(min(3_600_000, (span.nanoseconds + 999_999) / 1_000_000))
}
