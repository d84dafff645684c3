import Dispatch
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import VigilCore

/// One HTTP request for an adapter.
struct HTTPRequest: Sendable {
    var method: String
    var url: URL
    var headers: [String: String] = [:]
    var body: Data? = nil
    /// The whole call's time limit (connect, send, wait, read).
    var timeout: TimeSpan
}

/// What came back: a response (any status), or a transport failure (refused, timed out, reset).
enum HTTPOutcome: Sendable {
    case response(status: Int, body: Data)
    /// A description without the URL (URLs may carry secrets).
    case failure(String)
    case cancelled
}

/// A blocking HTTP client for the chat workers (never called on the bridge's loop): URLSession
/// (libcurl underneath, so https works) with a hard deadline per call, and `cancel()` for
/// shutdown, which ends the call in flight at once and refuses later ones.
final class HTTPClient: @unchecked Sendable {
    private let session: URLSession
    private let lock = NSLock()
    private var task: URLSessionTask?
    private var cancelled = false

    init() {
        let c = URLSessionConfiguration.ephemeral
        c.requestCachePolicy = .reloadIgnoringLocalCacheData
        c.urlCache = nil
        c.httpCookieStorage = nil
        c.httpShouldSetCookies = false
        c.httpMaximumConnectionsPerHost = 2
        c.timeoutIntervalForRequest = 600
        c.timeoutIntervalForResource = 600
        session = URLSession(configuration: c)
    }

    deinit { session.invalidateAndCancel() }

    /// Ends the call in flight (it returns `.cancelled`) and every later one.
    func cancel() {
        let t: URLSessionTask? = lock.withLock {
            cancelled = true
            return task
        }
        t?.cancel()
    }

    var isCancelled: Bool { lock.withLock { cancelled } }

    func perform(_ request: HTTPRequest) -> HTTPOutcome {
        var r = URLRequest(url: request.url)
        r.httpMethod = request.method
        r.timeoutInterval = max(0.05, request.timeout.seconds)
        for (k, v) in request.headers { r.setValue(v, forHTTPHeaderField: k) }
        r.httpBody = request.body
        let box = ResultBox()
        let done = DispatchSemaphore(value: 0)
        let t = session.dataTask(with: r) { data, response, error in
            if let error {
                box.set(HTTPClient.outcome(error))
            } else if let http = response as? HTTPURLResponse {
                box.set(.response(status: http.statusCode, body: data ?? Data()))
            } else {
                box.set(.failure("no HTTP response"))
            }
            done.signal()
        }
        let proceed: Bool = lock.withLock {
            if cancelled { return false }
            task = t
            return true
        }
        guard proceed else { return .cancelled }
        t.resume()
        let deadline = DispatchTime.now() + .nanoseconds(Int(max(request.timeout.nanoseconds, 50_000_000)))
        if done.wait(timeout: deadline) == .timedOut {
            t.cancel()
            _ = done.wait(timeout: .now() + 2)
            lock.withLock { task = nil }
            return isCancelled ? .cancelled : .failure("timed out after \(request.timeout)")
        }
        lock.withLock { task = nil }
        let result = box.get() ?? .failure("no result")
        if case .cancelled = result, !isCancelled { return .failure("timed out after \(request.timeout)") }
        return result
    }

    static func outcome(_ error: any Error) -> HTTPOutcome {
        guard let u = error as? URLError else { return .failure("request failed: \(type(of: error))") }
        switch u.code {
        case .cancelled: return .cancelled
        case .timedOut: return .failure("timed out")
        case .cannotConnectToHost: return .failure("connection refused")
        case .networkConnectionLost: return .failure("connection lost")
        case .cannotFindHost, .dnsLookupFailed: return .failure("host not found")
        case .notConnectedToInternet: return .failure("network unreachable")
        case .secureConnectionFailed, .serverCertificateUntrusted, .serverCertificateHasBadDate,
             .serverCertificateNotYetValid, .serverCertificateHasUnknownRoot, .clientCertificateRejected:
            return .failure("TLS failed (\(u.code.rawValue))")
        case .badServerResponse: return .failure("bad server response")
        default: return .failure("network error \(u.code.rawValue)")
        }
    }

    private final class ResultBox: @unchecked Sendable {
        private let lock = NSLock()
        private var value: HTTPOutcome?
        func set(_ v: HTTPOutcome) { lock.withLock { value = v } }
        func get() -> HTTPOutcome? { lock.withLock { value } }
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
