import FoundationEssentials
import Synchronization
import VigilCore
import VigilStore
import VigilSystem

/// The runner's metrics thread (docs/operator-guide.md, "Probes and metrics"): keeps the
/// journal totals current (`MetricsKeeper`: counted on every 10 s and at every scrape, saved to
/// `metrics.json` at most every 30 s while they change, and at shutdown) and, when vigil.json
/// has `metrics.listen`, serves `GET /metrics` there. One connection at a time, each bounded:
/// at most `maxRequest` bytes of request head read within `readTimeout`, the answer written
/// within `writeTimeout`; so a slow or silent client holds the thread for seconds at most, and
/// never the runner's loop, which shares nothing with this thread but files.
///
/// Sendable: every mutable thing is behind a `Mutex`; the rest is constant.
final class MetricsService: Sendable {
    let dir: StateDirectory
    let tunables: Tunables
    let config: MetricsConfig?
    let journal: Journal
    let keeper: MetricsKeeper
    /// The state directory the runner started in (`StateDirectoryAnchor.token`): when its path
    /// names another directory now, this thread stops and writes nothing there (docs/
    /// operator-guide.md, "The state directory removed or replaced").
    let anchorToken: String

    static let maxRequest = 8192
    static let readTimeout = TimeSpan.seconds(2)
    static let writeTimeout = TimeSpan.seconds(5)
    static let refreshEvery = TimeSpan.seconds(10)
    /// A listen address that could not be bound is tried again this often.
    static let rebindEvery = TimeSpan.seconds(30)

    private let stopping = Mutex(false)

    init(dir: StateDirectory, tunables: Tunables, config: MetricsConfig?, journal: Journal, anchorToken: String) {
        self.dir = dir
        self.anchorToken = anchorToken
        self.tunables = tunables
        self.config = config
        self.journal = journal
        keeper = MetricsKeeper(dir: dir)
        do {
            _ = try SystemThread.start(name: "vigil-metrics") { @Sendable [self] in self.loop() }
        } catch {
            journal.append(.metricsListenFailed, ["error": .string("cannot start the metrics thread: \(error)")])
        }
    }

    /// Stops the thread (at its next wake: a connection, or within `refreshEvery`) and saves the
    /// totals now.
    func shutdown() {
        stopping.withLock { $0 = true }
        guard stillOurs else { return }
        _ = keeper.refresh()
        if let p = keeper.saveIfDue(now: Clock.boot(), force: true) { journalSaveProblem(p) }
    }

    private var stillOurs: Bool { StateDirectoryAnchor.verify(dir, token: anchorToken) == nil }

    private func journalSaveProblem(_ p: String) {
        journal.append(.stateWriteFailed, ["file": "metrics.json", "error": .string(p)])
    }

    /// Wakes only when there is something to do: a connection, the next refresh (every
    /// `refreshEvery`), a bind to try again; not once a second (docs/performance.md, idle CPU).
    private func loop() {
        var listener: TCPListener? = nil
        var nextBind = BootInstant.zero
        var lastBindProblem: String? = nil
        var nextRefresh = Clock.boot() + MetricsService.refreshEvery
        _ = keeper.refresh()
        while !stopping.withLock({ $0 }) {
            guard stillOurs else { return }
            var now = Clock.boot()
            if let config, listener == nil, now >= nextBind {
                do {
                    let l = try TCPListener(config.listen)
                    listener = l
                    lastBindProblem = nil
                    journal.append(.metricsListening, ["address": .string(l.address.description), "remote": .bool(!l.address.isLoopback)])
                } catch {
                    nextBind = now + MetricsService.rebindEvery
                    let p = "\(error)"
                    if p != lastBindProblem {
                        lastBindProblem = p
                        journal.append(.metricsListenFailed, ["address": .string(config.listen.description), "error": .string(p),
                                                              "retry_in_s": .double(MetricsService.rebindEvery.seconds)])
                        printErr("vigil runner: cannot serve metrics on \(config.listen): \(p); trying again every \(MetricsService.rebindEvery) (the runner goes on without them)\n")
                    }
                }
            }
            var wake = nextRefresh
            if config != nil, listener == nil { wake = min(wake, nextBind) }
            if let l = listener {
                if let c = l.accept(timeoutMilliseconds: (wake - now).pollMilliseconds) {
                    serve(c)
                    nextRefresh = Clock.boot() + MetricsService.refreshEvery
                }
            } else {
                ThisProcess.pause(wake - now)
            }
            now = Clock.boot()
            if now >= nextRefresh {
                _ = keeper.refresh()
                nextRefresh = Clock.boot() + MetricsService.refreshEvery
            }
            if stillOurs, let p = keeper.saveIfDue(now: now) { journalSaveProblem(p) }
        }
    }

    /// One request: read its head (bounded in size and time), answer, close.
    private func serve(_ c: TCPConnection) {
        defer { c.closeAfterAnswer(discardingAtMost: 1 << 20, until: Clock.boot() + .milliseconds(200)) }
        let deadline = Clock.boot() + MetricsService.readTimeout
        var head: [UInt8] = []
        var end: Int? = nil
        while end == nil {
            // A client that says nothing in time, or hangs up, gets nothing.
            guard let chunk = c.read(max: 4096, until: deadline), !chunk.isEmpty else { return }
            head += chunk
            end = MetricsService.endOfHead(head)
            if end == nil && head.count > MetricsService.maxRequest {
                return respond(c, 400, "Bad Request", "request head larger than \(MetricsService.maxRequest) bytes\n")
            }
        }
        guard let request = MetricsService.parseRequestLine(head) else {
            return respond(c, 400, "Bad Request", "not an HTTP/1.x request\n")
        }
        guard request.path == "/metrics" else { return respond(c, 404, "Not Found", "only /metrics is served here\n") }
        guard request.method == "GET" || request.method == "HEAD" else {
            return respond(c, 405, "Method Not Allowed", "GET /metrics\n", extra: "Allow: GET, HEAD\r\n")
        }
        let body = MetricsReport.render(dir, tunables: tunables, totals: keeper.refresh())
        respond(c, 200, "OK", body, contentType: Exposition.contentType, headOnly: request.method == "HEAD")
    }

    private func respond(_ c: TCPConnection, _ code: Int, _ reason: String, _ body: String,
                         contentType: String = "text/plain; charset=utf-8", extra: String = "", headOnly: Bool = false) {
        let bytes = Array(body.utf8)
        var out = Array("HTTP/1.1 \(code) \(reason)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bytes.count)\r\n\(extra)Connection: close\r\n\r\n".utf8)
        if !headOnly { out += bytes }
        c.send(out, until: Clock.boot() + MetricsService.writeTimeout)
    }

    /// The index just past the blank line that ends the head (CRLF CRLF, or LF LF), if there.
    static func endOfHead(_ b: [UInt8]) -> Int? {
        var i = 0
        while i + 1 < b.count {
            if b[i] == 0x0A && b[i + 1] == 0x0A { return i + 2 }
            if i + 3 < b.count && b[i] == 0x0D && b[i + 1] == 0x0A && b[i + 2] == 0x0D && b[i + 3] == 0x0A { return i + 4 }
            i += 1
        }
        return nil
    }

    /// `METHOD SP TARGET SP HTTP/1.x`, the target's query string dropped; nil when it is not that.
    static func parseRequestLine(_ head: [UInt8]) -> (method: String, path: String)? {
        guard let nl = head.firstIndex(of: 0x0A) else { return nil }
        var line = head[..<nl]
        if line.last == 0x0D { line = line.dropLast() }
        guard line.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return nil }
        let parts = String(decoding: line, as: UTF8.self).split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy({ $0.isUppercase }),
              parts[1].hasPrefix("/"), parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0" else { return nil }
        let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        return (String(parts[0]), path)
    }
}
