import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil probe` and `vigil probe --liveness` with the real pair (issue 13, §3): the exit code
/// in each situation, the one-line reason, and that probing writes nothing.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct ProbeTests {
    func probe(_ h: Harness, liveness: Bool = false) throws -> Harness.Result {
        try h.vigil(["probe"] + (liveness ? ["--liveness"] : []))
    }

    @Test func noRunnerIsNeitherReadyNorLive() throws {
        let h = Harness(uncreated: true)
        defer { h.finish() }
        // No state directory at all: 1, and none is created.
        var r = try probe(h)
        #expect(r.code == 1 && r.out.isEmpty && r.err.hasPrefix("not ready: no state directory"), "\(r)")
        #expect(!FileSystem.exists(h.dir))
        // A directory without a runner.
        try FileManager.default.createDirectory(atPath: h.dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        r = try probe(h)
        #expect(r.code == 1 && r.err == "not ready: no runner (runner.json absent)\n", "\(r)")
        r = try probe(h, liveness: true)
        #expect(r.code == 1 && r.err == "not live: no runner (runner.json absent)\n", "\(r)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.dir).filter { !$0.hasPrefix(".cli-") }.isEmpty)
        r = try h.vigil(["probe", "--bogus"])
        #expect(r.code == 2)
    }

    @Test func healthyPairIsReadyAndLiveAndProbingWritesNothing() throws {
        let h = Harness()
        defer { h.finish() }
        let runner = try h.startRunner()
        let bridge = try h.waitHealthy()
        var r = try probe(h)
        #expect(r.code == 0, "\(r)")
        #expect(r.out == "ready: bridge pid \(bridge.pid) healthy, runner pid \(runner.pid) beating\n", "\(r)")
        #expect(r.err == r.out)
        r = try probe(h, liveness: true)
        #expect(r.code == 0 && r.out.hasPrefix("live: runner pid \(runner.pid) beating") && r.out.hasSuffix("circuit closed\n"), "\(r)")

        // Freeze the pair so nothing else writes, then probe: every file (the database, its WAL
        // and shm, the journal, PID and heartbeat files) keeps its inode, size and mtime, and no
        // file comes or goes.
        #expect(kill(runner.pid, SIGSTOP) == 0 && kill(bridge.pid, SIGSTOP) == 0)
        defer { _ = kill(runner.pid, SIGCONT); _ = kill(bridge.pid, SIGCONT) }
        try h.waitUntil("pair stopped") { ProcStat.read(pid: runner.pid)?.state == "T" && ProcStat.read(pid: bridge.pid)?.state == "T" }
        let before = snapshot(h.dir)
        #expect(before.keys.contains("vigil.db") && before.keys.contains("runner.beat") && before.keys.contains("journal.jsonl"))
        for _ in 0..<3 {
            _ = try probe(h)
            _ = try probe(h, liveness: true)
        }
        let after = snapshot(h.dir)
        #expect(after == before, "probing changed the state directory: \(Set(after.map { "\($0.key) \($0.value)" }).symmetricDifference(before.map { "\($0.key) \($0.value)" }))")

        // A stopped runner stops beating: not live (nor ready) once its beat is older than its
        // stale bound (stale-after 3 s here: `Runner.ownStaleAfter`).
        try h.waitUntil("runner stale") { (try? probe(h, liveness: true))?.code == 1 }
        r = try probe(h, liveness: true)
        #expect(r.err.hasPrefix("not live: runner pid \(runner.pid) not beating") && r.err.contains("limit 3.0 s"), "\(r)")
        #expect(r.out.isEmpty)
        #expect(try probe(h).code == 1)
    }

    @Test func hungBridgeIsNotReadyButLive() throws {
        let h = Harness()
        defer { h.finish() }
        // A long term grace: the hung bridge (it ignores SIGTERM while it hangs) stays for the test.
        let runner = try h.startRunner(Harness.fast + ["--term-grace", "60"])
        let bridge = try h.waitHealthy()
        h.write("fault", "hang")
        try h.waitUntil("not ready") { (try? probe(h))?.code == 1 }
        let r = try probe(h)
        #expect(r.err.hasPrefix("not ready: bridge hung (pid \(bridge.pid), heartbeat "), "\(r)")
        #expect(r.out.isEmpty)
        let live = try probe(h, liveness: true)
        #expect(live.code == 0 && live.out.hasPrefix("live: runner pid \(runner.pid) beating"), "\(live)")
        try h.waitUntil("the runner acting on it (tier 2)") { !h.heals(action: "terminate").isEmpty }
        #expect(try probe(h, liveness: true).code == 0)
    }

    @Test func openCircuitIsNotLive() throws {
        let h = Harness()
        defer { h.finish() }
        h.write("fault", "exit-at-start")
        try h.startRunner(Harness.fast + ["--circuit-limit", "1", "--circuit-cooloff", "600"])
        try h.waitUntil("circuit open") { !h.events("circuit-open").isEmpty }
        try h.waitUntil("heal.json says open") { (try? probe(h, liveness: true))?.code == 1 }
        let r = try probe(h, liveness: true)
        #expect(r.err.hasPrefix("not live: circuit open (failed-respawns)"), "\(r)")
        let ready = try probe(h)
        #expect(ready.code == 1 && ready.err.contains("circuit open"), "\(ready)")
    }

    /// Inode, size and mtime of every file below `dir` (not the harness's own `.cli-*` capture
    /// files, which come and go with each command it runs).
    func snapshot(_ dir: String) -> [String: String] {
        var out: [String: String] = [:]
        let names = (FileManager.default.enumerator(atPath: dir)?.allObjects as? [String]) ?? []
        for name in names where !(name as NSString).lastPathComponent.hasPrefix(".cli-") {
            guard let st = FileStatus.at(dir + "/" + name, followSymlinks: false), st.kind != .directory else { continue }
            out[name] = "\(st.inode) \(st.size) \(st.modifiedSeconds).\(st.modifiedNanoseconds)"
        }
        return out
    }
}
