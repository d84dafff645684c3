import CVigil
import FoundationEssentials
import Synchronization
import VigilCore

/// One HTTP request for an adapter.
struct HTTPRequest: Sendable {
    var method: String
    var url: URL
    var headers: [String: String] = [:]
    var body: Data? = nil
    /// The whole call's time limit (connect, send, wait, read).
    var timeout: TimeSpan
    /// The most body bytes kept; a longer reply is not read further (docs/chat.md, "Reply size
    /// caps"): the outcome is `.tooLarge`.
    var maxBodyBytes: Int = HTTPClient.defaultMaxBodyBytes
}

/// What came back: a response (any status), or a transport failure (refused, timed out, reset).
package enum HTTPOutcome: Sendable {
    case response(status: Int, body: Data)
    /// A reply whose body is longer than the request's `maxBodyBytes` (by its Content-Length,
    /// or counted as it came): reading stopped there and the connection was dropped.
    case tooLarge(status: Int, limit: Int)
    /// A description without the URL (URLs may carry secrets).
    case failure(String)
    case cancelled
}

/// A blocking HTTP client for the chat workers (never called on the bridge's loop): the
/// system's libcurl (so https works) through `CVigil/http.c`, with a hard deadline per call,
/// and `cancel()` for shutdown, which ends the calls in flight at once (their sockets are shut
/// down) and refuses later ones.
///
/// The body is kept up to the request's `maxBodyBytes` and the transfer stops right there (a
/// Content-Length over the cap stops it before the body): a reply of any size costs at most
/// the cap in memory (docs/chat.md, "Reply size caps"). URLSession could not do this: its
/// delegate hears of the bytes through a queue that lags the transfer by 100 MB and more at
/// loopback speed, and its completion handler holds the whole reply.
/// Sendable: the calls in flight and the cancelled flag are behind one `Mutex`.
package final class HTTPClient: Sendable {
    /// The default cap on a reply's body: 1 MiB (a webhook's reply, a Matrix send or login).
    static let defaultMaxBodyBytes = 1 << 20

    private struct Calls {
        /// Calls in flight, by address (a pointer is not Sendable; the call stays ours).
        var inFlight: [Int] = []
        var cancelled = false
    }

    private let calls = Mutex(Calls())

    package init() {}

    /// Ends the calls in flight (they return `.cancelled`) and every later one.
    func cancel() {
        calls.withLock { c in
            c.cancelled = true
            for address in c.inFlight { if let call = OpaquePointer(bitPattern: address) { cvigil_http_cancel(call) } }
        }
    }

    var isCancelled: Bool { calls.withLock { $0.cancelled } }

    func perform(_ request: HTTPRequest) -> HTTPOutcome {
        guard let call = cvigil_http_new() else { return .failure(String(cString: cvigil_http_load_error())) }
        defer { cvigil_http_free(call) }
        let address = Int(bitPattern: call)
        let proceed: Bool = calls.withLock { c in
            if c.cancelled { return false }
            c.inFlight.append(address)
            return true
        }
        guard proceed else { return .cancelled }
        defer { calls.withLock { $0.inFlight.removeAll { $0 == address } } }

        let headers = request.headers.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
        let limit = max(0, request.maxBodyBytes)
        var status = 0
        var over: Int32 = 0
        var wasCancelled: Int32 = 0
        let timeoutMS = max(50, Int(request.timeout.milliseconds.rounded(.up)))
        let rc: Int32 = withCStrings(headers) { cheaders in
            let body = request.body ?? Data()
            return body.withUnsafeBytes { raw in
                cvigil_http_perform(call, request.method, request.url.absoluteString, cheaders, Int32(headers.count),
                                    request.body == nil ? nil : (raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)), raw.count,
                                    timeoutMS, limit, &status, &over, &wasCancelled)
            }
        }
        if over != 0 { return .tooLarge(status: status, limit: limit) }
        if rc == 0 {
            var length = 0
            let bytes = cvigil_http_body(call, &length)
            return .response(status: status, body: bytes.map { Data(bytes: $0, count: length) } ?? Data())
        }
        if wasCancelled != 0 || isCancelled { return .cancelled }
        if rc == 28 { return .failure("timed out after \(request.timeout)") }
        return .failure(HTTPClient.describe(curlCode: rc))
    }

    /// A failure in words, from libcurl's code (never its message, which may name the URL).
    static func describe(curlCode rc: Int32) -> String {
        switch rc {
        case 1: return "unsupported protocol"
        case 3: return "malformed URL"
        case 5, 6: return "host not found"
        case 7: return "connection refused"
        case 28: return "timed out"
        case 52: return "empty reply"
        case 55, 56: return "connection lost"
        case 35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91: return "TLS failed (curl \(rc))"
        default: return "network error (curl \(rc))"
        }
    }
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    // NUL-terminated copies, freed when `body` returns.
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { s in
        let bytes = Array(s.utf8CString)
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        p.initialize(from: bytes, count: bytes.count)
        return p
    }
    pointers.append(nil)
    defer { for p in pointers { p?.deallocate() } }
    return pointers.withUnsafeBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) { body($0) }
    }
}

extension HTTPOutcome {
    /// The body as a JSON object, if it is one.
    var json: JSONValue? {
        if case .response(_, let body) = self { return JSONValue.parse(body) }
        return nil
    }
}

/// Shows where a URL points without what may be secret in it (path, query, user info).
func redactedURL(_ url: URL) -> String {
    var s = (url.scheme ?? "http") + "://" + (url.host ?? "?")
    if let p = url.port { s += ":\(p)" }
    return s + "/…"
}

extension HTTPClient {
    /// One call without building an `HTTPRequest`: what the Synapse fixture in
    /// VigilTestSupport uses (the package's tests and benchmarks, not the product).
    package func perform(method: String, url: URL, headers: [String: String] = [:], body: Data? = nil, timeout: TimeSpan) -> HTTPOutcome {
        perform(HTTPRequest(method: method, url: url, headers: headers, body: body, timeout: timeout))
    }
}
