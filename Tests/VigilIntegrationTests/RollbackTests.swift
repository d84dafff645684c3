import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// A broken update is rolled back (issue 8; docs/operator-guide.md, "Rollback of a broken
/// update"), and the wrapper's own log (issue 8, §5): real processes through scripts/vigil-run.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct RollbackTests {
    @Test func brokenUpdateRunsTheKeptCopyThenAFixIsPickedUp() throws {
        let h = Harness()
        defer { h.finish() }
        // The pair runs from a copy (VIGIL_BIN) that the test replaces; the test's own `vigil`
        // commands keep using the real executable.
        let bin = h.dir + "/bin/vigil"
        try FileManager.default.createDirectory(atPath: h.dir + "/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Harness.vigil, toPath: bin)
        var env = h.env
        env["VIGIL_BIN"] = bin
        try h.spawn([Harness.repoRoot + "/scripts/vigil-run", "--state-dir", h.dir] + Harness.fast, log: "wrapper.out", environment: env)
        try h.waitHealthy()
        let good = try #require(Executable.fileIdentity(bin))
        try h.waitUntil("the good program kept") { h.events("program-kept").contains { $0["version"]?.stringValue == good } }
        let kept = h.dir + "/program/good"
        #expect(mode(kept) == 0o700)
        #expect(mode(h.dir + "/program") == 0o700)
        #expect(mode(h.dir + "/program/good.json") == 0o600)

        // A broken update: a build that exits 1 at once, put in place as an update would (rename).
        let script = "#!/bin/sh\necho 'broken build' >&2\nexit 1\n"
        try Data(script.utf8).write(to: URL(fileURLWithPath: bin + ".new"))
        #expect(chmod(bin + ".new", 0o755) == 0)
        #expect(rename(bin + ".new", bin) == 0)
        let broken = try #require(Executable.fileIdentity(bin))

        try h.waitUntil("the rollback journaled") { !h.events("update-rolled-back").isEmpty }
        try h.waitUntil("runner and bridge run the kept copy") { exe(h, .runner) == kept && exe(h, .bridge) == kept }
        try h.waitHealthy()
        let rolled = h.events("update-rolled-back")
        #expect(rolled.count == 1)
        #expect(rolled.first?["broken_version"]?.stringValue == broken)
        #expect(rolled.first?["kept_version"]?.stringValue == good)
        try h.waitUntil("the rollback told in chat") { chatCount(h, "crashed at start again and again") >= 1 }
        #expect(chatCount(h, "crashed at start again and again") == 1)
        #expect(String(decoding: FileManager.default.contents(atPath: bin) ?? Data(), as: UTF8.self) == script, "the broken program stays on disk")

        // A good program again (a fresh copy: a new file identity) is picked up as usual.
        let healsBefore = h.heals().count
        try FileManager.default.copyItem(atPath: Harness.vigil, toPath: bin + ".new")
        #expect(rename(bin + ".new", bin) == 0)
        let fixed = try #require(Executable.fileIdentity(bin))
        try h.waitUntil("runner and bridge run the program on disk again") {
            exe(h, .runner) == bin && h.bridgeRecord?.version == fixed
        }
        try h.waitHealthy()
        #expect(h.events("runner-restart").contains { $0["reason"]?.stringValue?.hasPrefix("a new program on disk after a rollback") == true })
        let after = h.heals().dropFirst(healsBefore)
        #expect(after.allSatisfy { $0["tier"]?.intValue == 1 }, "back from the kept copy by re-exec, no signal: \(Array(after))")
        try h.waitUntil("the fixed program kept") { h.events("program-kept").contains { $0["version"]?.stringValue == fixed } }
        #expect(h.events("program-kept").count == 2, "the kept copy is never copied again")
        #expect(h.events("update-rolled-back").count == 1, "no second rollback")
        #expect(chatCount(h, "crashed at start again and again") == 1)
    }

    @Test func killedRunnerLeavesNoBashJobTextInTheWrapperLog() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startWrapper()
        try h.waitHealthy()
        let pid = try #require(try h.status()["runner"]?["pid"]?.intValue)
        let runner = try #require(ProcessIdentity.of(pid: Int32(pid)))
        #expect(runner.signal(.kill))
        try h.waitUntil("a new runner") {
            guard let s = try? h.status(), let p = s["runner"]?["pid"]?.intValue else { return false }
            return p != pid && s["runner"]?["alive"]?.boolValue == true
        }
        let out = { String(decoding: FileManager.default.contents(atPath: h.dir + "/wrapper.out") ?? Data(), as: UTF8.self) }
        try h.waitUntil("the wrapper's own line") { out().contains("runner (pid \(pid)) was killed by signal 9 (SIGKILL)") }
        let text = out()
        #expect(!text.contains("Killed"), "bash job text in: \(text)")
        #expect(text.range(of: #"line [0-9]+: "#, options: .regularExpression) == nil, "bash job text in: \(text)")
    }

    private func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }

    /// The `exe` a process's PID file names (the program it runs from).
    private func exe(_ h: Harness, _ role: StateDirectory.Role) -> String? {
        guard case .ok(let v) = StateFile.read(h.dir + "/\(role.rawValue).json", kind: "process", as: JSONValue.self) else { return nil }
        return v["exe"]?.stringValue
    }

    private func chatCount(_ h: Harness, _ text: String) -> Int {
        let log = String(decoding: FileManager.default.contents(atPath: h.dir + "/chat.log") ?? Data(), as: UTF8.self)
        return log.components(separatedBy: text).count - 1
    }
}
