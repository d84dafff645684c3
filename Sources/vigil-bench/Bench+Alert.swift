import Foundation
// Tooling, not product: the benchmark acts on processes and sockets from outside with libc
// directly (kill, SIGSTOP, a socket server), as a second program would; the product does that
// only through VigilSystem (docs/architecture.md, "One syscall edge").
import Glibc
import VigilChat
import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil-bench alert`: a crash loop with no live bridge (every bridge exits at start), measured
/// from outside: the time from the runner's `circuit-open` journal entry to the alert being
/// visible in each chat — a line in console `chat.log` (seen by a watcher thread here), a POST
/// received by a webhook receiver here, an event seen by an operator's /sync on a real Synapse.
/// Also the outbox's claim + mark cost per message (two FULL commits) with the lease.
enum AlertBench {
    static let help = """
    usage: vigil-bench alert [--trials N] [--no-matrix] [--venv DIR]

    Each trial starts a pair (default tick 1 s, circuit limit 3) in a fresh temporary state
    dir, waits until it is healthy and logged in to chat, then kills the bridge with every
    respawn dying at start (test fault exit-at-start), so the circuit opens with no bridge
    alive and only the runner can tell anyone. Measures circuit-open → alert seen in
    console chat.log, by a local webhook receiver and (unless --no-matrix) in a Synapse room.
    """

    static func run(_ argv: [String], json: Bool = false) throws {
        let args = try Arguments(argv, valued: ["trials", "venv"], booleans: ["no-matrix"])
        let trials = try args.int("trials", min: 1) ?? 5
        var table = BenchTable(title: "vigil-bench alert (\(trials) trials, tick 1 s, circuit limit 3, no live bridge)")

        let receiver = try WebhookReceiver()
        defer { receiver.stop() }
        var matrix: (server: SynapseServer, bot: SynapseServer.User, password: String, op: SynapseServer.User)?
        if !args.has("no-matrix") {
            let venv: String
            if let v = args.value("venv") { venv = v } else if FileManager.default.isExecutableFile(atPath: Binaries.repoRoot + "/scripts/setup-synapse") {
                venv = try SynapseServer.install()
            } else {
                throw CommandError("cannot find a Synapse venv: pass --venv DIR or --no-matrix")
            }
            printErr("bench alert: starting Synapse…\n")
            let server = try SynapseServer.start(venv: venv)
            let pw = "bench-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
            matrix = (server, try server.register("vigil", password: pw), pw, try server.register("operator"))
        }
        defer { matrix?.server.destroy() }

        var console: [Double] = [], webhook: [Double] = [], room: [Double] = []
        var byRunner = 0
        for i in 0..<trials {
            printErr("alert trial \(i + 1)/\(trials)\n")
            var roomID: String?
            var watcher: ChatBench.RoomWatcher?
            var matrixJSON = ""
            if let m = matrix {
                let r = try m.server.createRoom(as: m.op, invite: [m.bot.id])
                roomID = r
                let w = ChatBench.RoomWatcher(server: m.server, user: m.op, room: r)
                try w.start()
                watcher = w
                matrixJSON = """
                , "matrix": {"homeserver": "\(m.server.baseURL)", "user": "vigil", "password": "\(m.password)", "room": "\(r)", "timeout": "5s"}
                """
            }
            let adapters = matrix == nil ? "\"console\", \"webhook\"" : "\"console\", \"webhook\", \"matrix\""
            // A pair that ran (and logged in to chat), whose program then dies at every start:
            // the bridge is killed and every respawn exits at once.
            let pair = try BenchPair(flags: ["--circuit-limit", "3"], fault: "", config: """
                {"chat": {"adapters": [\(adapters)], "webhook": {"url": "\(receiver.url)"}\(matrixJSON)}}
                """)
            defer { pair.finish(); watcher?.stop() }
            try pair.waitHealthy()
            if matrix != nil {
                try pair.waitFor("the Matrix login", timeout: 60) {
                    let db = try? Database(path: pair.dir.database)
                    return ((try? db?.scalarInt("SELECT COUNT(*) FROM chat_state WHERE name LIKE 'matrix.token|%'")) ?? 0) > 0
                }
            }
            try Data("exit-at-start".utf8).write(to: URL(fileURLWithPath: pair.dir.file("fault")))
            guard let bridge = pair.bridge else { throw CommandError("no bridge") }
            _ = kill(bridge.pid, SIGKILL)
            let log = LogWatcher(path: pair.dir.chatLog, needle: "ALERT")
            defer { log.stop() }
            try pair.waitFor("circuit open", timeout: 120) { !pair.events("circuit-open").isEmpty }
            guard let opened = pair.events("circuit-open").first?["boot"]?.intValue.map({ BootInstant(nanoseconds: $0) }) else {
                throw CommandError("circuit-open has no boot time")
            }
            var rows: [OutboxMessage] = []
            try pair.waitFor("the alert delivered everywhere", timeout: 60) {
                rows = ((try? Outbox(try Database(path: pair.dir.database)).list(limit: 1000)) ?? []).filter { $0.key.hasSuffix("-circuit") }
                return rows.count == (matrix == nil ? 2 : 3) && rows.allSatisfy { $0.state == .delivered }
            }
            byRunner += rows.allSatisfy { $0.claimedBy?.hasPrefix("\(pair.runner.pid):") == true } ? 1 : 0
            guard let seenLog = log.wait(timeout: .seconds(10)), let seenHook = receiver.firstSeen(containing: "circuit", after: opened - .seconds(1)) else {
                throw CommandError("trial \(i): the alert was not seen in chat.log or by the webhook receiver")
            }
            console.append((seenLog - opened).seconds)
            webhook.append((seenHook - opened).seconds)
            if let w = watcher, let body = rows.first(where: { $0.adapter == "matrix" })?.body {
                guard let seen = w.wait(for: ChatText.defuseMentions(body), timeout: .seconds(30)) else {
                    throw CommandError("trial \(i): the alert never reached the room \(roomID ?? "")")
                }
                room.append((seen - opened).seconds)
                if (seen - opened).seconds > 1 {
                    let all = ((try? Outbox(try Database(path: pair.dir.database)).list(limit: 1000)) ?? []).filter { $0.adapter == "matrix" }
                    for r in all {
                        printErr("  slow: matrix row \(r.key) attempts \(r.attempts) error \(r.lastError ?? "-") created \(Clock.iso(r.created)) delivered \(r.delivered.map(Clock.iso) ?? "-")\n")
                    }
                    printErr("  circuit opened at \(pair.events("circuit-open").first?["ts"]?.stringValue ?? "?")\n")
                }
            }
        }
        table.add("circuit open → alert in console chat.log", Stats(console).seconds(), "≤ 1 s", "before: never (only the dead bridge delivered)",
                  value: Stats(console).median, atMost: 1)
        table.add("circuit open → alert at the webhook", Stats(webhook).seconds(), "≤ 1 s", "before: never", value: Stats(webhook).median, atMost: 1)
        if matrix != nil {
            table.add("circuit open → alert in the Matrix room (operator's /sync)", Stats(room).seconds(), "≤ 1 s", "before: never", value: Stats(room).median, atMost: 1)
        }
        table.add("alerts delivered by the runner", "\(byRunner) of \(trials)", "all", value: Double(byRunner), met: byRunner == trials)

        let (claim, bare) = try claimCost()
        table.add("outbox claim + mark delivered per message (2 FULL commits)", String(format: "%.3f ms median (bare FULL commit %.3f ms)", claim, bare), "—")
        table.print(json: json)
    }

    /// Median ms of enqueue-free claim + mark cycles, beside a bare one-row FULL commit.
    static func claimCost() throws -> (Double, Double) {
        let dir = StateDirectory(try TempDirectory.make(prefix: "vigil-bench-claim"))
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        try dir.prepare()
        let db = try Database(path: dir.database)
        let outbox = Outbox(db)
        let n = 500
        try outbox.enqueue((0..<n).map { OutboxItem(key: "k\($0)", adapter: "console", body: "message \($0)") })
        // Interleaved with a bare one-row FULL commit, so both see the same disk moment.
        try db.execute("CREATE TABLE bench_bare (v INTEGER)")
        var cycle: [Double] = [], bare: [Double] = []
        for i in 0..<n {
            let t0 = Clock.boot()
            try db.write { try db.execute("INSERT INTO bench_bare VALUES (?)", [.int(Int64(i))]) }
            let t1 = Clock.boot()
            guard case .claimed(let m, _) = try outbox.claimNext(adapter: "console", now: t1, owner: "bench", lease: .seconds(5)) else { break }
            try outbox.markDelivered(id: m.id, owner: "bench", remoteID: nil)
            cycle.append((Clock.boot() - t1).milliseconds)
            bare.append((t1 - t0).milliseconds)
        }
        return (Stats(cycle).median, Stats(bare).median)
    }

    /// Notes when a line containing `needle` first appears in a file (polled every 2 ms on its
    /// own thread: the outside view, independent of the writer).
    // @unchecked Sendable: `seen` and `stopping` are read and written only under `lock`.
    final class LogWatcher: @unchecked Sendable {
        private let lock = NSLock()
        private var seen: BootInstant?
        private var stopping = false

        init(path: String, needle: String) {
            let t = Thread { [self] in
                while !self.lock.withLock({ self.stopping || self.seen != nil }) {
                    if let text = try? String(contentsOfFile: path, encoding: .utf8), text.contains(needle) {
                        let now = Clock.boot()
                        self.lock.withLock { self.seen = now }
                    }
                    usleep(2000)
                }
            }
            t.start()
        }

        func wait(timeout: TimeSpan) -> BootInstant? {
            let end = Clock.boot() + timeout
            while Clock.boot() < end {
                if let s = lock.withLock({ seen }) { return s }
                usleep(2000)
            }
            return lock.withLock { seen }
        }

        func stop() { lock.withLock { stopping = true } }
    }

    /// A minimal webhook receiver on 127.0.0.1: answers 200 to every POST (HTTP/1.0, one request
    /// per connection) and notes when each body arrived.
    // @unchecked Sendable: `received` and `stopping` only under `lock`; the rest is constant.
    final class WebhookReceiver: @unchecked Sendable {
        let port: UInt16
        private let fd: Int32
        private let lock = NSLock()
        private var received: [(at: BootInstant, body: String)] = []
        private var stopping = false

        init() throws {
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard s >= 0 else { throw SystemError("socket", errno: lastErrno()) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0, listen(s, 64) == 0 else { close(s); throw SystemError("bind", errno: lastErrno()) }
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
            port = UInt16(bigEndian: addr.sin_port)
            fd = s
            let t = Thread { [self] in self.serve() }
            t.start()
        }

        var url: String { "http://127.0.0.1:\(port)/hook" }

        func stop() {
            lock.withLock { stopping = true }
            shutdown(fd, Int32(SHUT_RDWR))
        }

        func firstSeen(containing text: String, after: BootInstant) -> BootInstant? {
            let end = Clock.boot() + .seconds(10)
            while Clock.boot() < end {
                if let r = lock.withLock({ received.first { $0.at >= after && $0.body.contains(text) } }) { return r.at }
                usleep(2000)
            }
            return nil
        }

        private func serve() {
            while !lock.withLock({ stopping }) {
                guard pollReadable([fd], timeoutMilliseconds: 200).contains(fd) else { continue }
                let c = accept(fd, nil, nil)
                guard c >= 0 else { continue }
                var data = Data()
                var buf = [UInt8](repeating: 0, count: 16384)
                var want: Int?
                while pollReadable([c], timeoutMilliseconds: 2000).contains(c) {
                    let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { break }
                    data.append(contentsOf: buf[0..<n])
                    if want == nil, let r = data.range(of: Data("\r\n\r\n".utf8)) {
                        let head = String(decoding: data[..<r.lowerBound], as: UTF8.self).lowercased()
                        let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                            .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
                        want = r.upperBound + length
                    }
                    if let w = want, data.count >= w { break }
                }
                let now = Clock.boot()
                lock.withLock { received.append((now, String(decoding: data, as: UTF8.self))) }
                let ok = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                _ = ok.withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                close(c)
            }
            close(fd)
        }
    }
}
