import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// A real Prometheus (Debian's package, installed by scripts/setup-prometheus) scrapes the
/// runner's `/metrics` every second; after a kill -9 of the bridge, PromQL returns the heal
/// (issue 13, §4). Without Prometheus the test is skipped with the reason, or, with
/// VIGIL_REQUIRE_PROMETHEUS=1 (CI, .ci/run), fails.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct PrometheusTests {
    /// The binary, from scripts/setup-prometheus (which installs it when missing).
    func prometheus(_ h: Harness) throws -> String {
        let r = try h.run(Harness.repoRoot + "/scripts/setup-prometheus", [])
        let path = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        if r.code == 0, !path.isEmpty { return path }
        let reason = "Prometheus unavailable: scripts/setup-prometheus exited \(r.code): \(r.err.trimmingCharacters(in: .whitespacesAndNewlines))"
        if ProcessInfo.processInfo.environment["VIGIL_REQUIRE_PROMETHEUS"] == "1" {
            Issue.record(Comment(rawValue: reason + " (VIGIL_REQUIRE_PROMETHEUS=1)"))
            throw WaitTimeout(what: reason)
        }
        Console.err.write("warning: PrometheusTests skipped: \(reason)\n")
        try Test.cancel(Comment(rawValue: reason))
    }

    /// One PromQL instant query; the first result's value, or nil when there is none yet.
    func query(_ port: UInt16, _ promql: String) -> Double? {
        let q = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promql
        guard let r = httpGet(port: port, "/api/v1/query?query=\(q)"), r.status == 200,
              let v = JSONValue.parse(Data(r.body.utf8)), v["status"]?.stringValue == "success",
              case .array(let results)? = v["data"]?["result"], let first = results.first,
              case .array(let pair)? = first["value"], pair.count == 2, let text = pair[1].stringValue else { return nil }
        return Double(text)
    }

    @Test func prometheusScrapesTheHealCountAfterKill9() throws {
        let h = Harness()
        defer { h.finish() }
        let bin = try prometheus(h)
        let version = try h.run(bin, ["--version"])
        let metricsPort = try freePort(), promPort = try freePort()
        h.write("vigil.json", #"{"metrics": {"listen": "127.0.0.1:\#(metricsPort)"}}"#)
        chmod(h.dir + "/vigil.json", 0o600)
        try h.startRunner()
        let bridge = try h.waitHealthy()

        let work = h.dir + "/prometheus"
        try FileManager.default.createDirectory(atPath: work + "/data", withIntermediateDirectories: true)
        try """
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: vigil
            static_configs:
              - targets: ["127.0.0.1:\(metricsPort)"]

        """.write(toFile: work + "/prometheus.yml", atomically: true, encoding: .utf8)
        let prom = try h.spawn([bin, "--config.file=\(work)/prometheus.yml", "--storage.tsdb.path=\(work)/data",
                                "--web.listen-address=127.0.0.1:\(promPort)", "--log.level=warn"], log: "prometheus.out")
        try h.waitUntil("Prometheus ready (\(version.out.split(separator: "\n").first ?? ""))", timeout: 60) {
            guard prom.isAlive else { throw WaitTimeout(what: "Prometheus exited: " + ((try? String(contentsOfFile: h.dir + "/prometheus.out", encoding: .utf8)) ?? "")) }
            return httpGet(port: promPort, "/-/ready")?.status == 200
        }
        try h.waitUntil("the target is up", timeout: 30) { query(promPort, #"up{job="vigil"}"#) == 1 }
        #expect(query(promPort, "vigil_bridge_up") == 1)
        #expect(query(promPort, "sum(vigil_heal_actions_total)") ?? 0 == 0)

        #expect(kill(bridge.pid, SIGKILL) == 0)
        try h.waitUntil("PromQL sees the heal", timeout: 30) {
            (query(promPort, #"sum(vigil_heal_actions_total{tier="3",verdict="dead",action="respawn"})"#) ?? 0) >= 1
        }
        #expect(h.heals(action: "respawn").count == 1)
        try h.waitUntil("PromQL sees the recovery", timeout: 30) { (query(promPort, "vigil_time_to_heal_seconds_count") ?? 0) >= 1 }
        #expect(query(promPort, "vigil_runner_up") == 1)
    }
}
