import Foundation
import Testing
import VigilCore
import VigilSystem
import VigilTestSupport

/// The runner's part of the workspaces with the real pair (docs/workspaces.md, "Anomalies and
/// auto-recover"): its pass after start-up recovery repairs a slot damaged while nothing ran,
/// tells chat once, and passes that find nothing (or the same) tell chat nothing.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct WorkspacePairTests {
    @Test func theRunnersPassRepairsADamagedSlotAndTellsChatOnce() throws {
        let h = Harness()
        defer { h.finish() }
        let origin = try TempDir("vigil-ws-origin")
        _ = try GitFixture.makeBareRepo(at: origin.file("app.git"), files: 4)
        let added = try h.vigil(["workspace", "add-repo", "app", origin.file("app.git")])
        #expect(added.code == 0, "\(added.out) \(added.err)")
        // Damaged while no runner ran.
        try FileManager.default.removeItem(atPath: h.dir + "/workspaces/app/1/.git/HEAD")
        try h.startRunner(Harness.fast + ["--workspace-check-interval", "0.3"])
        try h.waitHealthy()
        let chatLog = h.dir + "/chat.log"
        func said() -> Int {
            ((try? String(contentsOfFile: chatLog, encoding: .utf8)) ?? "").components(separatedBy: "Workspaces: auto-recover found").count - 1
        }
        try h.waitUntil("the pass to repair the slot and say so in chat", timeout: 60) { said() == 1 }
        #expect(((try? String(contentsOfFile: chatLog, encoding: .utf8)) ?? "").contains("was damaged (HEAD is unreadable"))
        let list = try h.vigil(["workspace", "list", "--json"])
        #expect(list.out.contains(#""state":"available""#), "\(list.out)")
        // More passes, nothing found: journaled, not said again.
        let passes = h.events("workspace-auto-recovered").count
        try h.waitUntil("three more passes", timeout: 60) { h.events("workspace-auto-recovered").count >= passes + 3 }
        #expect(said() == 1, "a pass that found nothing told chat")
        #expect(h.events("workspace-auto-recovered").allSatisfy { $0["by"]?.stringValue == "runner" })
        // A mission runs in the repaired slot.
        let add = try h.vigil(["mission", "add", "--workspace", "app", "--", "sh", "-c", "pwd; git rev-parse --abbrev-ref HEAD"])
        let id = add.out.trimmingCharacters(in: .whitespacesAndNewlines)
        try h.waitUntil("the mission to be done", timeout: 60) {
            (try? h.vigil(["mission", "show", id, "--json"]))?.out.contains(#""state":"done""#) == true
        }
        let output = (try? String(contentsOfFile: h.dir + "/missions/\(id)/output.log", encoding: .utf8)) ?? ""
        #expect(output.contains(h.dir + "/workspaces/app/1") && output.contains("main"), "\(output)")
    }
}
