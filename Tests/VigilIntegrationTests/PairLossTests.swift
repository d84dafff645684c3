import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// What the pair does when what it stands on goes away (issue 9 §4, items 2 and 3; docs/
/// operator-guide.md, "The state directory removed or replaced" and "The wrapper gone"): real
/// processes, real `rm -rf`, rename, `kill -9` and SIGTERM.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct PairLossTests {
    /// `rm -rf` of the state directory under a running runner: it stops its bridge and exits 4,
    /// and nothing re-creates the directory.
    @Test func stateDirRemovedUnderThePairEndsItWithExit4() throws {
        let h = Harness(uncreated: true)
        defer { h.finish() }
        let runner = try h.startRunner()
        let bridge = try h.waitHealthy()
        // The kept copy of the program is written once the pair was healthy for stable-after:
        // let that be done, so no copy is under way while the directory goes.
        try h.waitUntil("the program kept") { !h.events("program-kept").isEmpty }

        // `rm -rf`: the pair keeps writing while it goes, so a pass may find a new file: again.
        try h.waitUntil("the state directory removed") {
            try? FileManager.default.removeItem(atPath: h.dir)
            return !FileManager.default.fileExists(atPath: h.dir)
        }
        let code = try h.waitExit(runner, timeout: 30)
        #expect(code == StateDirectoryAnchor.lostExitCode, "runner exit code")
        try h.waitUntil("the bridge gone") { bridge.liveness() == .gone }
        #expect(!FileManager.default.fileExists(atPath: h.dir), "the old pair re-created the state directory")
        let out = log(h, "runner.out")
        #expect(out.contains("the state directory \(h.dir) was removed"), "runner output: \(out)")
    }

    /// The state directory renamed away and an empty one made at its path, under the wrapper:
    /// the runner stops its bridge and exits 4, the wrapper exits 4 without relaunching, the
    /// new directory stays empty, and the old one (still reachable) has the journal entries.
    @Test func stateDirReplacedUnderTheWrapperEndsThePairWithExit4() throws {
        let h = Harness(uncreated: true)
        defer { h.finish() }
        let wrapper = try h.startWrapper()
        let bridge = try h.waitHealthy()
        let runnerPid = try #require(try h.status()["runner"]?["pid"]?.intValue)
        let runner = try #require(ProcessIdentity.of(pid: Int32(runnerPid)))
        try h.waitUntil("the program kept") { !h.events("program-kept").isEmpty }

        let old = h.dir + ".old"
        #expect(rename(h.dir, old) == 0)
        #expect(mkdir(h.dir, 0o700) == 0)

        let code = try h.waitExit(wrapper, timeout: 40)
        #expect(code == StateDirectoryAnchor.lostExitCode, "wrapper exit code; its log: \(log(h, "wrapper.out"))")
        try h.waitUntil("runner and bridge gone") { runner.liveness() == .gone && bridge.liveness() == .gone }
        let created = try FileManager.default.contentsOfDirectory(atPath: h.dir)
        #expect(created.isEmpty, "the old pair wrote into the new state directory: \(created)")
        let wrapperLog = log(h, "wrapper.out")
        #expect(wrapperLog.contains("runner exited 4"), "\(wrapperLog)")
        #expect(wrapperLog.components(separatedBy: "was removed or replaced").count == 2, "one runner, not relaunched: \(wrapperLog)")
        #expect(wrapperLog.contains("was replaced by another directory") || wrapperLog.contains("was removed"), "\(wrapperLog)")
        // Journaled into the old directory, through the descriptor each process kept.
        let lost = Journal.read(path: old + "/journal.jsonl").entries.filter { $0["event"]?.stringValue == "state-dir-lost" }
        #expect(lost.contains { $0["source"]?.stringValue == "runner" }, "\(lost)")
        #expect(lost.allSatisfy { $0["exit"]?.intValue == 4 && $0["path"]?.stringValue == h.dir }, "\(lost)")
    }

    /// A bridge (or runner) started for one state directory (`VIGIL_STATE_DIR_ID`, as the
    /// runner spawns bridges) whose directory is gone or another now exits 4 and creates nothing.
    @Test func aProcessStartedForAnotherDirectoryRefusesWithExit4() throws {
        let h = Harness(uncreated: true)
        defer { h.finish() }
        var env = h.env
        env["VIGIL_STATE_DIR_ID"] = "1:1"
        for role in ["bridge", "runner"] {
            let p = try h.spawn([h.bin, role, "--state-dir", h.dir] + Harness.fast, log: "\(role).out", environment: env)
            #expect(try h.waitExit(p, timeout: 30) == StateDirectoryAnchor.lostExitCode, "\(role)")
            #expect(!FileManager.default.fileExists(atPath: h.dir), "the \(role) created the state directory")
            #expect(log(h, "\(role).out").contains("before this \(role) started: not starting"), "\(log(h, "\(role).out"))")
        }
        // An existing directory, but not the one named.
        #expect(mkdir(h.dir, 0o700) == 0)
        let p = try h.spawn([h.bin, "bridge", "--state-dir", h.dir] + Harness.fast, log: "bridge2.out", environment: env)
        #expect(try h.waitExit(p, timeout: 30) == StateDirectoryAnchor.lostExitCode)
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.dir).isEmpty)
    }

    /// A `kill -9` of the wrapper: the runner notices, and a restart marker is not an exit 42 into
    /// nothing: `vigil restart runner` warns, the runner journals that it did not restart and
    /// keeps running.
    @Test func runnerWhoseWrapperIsGoneDoesNotExitForARestartMarker() throws {
        let h = Harness()
        defer { h.finish() }
        let wrapper = try h.startWrapper()
        try h.waitHealthy()
        let runnerPid = try #require(try h.status()["runner"]?["pid"]?.intValue)
        let runner = try #require(ProcessIdentity.of(pid: Int32(runnerPid)))

        #expect(try h.status()["runner"]?["wrapper"]?["alive"]?.boolValue == true)
        #expect(try h.status()["runner"]?["wrapper"]?["pid"]?.intValue == Int64(wrapper.pid))
        #expect(wrapper.signal(.kill))
        _ = try h.waitExit(wrapper)
        try h.waitUntil("the runner saw its wrapper gone") { !h.events("wrapper-gone").isEmpty }
        #expect(h.events("wrapper-gone").first?["wrapper_pid"]?.intValue == Int64(wrapper.pid))

        let r = try h.vigil(["restart", "runner"])
        #expect(r.code == 0, "\(r.out) \(r.err)")
        #expect(r.out.contains("restart marker written for the runner"))
        #expect(r.err.contains("warning: no wrapper (scripts/vigil-run) is running on \(h.dir)"), "stderr: \(r.err)")
        try h.waitUntil("the restart journaled as skipped") { !h.events("runner-restart-skipped").isEmpty }
        #expect(h.events("runner-restart").isEmpty, "the runner exited 42 with nobody to relaunch it")
        #expect(!FileManager.default.fileExists(atPath: h.dir + "/runner.restart"), "the marker is consumed")
        // Still the same runner, still at work.
        let beat = try #require(h.runnerBeat)
        try h.waitUntil("the runner beats on") { (h.runnerBeat ?? beat) > beat }
        #expect(runner.isAlive)
        #expect(try h.status()["runner"]?["pid"]?.intValue == Int64(runner.pid))
        #expect(h.events("runner-restart-skipped").count == 1)
        #expect(try h.status()["runner"]?["wrapper"]?["alive"]?.boolValue == false)
        let human = try h.vigil(["status"]).out
        #expect(human.contains("wrapper (pid \(wrapper.pid)) gone"), "\(human)")
    }

    /// SIGTERM to the wrapper while it waits to relaunch a crashed runner: nobody else would stop
    /// the bridge, so the wrapper does (`vigil stop`).
    @Test func wrapperStoppedDuringItsCrashBackoffStopsTheBridge() throws {
        let h = Harness()
        defer { h.finish() }
        let wrapper = try h.startWrapper()
        let bridge = try h.waitHealthy()
        // Every runner from now on crashes at start: the wrapper backs off (0.5 s, 1 s, …).
        h.write("runner-fault", "exit-at-start")
        let r = try h.vigil(["restart", "runner"])
        #expect(r.code == 0 && r.err.isEmpty, "\(r.out) \(r.err)")
        try h.waitUntil("the wrapper in its crash backoff") { log(h, "wrapper.out").contains("relaunching in") }
        #expect(wrapper.signal(.terminate))
        let code = try h.waitExit(wrapper, timeout: 40)
        #expect(code == 0)
        try h.waitUntil("the bridge gone") { bridge.liveness() == .gone }
        let text = log(h, "wrapper.out")
        #expect(text.contains("no runner is up, so the bridge was stopped"), "\(text)")
        #expect(h.events("bridge-stopped").contains { $0["pid"]?.intValue == Int64(bridge.pid) }, "the bridge stopped cleanly")
    }

    /// Output of a process the harness started (in the harness's temp directory, beside the
    /// state directory when that is `uncreated`).
    private func log(_ h: Harness, _ name: String) -> String {
        for base in [h.dir, (h.dir as NSString).deletingLastPathComponent] {
            if let d = FileManager.default.contents(atPath: base + "/" + name) { return String(decoding: d, as: UTF8.self) }
        }
        return ""
    }
}
