import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Missions end to end with the real binary. One serialized suite (the tests spawn processes
/// and share 2 cores); each test has its own temp state dir and leaves no process behind.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct MissionTests {
    // MARK: - Commands

    @Test func addListShowAndRunLiterally() throws {
        let env = try MissionEnv("basics")
        defer { env.finish() }
        let hostile = ["; rm -rf ~", "$(touch \(env.path("pwned")))", "a|b && c", "`id`", "*", "'\"", "--help"]
        let id = try env.add(["printf", "%s\\n"] + hostile)
        let waiter = try env.add(["sh", "-c", "echo one; sleep 0.2; echo two"], lock: "repo")
        let missing = try env.add(["/nonexistent/program", "x"])
        // No runner yet: queued (exit 0, id on stdout), with a note on stderr.
        let early = try env.vigil(["mission", "add", "--", "true"])
        #expect(early.code == 0 && early.err.contains("no runner is running") && Int64(early.out.trimmingCharacters(in: .whitespacesAndNewlines)) != nil,
                "\(early.out) \(early.err)")

        let list = try env.vigil(["mission", "list", "--json"])
        #expect(list.code == 0)
        guard case .array(let items)? = JSONValue.parse(Data(list.out.utf8)) else {
            Issue.record("mission list --json is not an array: \(list.out)")
            return
        }
        #expect(items.count == 4)
        let first = try #require(items.first)
        #expect(first["id"]?.intValue == id)
        #expect(first["state"]?.stringValue == "pending")
        #expect(first["attempts"]?.intValue == 0)
        #expect(first["exit_code"] == .null)
        #expect(first["lock"] == .null)
        #expect(first["output"]?.stringValue == MissionPaths(stateDir: env.state, id: id).output)
        #expect(items[1]["lock"]?.stringValue == "repo")

        try env.startDriver()
        try waitUntil("all three missions to end") { try [id, waiter, missing].allSatisfy { try env.mission($0).state.isFinal } }

        let m = try env.mission(id)
        #expect(m.state == .done && m.exitCode == 0 && m.attempts == 1)
        #expect(readText(MissionPaths(stateDir: env.state, id: id).output) == hostile.map { $0 + "\n" }.joined())
        #expect(!FileManager.default.fileExists(atPath: env.path("pwned")))

        let missed = try env.mission(missing)
        #expect(missed.state == .failed && missed.exitCode == 127)
        #expect(missed.reason?.contains("/nonexistent/program") == true)

        let show = try env.vigil(["mission", "show", "\(waiter)"])
        #expect(show.code == 0)
        #expect(show.out.contains("state:     done"))
        #expect(show.out.contains("exit:      0"))
        #expect(show.out.hasSuffix("one\ntwo\n"))

        let follow = try env.add(["sh", "-c", "echo start; sleep 0.4; echo end"])
        let followed = try env.vigil(["mission", "show", "\(follow)", "--follow"])
        #expect(followed.code == 0)
        #expect(followed.out.hasSuffix("start\nend\n"))
        #expect(try env.mission(follow).state == .done)
    }

    @Test func helpAndErrors() throws {
        let env = try MissionEnv("errors")
        defer { env.finish() }
        for sub in ["add", "list", "show", "cancel"] {
            let r = try env.vigil(["mission", sub, "--help"])
            #expect(r.code == 0 && r.out.contains("vigil mission \(sub)"), "--help of \(sub)")
        }
        let noCommand = try env.vigil(["mission", "add"])
        #expect(noCommand.code == 2 && noCommand.err.contains("needs a command after --"))
        let unknown = try env.vigil(["mission", "show", "42"])
        #expect(unknown.code == 1 && unknown.err.contains("no mission 42"))
        let badID = try env.vigil(["mission", "cancel", "abc"])
        #expect(badID.code == 2 && badID.err.contains("not a mission id"))
        let badAttempts = try env.vigil(["mission", "add", "--max-attempts", "0", "--", "true"])
        #expect(badAttempts.code == 2 && badAttempts.err.contains("--max-attempts"))
        let id = try env.add(["true"])
        try env.startDriver()
        try waitUntil("the mission to end") { try env.mission(id).state == .done }
        let late = try env.vigil(["mission", "cancel", "\(id)"])
        #expect(late.code == 1 && late.err.contains("already ended (done)"))
    }

    // MARK: - Cancel

    @Test func cancelPendingRunningAndStubborn() throws {
        let env = try MissionEnv("cancel")
        defer { env.finish() }
        let pending = try env.add(["true"])
        let r = try env.vigil(["mission", "cancel", "\(pending)"])
        #expect(r.code == 0 && r.out.contains("cancelled"))
        #expect(try env.mission(pending).state == .cancelled)

        let polite = try env.add(["sleep", "30"])
        let stubborn = try env.add(["sh", "-c", "trap '' TERM; echo ready; sleep 30"])
        try env.startDriver(maxParallel: 2, termGrace: "0.3")
        try waitUntil("both to run") { try env.mission(polite).shim != nil && env.mission(stubborn).shim != nil }
        try waitUntil("the stubborn mission to be ready") { readText(MissionPaths(stateDir: env.state, id: stubborn).output).contains("ready") }
        #expect(try env.vigil(["mission", "cancel", "\(polite)"]).code == 0)
        #expect(try env.vigil(["mission", "cancel", "\(stubborn)"]).code == 0)
        try waitUntil("both cancelled") { try env.mission(polite).state == .cancelled && env.mission(stubborn).state == .cancelled }
        #expect(try env.mission(polite).exitCode == 143)
        #expect(try env.mission(polite).signal == SIGTERM)
        #expect(try env.mission(stubborn).exitCode == 137)
        #expect(try env.mission(stubborn).signal == SIGKILL)
    }

    /// Crash point 8: the runner dies between SIGTERM and SIGKILL of a cancel.
    @Test func cancelSurvivesRunnerKill() throws {
        let env = try MissionEnv("cancel-kill")
        defer { env.finish() }
        let id = try env.add(["sh", "-c", "trap '' TERM; echo ready; sleep 30"])
        let driver = try env.startDriver(termGrace: "1")
        try waitUntil("it to run") { readText(MissionPaths(stateDir: env.state, id: id).output).contains("ready") }
        #expect(try env.vigil(["mission", "cancel", "\(id)"]).code == 0)
        try waitUntil("SIGTERM sent") { env.events("mission-cancel").contains { $0["signal"]?.stringValue == "SIGTERM" } }
        env.kill9(driver)
        try env.startDriver(termGrace: "1")
        try waitUntil("cancelled") { try env.mission(id).state == .cancelled }
        #expect(try env.mission(id).exitCode == 137)
        #expect(try env.mission(id).attempts == 1)
    }
}
