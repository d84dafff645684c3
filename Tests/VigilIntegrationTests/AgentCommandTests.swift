import Foundation
import Testing
import VigilCore
import VigilSystem
import VigilTestSupport

/// `/mission TEXT` reads `agent-command` from vigil.json as it is when the command arrives
/// (docs/operator-guide.md, "Configuration"): setting it needs no bridge restart, and a broken file queues nothing.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct AgentCommandTests {
    @Test func anAgentCommandSetWhileTheBridgeRunsIsUsedAtOnce() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner()
        let bridge = try h.waitHealthy()
        let before = try h.vigil(["say", "--wait", "20s", "mission", "fix the tests"])
        #expect(before.out.contains("No agent command is configured"), "\(before.out) \(before.err)")
        h.write("vigil.json", #"{"agent-command": ["echo", "agent:"]}"#)
        let after = try h.vigil(["say", "--wait", "20s", "mission", "fix the tests"])
        #expect(after.out.lowercased().contains("mission 1"), "\(after.out) \(after.err)")
        try h.waitUntil("mission 1 to run") { (try? String(contentsOfFile: h.dir + "/missions/1/output.log", encoding: .utf8))?.contains("agent: fix the tests") == true }
        try h.waitUntil("mission 1 to be done") { (try? h.vigil(["mission", "show", "1", "--json"]))?.out.contains(#""state":"done""#) == true }
        #expect(try h.vigil(["mission", "show", "1", "--json"]).out.contains(#""queued_by":"chat console""#))
        try h.waitUntil("the end notice to name who queued it") {
            ((try? String(contentsOfFile: h.dir + "/chat.log", encoding: .utf8)) ?? "").contains("Mission 1 (queued by console) done")
        }
        let show = try h.vigil(["say", "--wait", "20s", "show", "1"])
        #expect(show.out.contains("#1 done") && show.out.contains("agent: fix the tests"), "\(show.out) \(show.err)")
        #expect(try h.vigil(["say", "--wait", "20s", "show", "99"]).out.contains("There is no mission 99"))
        h.write("vigil.json", #"{"agent-command": "not an argv"}"#)
        let broken = try h.vigil(["say", "--wait", "20s", "mission", "again"])
        #expect(broken.out.contains("Nothing queued"), "\(broken.out) \(broken.err)")
        #expect(try h.waitHealthy().pid == bridge.pid, "the same bridge answered all three")
        h.write("vigil.json", "{}")
    }
}
