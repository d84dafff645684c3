import Foundation
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// The runner's scheduled self-checks with the real pair (docs/operator-guide.md,
/// "Self-checks"): a WAL grown past the limit fails the database check; after three failures
/// in a row the runner runs the safe repair (a checkpoint), says so in chat once, and says
/// once more when the check passes again; a check without a repair tells a person once.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct SelfCheckTests {
    func chat(_ h: Harness) -> String { (try? String(contentsOfFile: h.dir + "/chat.log", encoding: .utf8)) ?? "" }

    @Test func aGrownWALIsCheckpointedAfterThreeFailuresAndChatHearsOnce() throws {
        let h = Harness()
        defer { h.finish() }
        h.write("vigil.json", #"{"self-checks": {"database": "0.3s", "disk": "off", "memory": "off", "outbox": "off", "workspaces": "off", "max-wal": "1MiB"}}"#)
        try h.startRunner()
        try h.waitHealthy()
        // Grow the WAL past 1 MiB for real (the pair keeps the database open, so it stays).
        let db = try Database(path: h.dir + "/vigil.db")
        try db.execute("CREATE TABLE IF NOT EXISTS self_check_test(b BLOB)")
        try db.write { for _ in 0..<48 { try db.execute("INSERT INTO self_check_test(b) VALUES (zeroblob(65536))") } }
        let wal = h.dir + "/vigil.db-wal"
        #expect((FileStatus.at(wal)?.size ?? 0) > 1 << 20, "WAL \(FileStatus.at(wal)?.size ?? 0) bytes")
        try h.waitUntil("the repair and its message", timeout: 60) { chat(h).contains("Self-check database failed 3 times in a row") }
        #expect(chat(h).contains("Safe repair (vigil doctor --fix): repaired"), "\(chat(h))")
        let repaired = h.events("self-check-repaired")
        #expect(repaired.count == 1 && repaired.first?["failures"]?.intValue == 3, "\(repaired)")
        #expect((FileStatus.at(wal)?.size ?? 0) < 1 << 20, "checkpointed (TRUNCATE)")
        try h.waitUntil("the check to pass again and chat to hear it", timeout: 60) { chat(h).contains("Self-check database passes again.") }
        #expect(chat(h).components(separatedBy: "Self-check database failed").count == 2, "told once")
        #expect(h.events("self-check-failed").count == 1 && h.events("self-check-passed").count == 1)
        let state = try #require(FileManager.default.contents(atPath: h.dir + "/selfchecks.json"))
        #expect(String(decoding: state, as: UTF8.self).contains("\"database\""))
    }

    @Test func aCheckWithoutARepairTellsAPersonOnce() throws {
        let h = Harness()
        defer { h.finish() }
        // No file system has this much free: the disk check fails every time.
        h.write("vigil.json", #"{"self-checks": {"disk": "0.2s", "database": "off", "memory": "off", "outbox": "off", "workspaces": "off", "min-free": "100000GiB"}}"#)
        try h.startRunner()
        try h.waitHealthy()
        try h.waitUntil("the message to a person", timeout: 60) { chat(h).contains("Self-check disk failed 3 times in a row") }
        #expect(chat(h).contains("It needs a person"))
        let failedBefore = h.events("self-check-failed").count
        try h.waitUntil("more failing runs", timeout: 60) {
            (try? String(contentsOfFile: h.dir + "/selfchecks.json", encoding: .utf8))?.contains("\"failures_in_a_row\":6") == true
        }
        #expect(chat(h).components(separatedBy: "Self-check disk failed").count == 2, "told once, not at every failure")
        #expect(h.events("self-check-repaired").isEmpty && h.events("self-check-failed").count == failedBefore)
    }

    @Test func badSelfCheckConfigurationIsRefused() throws {
        let h = Harness()
        defer { h.finish() }
        for bad in [#"{"self-checks": {"dsik": "1m"}}"#, #"{"self-checks": "often"}"#, #"{"self-checks": {"disk": "0"}}"#, #"{"self-checks": {"max-wal": "big"}}"#] {
            h.write("vigil.json", bad)
            let r = try h.vigil(["runner", "--tick", "0.1"])
            #expect(r.code == 2 && r.err.contains("self-checks"), "\(bad): \(r.code) \(r.err)")
        }
    }
}
