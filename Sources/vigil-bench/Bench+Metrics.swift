import Foundation
import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil-bench metrics`: what container probes and a Prometheus scrape cost, against a live
/// pair (docs/operator-guide.md, "Probes and metrics"): `vigil probe` and `vigil probe
/// --liveness` from outside (process start included, as an exec probe runs them), `GET
/// /metrics` on the runner, and `vigil metrics`; then the same scrape with a large journal
/// (the totals count on from their cursor), beside one count of that whole journal from
/// nothing (no metrics.json: what a first scrape, or a lost metrics.json, costs once).
enum MetricsBench {
    static let help = """
    usage: vigil-bench metrics [--rounds N] [--events N] [--json]

    N probes / scrapes each (default 50); --events entries in the large journal (default 100000,
    one in ten a heal).
    """

    static func run(_ argv: [String], json: Bool = false) throws {
        let args = try Arguments(argv, valued: ["rounds", "events"])
        let rounds = try args.int("rounds", min: 5) ?? 50
        let events = try args.int("events", min: 1) ?? 100_000
        let port = try TCPListener(ListenAddress(octets: [127, 0, 0, 1], port: 0)).address.port
        let pair = try BenchPair(flags: [], config: #"{"metrics": {"listen": "127.0.0.1:\#(port)"}}"#)
        defer { pair.finish() }
        try pair.waitHealthy()
        let address = ListenAddress(octets: [127, 0, 0, 1], port: port)
        let request = Array("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        func scrape() throws -> Double {
            let t0 = Clock.boot()
            guard let answer = TCPClient.exchange(address, request: request, timeout: .seconds(30)),
                  String(decoding: answer.prefix(12), as: UTF8.self) == "HTTP/1.1 200" else { throw CommandError("GET /metrics failed") }
            return (Clock.boot() - t0).milliseconds
        }
        try pair.waitFor("the metrics listener") { (try? scrape()) != nil }
        func command(_ argv: [String], dir: StateDirectory = pair.dir, expect: Int32 = 0) throws -> Double {
            var o = Spawner.Options()
            o.newSession = false
            o.outputPath = "/dev/null"
            let t0 = Clock.boot()
            let child = try Spawner.spawn([Binaries.vigil, "--state-dir", dir.path] + argv, o)
            guard let status = Spawner.wait(child.pid), exitCode(fromWaitStatus: status) == expect else {
                throw CommandError("vigil \(argv.joined(separator: " ")) did not exit \(expect)")
            }
            return (Clock.boot() - t0).milliseconds
        }
        let ready = try (0..<rounds).map { _ in try command(["probe"]) }
        let live = try (0..<rounds).map { _ in try command(["probe", "--liveness"]) }
        let small = try (0..<rounds).map { _ in try scrape() }
        let cli = try (0..<min(rounds, 20)).map { _ in try command(["metrics"]) }

        // A large journal: `events` entries appended in one write (as if over months), one in
        // ten a heal (counted), the others mission ends (passed over undecoded).
        var lines = Data()
        let wall = Clock.wall()
        for i in 0..<events {
            if i % 10 == 0 {
                lines += Journal.encode(event: JournalEvent.heal.rawValue, source: "bench", fields: [
                    "tier": 3, "verdict": "dead", "action": "respawn", "circuit": "closed", "failed_respawns": 0,
                    "bridge_before": ["pid": .int(Int64(1000 + i)), "start_ticks": 1], "bridge_after": ["pid": .int(Int64(2000 + i)), "start_ticks": 2],
                    "incident_ms": 0.5,
                ], boot: Clock.boot(), wall: wall)
            } else {
                lines += Journal.encode(event: JournalEvent.missionFinished.rawValue, source: "bench", fields: [
                    "mission": .int(Int64(i)), "attempt": 1, "exit": 0, "duration_ms": 1234.5, "output_bytes": 4096,
                ], boot: Clock.boot(), wall: wall)
            }
        }
        let fd = try FileDescriptor.open(pair.dir.journal, [.writeOnly, .append])
        try fd.writeAll(lines, subject: pair.dir.journal)
        fd.close()
        let catchUp = try scrape()
        let large = try (0..<rounds).map { _ in try scrape() }

        // The whole large journal counted from nothing: a copy without metrics.json.
        let cold = StateDirectory(try TempDirectory.make(prefix: "vigil-bench-metrics"))
        defer { try? FileManager.default.removeItem(atPath: cold.path) }
        try AtomicFile.copy(from: pair.dir.journal, to: cold.journal, mode: PrivateFile.mode)
        let coldCount = try command(["metrics"], dir: cold)
        let journalBytes = FileStatus.at(cold.journal)?.size ?? 0

        let s = { (v: [Double]) in Stats(v) }
        var table = BenchTable(title: "vigil-bench metrics (\(rounds) rounds; a live pair at the default tick)")
        table.add("`vigil probe` (readiness) from outside, p50 / p95", String(format: "%.1f / %.1f ms", s(ready).median, s(ready).p95),
                  "p50 ≤ 20 ms", "an exec probe's timeout is 1 s", value: s(ready).median, atMost: 20)
        table.add("`vigil probe --liveness` from outside, p50 / p95", String(format: "%.1f / %.1f ms", s(live).median, s(live).p95),
                  "p50 ≤ 20 ms", "", value: s(live).median, atMost: 20)
        table.add("GET /metrics on the runner, p50 / p95", String(format: "%.2f / %.2f ms", s(small).median, s(small).p95),
                  "p50 ≤ 20 ms", "Prometheus' scrape timeout is 10 s", value: s(small).median, atMost: 20)
        table.add("`vigil metrics` from outside, p50", String(format: "%.1f ms", s(cli).median), "(outside view)")
        table.add("GET /metrics, first after \(events) entries (\(journalBytes / 1024) KiB, 1 in 10 a heal) appended", String(format: "%.1f ms", catchUp),
                  "(reads what is new once)")
        table.add("GET /metrics with that journal, p50 / p95", String(format: "%.2f / %.2f ms", s(large).median, s(large).p95),
                  "p50 ≤ 20 ms", "counts on from the cursor", value: s(large).median, atMost: 20)
        table.add("`vigil metrics` counting that whole journal from nothing", String(format: "%.0f ms", coldCount), "(once: no metrics.json)")
        table.print(json: json)
    }
}
