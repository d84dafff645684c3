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
    /// The most body bytes kept; a longer reply is not read further (docs/chat.md, "Reply size
    /// caps"): the outcome is `.tooLarge`.
    var maxBodyBytes: Int = HTTPClient.defaultMaxBodyBytes
}

/// What came back: a response (any status), or a transport failure (refused, timed out, reset).
enum HTTPOutcome: Sendable {
    case response(status: Int, body: Data)
    /// A reply whose body is longer than the request's `maxBodyBytes` (by its Content-Length,
    /// or counted as it came): reading stopped there and the connection was dropped.
    case tooLarge(status: Int, limit: Int)
    /// A description without the URL (URLs may carry secrets).
    case failure(String)
    case cancelled
}

/// A blocking HTTP client for the chat workers (never called on the bridge's loop): URLSession
/// (libcurl underneath, so https works) with a hard deadline per call, and `cancel()` for
/// shutdown, which ends the call in flight at once and refuses later ones.
///
/// Bodies arrive through a delegate that keeps at most the request's `maxBodyBytes` and drops
/// the connection past it (a completion-handler task would hold the whole reply in memory,
/// however large: docs/chat.md, "Reply size caps").
final class HTTPClient: @unchecked Sendable {
    /// The default cap on a reply's body: 1 MiB (a webhook's reply, a Matrix send or login).
    static let defaultMaxBodyBytes = 1 << 20

    private let session: URLSession
    private let collector = BodyCollector()
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
        session = URLSession(configuration: c, delegate: collector, delegateQueue: nil)
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
        let t = session.dataTask(with: r)
        let call = collector.register(t, limit: max(0, request.maxBodyBytes))
        defer { collector.forget(t) }
        let proceed: Bool = lock.withLock {
            if cancelled { return false }
            task = t
            return true
        }
        guard proceed else { return .cancelled }
        t.resume()
        let deadline = DispatchTime.now() + .nanoseconds(Int(max(request.timeout.nanoseconds, 50_000_000)))
        if call.done.wait(timeout: deadline) == .timedOut {
            t.cancel()
            _ = call.done.wait(timeout: .now() + 2)
            lock.withLock { task = nil }
            return isCancelled ? .cancelled : .failure("timed out after \(request.timeout)")
        }
        lock.withLock { task = nil }
        let result = collector.outcome(of: call) ?? .failure("no result")
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

}

/// The session's delegate: collects each task's status and body up to its limit, cancels a
/// task whose reply goes past it, and hands the outcome to the waiting `perform`. All state is
/// behind `lock`.
private final class BodyCollector: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    final class Call: @unchecked Sendable {
        let limit: Int
        let done = DispatchSemaphore(value: 0)
        // Guarded by the collector's lock.
        var status = 0
        var body = Data()
        var over = false
        var outcome: HTTPOutcome?
        init(limit: Int) { self.limit = limit }
    }

    private let lock = NSLock()
    private var calls: [Int: Call] = [:]

    func register(_ task: URLSessionTask, limit: Int) -> Call {
        let call = Call(limit: limit)
        lock.withLock { calls[task.taskIdentifier] = call }
        return call
    }

    func forget(_ task: URLSessionTask) { _ = lock.withLock { calls.removeValue(forKey: task.taskIdentifier) } }

    func outcome(of call: Call) -> HTTPOutcome? { lock.withLock { call.outcome } }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping @Sendable (URLSession.ResponseDisposition) -> Void) {
        let tooLong: Bool = lock.withLock {
            guard let call = calls[dataTask.taskIdentifier] else { return false }
            call.status = (response as? HTTPURLResponse)?.statusCode ?? 0
            if response.expectedContentLength > Int64(call.limit) { call.over = true }
            return call.over
        }
        // The disposition is not honoured everywhere: cancel the task itself as well.
        completionHandler(tooLong ? .cancel : .allow)
        if tooLong { dataTask.cancel() }
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let tooLong: Bool = lock.withLock {
            guard let call = calls[dataTask.taskIdentifier], !call.over else { return false }
            // Chunks reach us through a queue that can lag far behind the transfer: the
            // transfer's own count says sooner that the reply is over the cap.
            if call.body.count + data.count > call.limit || dataTask.countOfBytesReceived > Int64(call.limit) {
                call.over = true
                call.body = Data()
                return true
            }
            call.body.append(data)
            return false
        }
        if tooLong { dataTask.cancel() }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        let call: Call? = lock.withLock {
            guard let call = calls[task.taskIdentifier] else { return nil }
            if call.over {
                call.outcome = .tooLarge(status: call.status, limit: call.limit)
            } else if let error {
                call.outcome = HTTPClient.outcome(error)
            } else if task.response is HTTPURLResponse {
                call.outcome = .response(status: call.status, body: call.body)
            } else {
                call.outcome = .failure("no HTTP response")
            }
            call.body = Data()
            return call
        }
        call?.done.signal()
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
