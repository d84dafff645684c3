import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil metrics` and the runner's `/metrics` (issue 13, §4): the exposition parses, its
/// numbers are the journal's after kill -9, they survive a runner restart and journal
/// rotation, and the listener is bounded (404, 400, a slow client) and loopback by default.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct MetricsTests {
    func listen(_ h: Harness, port: UInt16, extra: String = "") {
        h.write("vigil.json", #"{"metrics": {"listen": "127.0.0.1:\#(port)"\#(extra)}}"#)
        chmod(h.dir + "/vigil.json", 0o600)
    }

    func scrape(_ port: UInt16, sourceLocation: SourceLocation = #_sourceLocation) throws -> Exposed {
        let r = try #require(httpGet(port: port, "/metrics"), sourceLocation: sourceLocation)
        #expect(r.status == 200, sourceLocation: sourceLocation)
        #expect(r.head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"), sourceLocation: sourceLocation)
        return Exposed(r.body, sourceLocation: sourceLocation)
    }

    /// What the journal says the heal counters must be.
    func expected(_ h: Harness) -> (heals: [String: Double], recoveries: Int, healSeconds: Double) {
        var heals: [String: Double] = [:]
        for e in h.events("heal") {
            heals["\(e["tier"]?.intValue ?? -1)|\(e["verdict"]?.stringValue ?? "")|\(e["action"]?.stringValue ?? "")", default: 0] += 1
        }
        let rec = h.events("recovered")
        return (heals, rec.count, rec.reduce(0) { $0 + ($1["after_ms"]?.doubleValue ?? 0) / 1000 })
    }

    func heals(_ x: Exposed) -> [String: Double] {
        var out: [String: Double] = [:]
        for s in x.samples where s.name == "vigil_heal_actions_total" {
            out["\(s.labels["tier"] ?? "")|\(s.labels["verdict"] ?? "")|\(s.labels["action"] ?? "")"] = s.value
        }
        return out
    }

    @Test func numbersMatchTheJournalAfterKill9() throws {
        let h = Harness()
        defer { h.finish() }
        let port = try freePort()
        listen(h, port: port)
        try h.startRunner()
        let first = try h.waitHealthy()
        try h.waitUntil("listening") { !h.events("metrics-listening").isEmpty }
        var x = try scrape(port)
        x.checkConventions()
        #expect(x.value("vigil_bridge_up") == 1 && x.value("vigil_runner_up") == 1)
        #expect(x.sum("vigil_heal_actions_total") == 0)
        #expect(x.value("vigil_heal_circuit_state", ["state": "closed"]) == 1)
        #expect(x.value("vigil_bridge_verdict", ["verdict": "healthy"]) == 1)
        #expect(x.value("vigil_missions", ["state": "pending"]) == 0)
        #expect(x.value("vigil_workspace_slots", ["state": "available"]) == 0)
        #expect(x.value("vigil_database_readable") == 1)

        #expect(kill(first.pid, SIGKILL) == 0)
        try h.waitUntil("recovered") { h.events("recovered").count == 1 }
        _ = try h.waitHealthy()
        // A message in the outbox, to see it by adapter and state.
        _ = try h.vigil(["say", "hello from the metrics test"])
        try h.waitUntil("delivered") { (try? scrape(port))?.value("vigil_outbox_messages", ["adapter": "console", "state": "delivered"]) ?? 0 >= 1 }
        x = try scrape(port)
        x.checkConventions()
        let want = expected(h)
        #expect(heals(x) == want.heals, "\(heals(x)) vs the journal's \(want.heals)")
        #expect(want.heals["3|dead|respawn"] == 1)
        #expect(x.sum("vigil_recoveries_total") == Double(want.recoveries))
        #expect(x.value("vigil_recoveries_total", ["tier": "3", "verdict": "dead"]) == 1)
        #expect(x.value("vigil_time_to_heal_seconds_count") == 1)
        #expect(abs((x.value("vigil_time_to_heal_seconds_sum") ?? -1) - want.healSeconds) < 1e-6)
        // Present once the runner's record carries it (it is rewritten at most every 30 s).
        #expect(x.types["vigil_probe_cpu_seconds"] == "gauge")
        if let cpu = x.value("vigil_probe_cpu_seconds") { #expect(cpu > 0 && cpu < 1) }
        #expect(x.value("vigil_chat_circuit_state", ["adapter": "console", "state": "closed"]) == 1)
        #expect(x.types["vigil_self_check_ok"] == "gauge" && x.types["vigil_self_check_failures_in_a_row"] == "gauge")
        for s in x.samples where s.name == "vigil_self_check_ok" { #expect(s.labels["group"] != nil && (s.value == 0 || s.value == 1)) }

        // `vigil metrics` prints the same families and the same counts.
        let cli = try h.vigil(["metrics"])
        #expect(cli.code == 0, "\(cli.err)")
        let y = Exposed(cli.out)
        y.checkConventions()
        #expect(y.types == x.types)
        #expect(heals(y) == want.heals)
        #expect(y.value("vigil_time_to_heal_seconds_count") == 1)

        // And a real parser agrees, where Prometheus's own tool is installed.
        if FileSystem.exists("/usr/bin/promtool") {
            try FileManager.default.createDirectory(atPath: h.dir + "/scratch", withIntermediateDirectories: true)
            try cli.out.write(toFile: h.dir + "/scratch/metrics.txt", atomically: true, encoding: .utf8)
            let lint = try h.run("/bin/sh", ["-c", "/usr/bin/promtool check metrics < '\(h.dir)/scratch/metrics.txt'"])
            #expect(lint.code == 0, "promtool check metrics: \(lint.out) \(lint.err)")
        }
    }

    /// The totals come from metrics.json and the journal after its cursor: a new runner counts
    /// on (no double counting), and heals whose journal file was rotated out stay counted.
    @Test func totalsSurviveRestartAndRotation() throws {
        let h = Harness()
        defer { h.finish() }
        let port = try freePort()
        listen(h, port: port)
        // A tiny journal that keeps one old file: three incidents rotate the first ones out.
        let flags = Harness.fast + ["--journal-max-bytes", "4KiB", "--journal-keep", "1"]
        var runner = try h.startRunner(flags)
        defer { _ = runner }
        var bridge = try h.waitHealthy()
        // Incidents until a file holding a counted respawn was rotated out (kept: one old file).
        var n = 0
        while n < 3 || h.heals(action: "respawn").count == n {
            n += 1
            #expect(kill(bridge.pid, SIGKILL) == 0)
            try h.waitUntil("respawn \(n) counted") { (try? scrape(port)).map { heals($0)["3|dead|respawn"] == Double(n) } ?? false }
            try h.waitUntil("new bridge") { h.bridgeIdentity.map { $0 != bridge } ?? false }
            bridge = try h.waitHealthy()
            // Proven stable before the next kill (else the next is a failed respawn).
            try h.waitUntil("recovery \(n)") { (try? scrape(port))?.sum("vigil_recoveries_total") == Double(n) }
            if n >= 12 { break }
        }
        #expect(h.heals(action: "respawn").count < n, "a journal file with a respawn was rotated out (else this test proves nothing)")
        // A graceful stop saves the totals; a new runner (and the CLI) counts on from them.
        #expect(kill(runner.pid, SIGTERM) == 0)
        _ = try h.waitExit(runner)
        let saved = try String(contentsOfFile: h.dir + "/metrics.json", encoding: .utf8)
        #expect(saved.contains("\"3|dead|respawn\":\(n)"), "\(saved)")
        #expect(heals(Exposed(try h.vigil(["metrics"]).out))["3|dead|respawn"] == Double(n))
        runner = try h.startRunner(flags)
        bridge = try h.waitHealthy()
        try h.waitUntil("listening again") { h.events("metrics-listening").count >= 1 && httpGet(port: port, "/metrics") != nil }
        #expect(heals(try scrape(port))["3|dead|respawn"] == Double(n))
        // kill -9 of the runner: the next one counts on from the last save and reads the rest
        // of the journal again from that cursor, no more.
        #expect(kill(bridge.pid, SIGKILL) == 0)
        h.track(bridge)
        try h.waitUntil("one more respawn counted") { (try? scrape(port)).map { heals($0)["3|dead|respawn"] == Double(n + 1) } ?? false }
        #expect(kill(runner.pid, SIGKILL) == 0)
        _ = try h.waitExit(runner)
        try h.startRunner(flags)
        try h.waitUntil("served by the third runner") { httpGet(port: port, "/metrics")?.status == 200 }
        #expect(heals(try scrape(port))["3|dead|respawn"] == Double(n + 1))
        #expect(heals(Exposed(try h.vigil(["metrics"]).out))["3|dead|respawn"] == Double(n + 1))
    }

    @Test func listenerAnswersOnlyMetricsAndASlowClientBlocksNothing() throws {
        let h = Harness()
        defer { h.finish() }
        let port = try freePort()
        listen(h, port: port)
        try h.startRunner()
        _ = try h.waitHealthy()
        try h.waitUntil("listening") { httpGet(port: port, "/metrics")?.status == 200 }
        #expect(httpGet(port: port, "/")?.status == 404)
        #expect(httpGet(port: port, "/metrics/x")?.status == 404)
        #expect(httpGet(port: port, "/metrics?x=1")?.status == 200)
        #expect(httpGet(port: port, "", raw: "POST /metrics HTTP/1.0\r\n\r\n")?.status == 405)
        #expect(httpGet(port: port, "", raw: "garbage\r\n\r\n")?.status == 400)
        #expect(httpGet(port: port, "", raw: "GET /metrics HTTP/9\r\n\r\n")?.status == 400)
        #expect(httpGet(port: port, "", raw: "GET /metrics HTTP/1.0\r\nX: " + String(repeating: "a", count: 20_000) + "\r\n\r\n")?.status == 400)

        // A client that connects and says nothing: the runner keeps beating, and once its read
        // timeout passes the next scrape is served.
        let silent = try #require(TCPClient.connect(ListenAddress(octets: [127, 0, 0, 1], port: port)))
        defer { silent.close() }
        let beat = try #require(h.runnerBeat)
        try h.waitUntil("runner beats on") { (h.runnerBeat ?? beat) > beat + .milliseconds(500) }
        #expect(httpGet(port: port, "/metrics", timeout: 20)?.status == 200)
        // The silent one was dropped: it reads the end of the stream.
        #expect(silent.read(max: 100, until: Clock.boot() + .seconds(10)) == [])
        #expect(try h.vigil(["probe", "--liveness"]).code == 0)
    }

    @Test func nonLoopbackIsRefusedUnlessAllowed() throws {
        let h = Harness()
        defer { h.finish() }
        let port = try freePort()
        h.write("vigil.json", #"{"metrics": {"listen": "0.0.0.0:\#(port)"}}"#)
        chmod(h.dir + "/vigil.json", 0o600)
        var r = try h.vigil(["runner"] + Harness.fast)
        #expect(r.code == 2)
        #expect(r.err.contains("\"metrics\".\"listen\" is 0.0.0.0:\(port), which is not a loopback address") && r.err.contains("\"allow_remote\": true"), "\(r.err)")
        for bad in [#"{"metrics": {"listen": "example.org:80"}}"#, #"{"metrics": {"listen": "127.0.0.1:99999"}}"#,
                    #"{"metrics": {"listen": "127.0.0.1:9464", "tls": true}}"#, #"{"metrics": "127.0.0.1:9464"}"#,
                    #"{"metrics": {"listen": "127.0.0.1:9464", "allow_remote": "yes"}}"#] {
            h.write("vigil.json", bad)
            r = try h.vigil(["runner"] + Harness.fast)
            #expect(r.code == 2 && r.err.contains("\"metrics\""), "\(bad): \(r.err)")
        }
        // Said explicitly: served on every interface (reached here through loopback).
        h.write("vigil.json", #"{"metrics": {"listen": "0.0.0.0:\#(port)", "allow_remote": true}}"#)
        try h.startRunner()
        _ = try h.waitHealthy()
        try h.waitUntil("served") { httpGet(port: port, "/metrics")?.status == 200 }
        #expect(h.events("metrics-listening").first?["remote"]?.boolValue == true)
    }
}
