import Foundation
import Glibc
import VigilSystem

/// A tiny real HTTP server on 127.0.0.1 for webhook tests: one request per connection, answered
/// with HTTP/1.0 and closed (no keep-alive, no Nagle stall). Records every request; answers
/// from a script (`respond`), which may also hang (never answer).
final class HTTPTestServer: @unchecked Sendable {
    struct Request: Sendable {
        var method: String
        var path: String
        var headers: [String: String]
        var body: Data
    }

    enum Answer: Sendable {
        case status(Int, String)
        case hang
        /// `status` with a body of `bytes` bytes, streamed in 64 KiB pieces (never held in
        /// memory) until done or the client hangs up; with `declareLength` a Content-Length
        /// header says how long it is, without it the end of the connection does (HTTP/1.0).
        case huge(Int, bytes: Int, declareLength: Bool)
    }

    let port: UInt16
    private let listenFD: Int32
    private let lock = NSLock()
    private var received: [Request] = []
    /// The status answered to each request, in order (nil while hanging).
    private var answered: [Int?] = []
    /// Body bytes sent for each `.huge` answer, by request index (the client stopped reading
    /// where they end).
    private var streamed: [Int: Int] = [:]
    private var script: @Sendable (Int) -> Answer
    private var stopped = false
    private var hung: [Int32] = []
    private let done = DispatchSemaphore(value: 0)

    init(_ script: @escaping @Sendable (Int) -> Answer) throws {
        self.script = script
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: lastErrno()) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(fd, 64) == 0 else { close(fd); throw SystemError("bind", errno: lastErrno()) }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = UInt16(bigEndian: addr.sin_port)
        listenFD = fd
        let t = Thread { [self] in
            self.serve()
            self.done.signal()
        }
        t.start()
    }

    var url: String { "http://127.0.0.1:\(port)/hooks/SECRET-PATH-123" }

    var requests: [Request] { lock.withLock { received } }
    var responses: [Int?] { lock.withLock { answered } }
    var streamedBytes: [Int: Int] { lock.withLock { streamed } }

    func setScript(_ s: @escaping @Sendable (Int) -> Answer) { lock.withLock { script = s } }

    func stop() {
        lock.withLock { stopped = true }
        shutdown(listenFD, Int32(SHUT_RDWR))
        _ = done.wait(timeout: .now() + 2)
        close(listenFD)
        for fd in lock.withLock({ hung }) { close(fd) }
    }

    private func serve() {
        while !lock.withLock({ stopped }) {
            let ready = pollReadable([listenFD], timeoutMilliseconds: 100)
            guard ready.contains(listenFD) else { continue }
            let c = accept(listenFD, nil, nil)
            if c >= 0 { _ = fcntl(c, F_SETFD, FD_CLOEXEC) }
            if c < 0 { continue }
            handle(c)
        }
    }

    private func handle(_ c: Int32) {
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        var headerEnd: Range<Data.Index>?
        var contentLength = 0
        while true {
            guard pollReadable([c], timeoutMilliseconds: 5000).contains(c) else { close(c); return }
            let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, 65536, 0) }
            if n <= 0 { close(c); return }
            data.append(contentsOf: buf[0..<n])
            if headerEnd == nil, let r = data.range(of: Data("\r\n\r\n".utf8)) {
                headerEnd = r
                let head = String(decoding: data[..<r.lowerBound], as: UTF8.self)
                for line in head.split(separator: "\r\n").dropFirst() {
                    let kv = line.split(separator: ":", maxSplits: 1)
                    if kv.count == 2, kv[0].lowercased() == "content-length" { contentLength = Int(kv[1].trimmingCharacters(in: .whitespaces)) ?? 0 }
                }
            }
            if let h = headerEnd, data.count - h.upperBound >= contentLength { break }
        }
        let h = headerEnd!
        let head = String(decoding: data[..<h.lowerBound], as: UTF8.self).split(separator: "\r\n")
        let first = head.first?.split(separator: " ") ?? []
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            let kv = line.split(separator: ":", maxSplits: 1)
            if kv.count == 2 { headers[kv[0].lowercased()] = kv[1].trimmingCharacters(in: .whitespaces) }
        }
        let req = Request(method: first.count > 0 ? String(first[0]) : "", path: first.count > 1 ? String(first[1]) : "",
                          headers: headers, body: Data(data[h.upperBound...]))
        let (index, s) = lock.withLock { () -> (Int, @Sendable (Int) -> Answer) in
            received.append(req)
            answered.append(nil)
            return (received.count - 1, script)
        }
        switch s(index) {
        case .hang:
            lock.withLock { hung.append(c) }
        case .status(let code, let body):
            lock.withLock { answered[index] = code }
            let response = "HTTP/1.0 \(code) X\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            _ = response.withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            close(c)
        case .huge(let code, let bytes, let declareLength):
            lock.withLock { answered[index] = code }
            var head = "HTTP/1.0 \(code) X\r\nContent-Type: application/json\r\nConnection: close\r\n"
            if declareLength { head += "Content-Length: \(bytes)\r\n" }
            head += "\r\n"
            _ = head.withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            let piece = [UInt8](repeating: UInt8(ascii: "x"), count: 65536)
            var sent = 0
            while sent < bytes {
                let n = piece.withUnsafeBytes { send(c, $0.baseAddress, min(65536, bytes - sent), Int32(MSG_NOSIGNAL)) }
                if n <= 0 { break }
                sent += n
            }
            lock.withLock { streamed[index] = sent }
            close(c)
        }
    }
}
