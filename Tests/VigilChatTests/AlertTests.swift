import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// The alert that always gets through (docs/chat.md, "Delivery"): a real runner whose bridge
/// dies at every start, so the circuit opens with no bridge alive; the runner itself delivers the
/// alert to console chat.log, a real local webhook server and a real Synapse room, each once —
/// also when the runner is killed -9 between sending the alert and marking it — and answers
/// `/heal reset` from chat with no bridge running.
@Suite(.serialized, .withSynapse, .timeLimit(.minutes(4))) struct AlertTests {
    /// A state dir with vigil.json for all three adapters (Matrix when Synapse runs here).
    struct Setup {
        var pair: PairProcesses
        var webhook: HTTPTestServer
        var matrix: (server: SynapseServer, room: String, alice: SynapseServer.User, bot: SynapseServer.User)?
    }

    func setUp() throws -> Setup {
        let webhook = try HTTPTestServer { _ in .status(200, "ok") }
        let pair = try PairProcesses()
        var matrixJSON = ""
        var adapters = "\"console\", \"webhook\""
        var matrix: (SynapseServer, String, SynapseServer.User, SynapseServer.User)?
        if let fx = SynapseFixture.current, let server = fx.server, let bot = fx.bot {
            let alice = try server.register("alert\(MatrixTests.counter.next())x\(getpid())")
            let room = try server.createRoom(as: alice, invite: [bot.id])
            matrix = (server, room, alice, bot)
            adapters += ", \"matrix\""
            matrixJSON = """
            , "matrix": {"homeserver": "\(server.baseURL)", "user": "vigil", "password": "\(fx.botPassword)", "room": "\(room)",
                         "allow": ["\(alice.id)"], "sync_timeout": "1s", "timeout": "3s"}
            """
        } else if ProcessInfo.processInfo.environment["VIGIL_REQUIRE_SYNAPSE"] == "1" {
            Issue.record("Synapse is required (VIGIL_REQUIRE_SYNAPSE=1) but did not start: \(SynapseFixture.current?.skipReason ?? "no fixture")")
        }
        pair.write("vigil.json", """
            {"chat": {"adapters": [\(adapters)], "backoff_initial": "50ms", "backoff_max": "300ms",
                      "webhook": {"url": "\(webhook.url)", "timeout": "3s"}\(matrixJSON)}}
            """)
        pair.write("fault", "exit-at-start")
        return Setup(pair: pair, webhook: webhook, matrix: matrix)
    }

    static let flags = PairProcesses.fast + ["--circuit-limit", "2"]

    /// The circuit alert rows (one per adapter), once all are delivered.
    func deliveredAlert(_ s: Setup) throws -> [OutboxMessage] {
        var rows: [OutboxMessage] = []
        try s.pair.waitUntil("the circuit alert delivered to every adapter") {
            rows = try s.pair.outbox().filter { $0.key.hasSuffix("-circuit") }
            return rows.count == (s.matrix == nil ? 2 : 3) && rows.allSatisfy { $0.state == .delivered }
        }
        return rows
    }

    /// Each adapter shows the alert exactly once.
    func expectOnceEverywhere(_ s: Setup, _ rows: [OutboxMessage]) throws {
        // Console and webhook get the same text; Matrix's ends with the operators it mentions.
        let body = try #require(rows.first { $0.adapter == "console" }?.body)
        let log = try String(contentsOfFile: s.pair.dir.chatLog, encoding: .utf8)
        #expect(log.components(separatedBy: ConsoleAdapter.escape(body)).count - 1 == 1, "console chat.log:\n\(log)")
        let key = try #require(rows.first?.key)
        // The webhook receiver de-duplicates by Idempotency-Key (the contract for webhooks); a
        // retry after a kill may post again with the same key, never a new one.
        let posts = s.webhook.requests.filter { $0.headers["idempotency-key"] == key }
        #expect(!posts.isEmpty)
        #expect(posts.allSatisfy { JSONValue.parse($0.body)?["text"]?.stringValue?.contains("circuit") == true })
        if let m = s.matrix {
            let matrixBody = try #require(rows.first { $0.adapter == "matrix" }?.body)
            #expect(matrixBody == body + "\n" + m.alice.id)
            let inRoom = try m.server.messages(as: m.alice, room: m.room).filter { $0.sender == m.bot.id && $0.body == ChatText.defuseMentions(matrixBody) }
            #expect(inRoom.count == 1, "Matrix room: \(inRoom)")
        }
    }

    @Test func circuitAlertReachesEveryAdapterWithNoBridge() throws {
        let s = try setUp()
        defer { s.pair.finish(); s.webhook.stop() }
        let runner = try s.pair.startRunner(AlertTests.flags)
        try s.pair.waitUntil("circuit open") { !s.pair.events("circuit-open").isEmpty }
        let rows = try deliveredAlert(s)
        // Delivered by the runner (no bridge ever ran long enough to deliver anything).
        #expect(rows.allSatisfy { $0.claimedBy?.hasPrefix("\(runner.pid):") == true }, "\(rows.map { $0.claimedBy ?? "-" })")
        try expectOnceEverywhere(s, rows)

        // `/heal reset` from chat reaches the runner with no bridge running: from Matrix when it
        // runs here, and from the console (`vigil say`).
        unlink(s.pair.dir.fault)
        if let m = s.matrix {
            _ = try m.server.send(as: m.alice, room: m.room, text: "/heal reset")
        } else {
            #expect(try s.pair.vigil(["say", "/heal reset"]).code == 0)
        }
        try s.pair.waitUntil("heal reset from chat") { !s.pair.events("heal-reset").isEmpty }
        let reset = try #require(s.pair.events("heal-reset").first)
        #expect(reset["by"]?.stringValue?.hasPrefix("chat ") == true)
        // The answer came back (from the runner), and the pair heals now that the fault is gone.
        try s.pair.waitUntil("the reply to /heal reset") {
            try s.pair.outbox().contains { $0.key.hasPrefix("reply:") && $0.state == .delivered && $0.body.hasPrefix("Heal reset requested") }
        }
        try s.pair.waitUntil("bridge healthy after the reset") { s.pair.bridgeBeating() }
    }

    @Test func alertOnceWhenTheRunnerIsKilledBetweenSendAndMark() throws {
        let s = try setUp()
        defer { s.pair.finish(); s.webhook.stop() }
        // The first runner dies (SIGKILL) right after it sent the alert to one adapter, before
        // marking it; the wrapper starts the next, which finishes the job.
        try s.pair.startWrapper(AlertTests.flags, environment: ["VIGIL_CHAT_FAULT": "after-send:-circuit"])
        let rows = try deliveredAlert(s)
        #expect(FileManager.default.fileExists(atPath: s.pair.dir.chatFaultFired))
        #expect(s.pair.events("runner-started").count >= 2)
        #expect(rows.contains { $0.attempts >= 2 }) // the row in flight at the kill was tried again
        try expectOnceEverywhere(s, rows)
    }
}

/// Real `vigil runner` / `scripts/vigil-run` processes on a fresh temp state dir; ends exactly
/// the processes it started (and the ones they started, found by their argv naming this
/// directory), and checks that none is left.
final class PairProcesses {
    let path: String
    let dir: StateDirectory
    private var started: [ProcessIdentity] = []

    static let vigil = Binaries.vigil
    static let fast = ["--tick", "0.1", "--heartbeat-interval", "0.1", "--stale-after", "3", "--cooldown", "3",
                       "--term-grace", "1", "--start-grace", "5", "--stable-after", "1.5"]

    init() throws {
        path = try TempDir.make("vigil-pair")
        dir = StateDirectory(path)
    }

    var env: [String: String] { ["VIGIL_TEST_FAULTS": "1", "VIGIL_STATE_DIR": path, "PATH": "/usr/bin:/bin"] }

    func write(_ name: String, _ text: String) {
        _ = FileManager.default.createFile(atPath: path + "/" + name, contents: Data(text.utf8))
    }

    @discardableResult
    func startRunner(_ flags: [String]) throws -> ProcessIdentity {
        try spawn([PairProcesses.vigil, "runner", "--state-dir", path] + flags, log: "runner.out", environment: env)
    }

    @discardableResult
    func startWrapper(_ flags: [String], environment extra: [String: String] = [:]) throws -> ProcessIdentity {
        var e = env.merging(extra) { $1 }
        e["VIGIL_BIN"] = PairProcesses.vigil
        return try spawn([SynapseFixture.repoRoot + "/scripts/vigil-run", "--state-dir", path] + flags, log: "wrapper.out", environment: e)
    }

    private func spawn(_ argv: [String], log: String, environment: [String: String]) throws -> ProcessIdentity {
        var o = Spawner.Options()
        o.newSession = true
        o.outputPath = path + "/" + log
        o.environment = environment
        let id = try Spawner.spawn(argv, o)
        started.append(id)
        return id
    }

    /// Runs a vigil command to completion (its output goes to a file in the state dir).
    func vigil(_ args: [String]) throws -> (code: Int32, out: String) {
        var o = Spawner.Options()
        o.newSession = false
        o.environment = env
        let out = path + "/.cli-\(UInt32.random(in: 0...UInt32.max)).out"
        o.outputPath = out
        let id = try Spawner.spawn([PairProcesses.vigil, "--state-dir", path] + args, o)
        let status = Spawner.wait(id.pid) ?? -1
        defer { unlink(out) }
        return (exitCode(fromWaitStatus: status), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    func outbox() throws -> [OutboxMessage] { try Outbox(try Database(path: dir.database)).list(limit: 10_000) }

    func events(_ name: String) -> [[String: JSONValue]] {
        Journal.read(path: dir.journal).entries.filter { $0["event"]?.stringValue == name }
    }

    /// A bridge is alive and its heartbeat file names it (seen from outside).
    func bridgeBeating() -> Bool {
        guard case .ok(let v) = StateFile.read(dir.pidFile(.bridge), kind: "process", as: JSONValue.self),
              let pid = v["identity"]?["pid"]?.intValue, let start = v["identity"]?["start_ticks"]?.intValue else { return false }
        let id = ProcessIdentity(pid: Int32(pid), startTicks: UInt64(start))
        guard id.liveness() == .alive, let beat = try? String(contentsOfFile: dir.beatFile(.bridge), encoding: .utf8) else { return false }
        return beat.hasPrefix("vigil-beat 1 \(pid) \(start) ")
    }

    /// Polls every 20 ms until `condition` holds; the timeout only matters when broken.
    func waitUntil(_ what: String, timeout: Double = 60, sourceLocation: SourceLocation = #_sourceLocation, _ condition: () throws -> Bool) throws {
        let deadline = Clock.boot() + .seconds(timeout)
        while Clock.boot() < deadline {
            if (try? condition()) == true { return }
            usleep(20_000)
        }
        if try condition() { return }
        let tail = Journal.read(path: dir.journal).entries.suffix(20).map { JSONValue.object($0).jsonString }.joined(separator: "\n")
        Issue.record("timed out waiting for: \(what)\njournal tail:\n\(tail)", sourceLocation: sourceLocation)
        throw SystemError("wait", errno: ETIMEDOUT, subject: what)
    }

    /// Processes whose command line names this state directory.
    func leftovers() -> [(Int32, String)] {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        return pids.compactMap { pid in
            guard pid != getpid(), let st = ProcStat.read(pid: pid), !st.isZombie else { return nil }
            let argv = ProcStat.commandLine(pid: pid)
            return argv.contains(where: { $0.contains(path) }) ? (pid, argv.joined(separator: " ")) : nil
        }
    }

    /// Ends what we started (wrapper first, so it relaunches nothing), then what names our
    /// directory (the runner a wrapper started, the bridges a runner started); reaps; checks.
    /// Whether `pid` is a child of this process (its parent in /proc is us).
    private func isChild(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 && Int32(fields[1]) == getpid()
    }

    func finish(sourceLocation: SourceLocation = #_sourceLocation) {
        for id in started where id.isAlive { id.signal(.kill) }
        for _ in 0..<3 { // a runner may have started a bridge while we looked
            for (pid, _) in leftovers() { if let id = ProcessIdentity.of(pid: pid) { started.append(id); id.signal(.resume); id.signal(.kill) } }
        }
        for id in started {
            if let fd = id.openPidFD() { _ = fd.waitForExit(timeoutMilliseconds: 5000) }
            // A child of ours that is not reaped yet keeps its pid (no reuse): kill it by pid and
            // wait for it, so it is not left a zombie (a zombie child of the test process makes
            // any later waitid(P_ALL) see it first). Adopted leftovers are not children: ECHILD.
            if Spawner.reap(id.pid) == nil, isChild(id.pid) {
                _ = kill(id.pid, SIGKILL)
                _ = Spawner.wait(id.pid)
            }
        }
        let left = leftovers()
        #expect(left.isEmpty, "processes survived SIGKILL: \(left)", sourceLocation: sourceLocation)
        try? FileManager.default.removeItem(atPath: path)
    }
}
