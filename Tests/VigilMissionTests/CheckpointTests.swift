import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Checkpoints (docs/missions.md, "Checkpoints"): saved from inside a mission with the real
/// `vigil checkpoint save`, handed to the next attempt as `VIGIL_CHECKPOINT`.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct CheckpointTests {
    /// An agent that saves its progress, then dies with its shim: the next attempt resumes.
    @Test func anAgentKilledMidWorkResumesFromItsCheckpoint() throws {
        let env = try MissionEnv("ckpt-resume")
        defer { env.finish() }
        let script = """
            if [ -n "$VIGIL_CHECKPOINT" ]; then echo "resumed:$(cat "$VIGIL_CHECKPOINT") attempt $VIGIL_MISSION_ATTEMPT"; exit 0; fi
            echo progress-1 > "$VIGIL_MISSION_SCRATCH/p"
            n=$("$0" checkpoint save "$VIGIL_MISSION_SCRATCH/p") || exit 9
            echo "saved checkpoint $n"
            # Output goes through the shim's pipe: wait until it is in the file before killing it.
            while ! grep -q "saved checkpoint" "$VIGIL_MISSION_SCRATCH/../output.log"; do sleep 0.01; done
            kill -9 $PPID
            sleep 300
            """
        let id = try env.add(["sh", "-c", script, vigilPath])
        try env.startDriver()
        try waitUntil("the mission to end") { try env.mission(id).state.isFinal }
        let m = try env.mission(id)
        let out = readText(MissionPaths(stateDir: env.state, id: id).output)
        #expect(m.state == .done, "\(m.state) \(m.reason ?? ""): \(out)")
        #expect(m.attempts == 2)
        #expect(out.contains("saved checkpoint 1"), "\(out)")
        #expect(out.contains("resumed:progress-1 attempt 2"), "\(out)")
        #expect(out.contains("resuming from checkpoint 1 (saved by attempt 1)"), "\(out)")
        let show = try env.vigil(["mission", "show", "\(id)"])
        #expect(show.out.contains("checkpoint 1: 11 bytes, attempt 1"), "\(show.out)")
        #expect(try env.vigil(["mission", "show", "\(id)", "--json"]).out.contains(#""checkpoints":[{"#))
    }

    @Test func aCorruptNewestIsQuarantinedAndThePreviousUsed() throws {
        let env = try MissionEnv("ckpt-corrupt")
        defer { env.finish() }
        try AtomicFile.makeDirectory(MissionPaths(stateDir: env.state, id: 7).directory)
        let store = CheckpointStore(stateDir: env.state, mission: 7)
        let src = env.path("src")
        for i in 1...7 {
            try Data("state \(i)\n".utf8).write(to: URL(fileURLWithPath: src))
            #expect(try store.save(from: src, attempt: 1).seq == i)
        }
        #expect(store.list().map(\.seq) == [3, 4, 5, 6, 7], "the newest five are kept")
        #expect(store.list().allSatisfy { $0.problem == nil })
        // Flip a byte of the newest, and cut the one before it short.
        let newest = store.list().last!.data
        var bytes = try Data(contentsOf: URL(fileURLWithPath: newest))
        bytes[0] ^= 0x20
        try bytes.write(to: URL(fileURLWithPath: newest))
        try Data("st".utf8).write(to: URL(fileURLWithPath: store.list()[3].data))
        let files = StateFiles(dir: env.state, journal: Journal(path: env.state.journal, source: "test"))
        let used = try #require(store.newestValid(files: files))
        #expect(used.seq == 5 && readText(used.data) == "state 5\n")
        #expect(store.list().map(\.seq) == [3, 4, 5], "the corrupt ones were moved aside")
        let q = env.events("quarantined")
        #expect(q.count == 4, "meta and data of both: \(q)")
        #expect(q.contains { ($0["reason"]?.stringValue ?? "").contains("checksum mismatch") })
        // A save killed before its commit point: data without meta is not a checkpoint and the
        // next save removes it.
        try Data("half".utf8).write(to: URL(fileURLWithPath: store.directory + "/6.data"))
        #expect(store.newestValid(files: files)?.seq == 5)
        #expect(try store.save(from: src, attempt: 2).seq == 7)
        #expect(!FileManager.default.fileExists(atPath: store.directory + "/6.data"))
    }

    @Test func saveOutsideAMissionOrOfAFifoIsAClearError() throws {
        let env = try MissionEnv("ckpt-errors")
        defer { env.finish() }
        let outside = try env.vigil(["checkpoint", "save", "/etc/hostname"], env: ["VIGIL_MISSION_ID": ""])
        #expect(outside.code == 2 && outside.err.contains("inside a mission"), "\(outside.err)")
        try AtomicFile.makeDirectory(MissionPaths(stateDir: env.state, id: 3).directory)
        let fifo = env.path("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        let r = try env.vigil(["checkpoint", "save", fifo], env: ["VIGIL_MISSION_ID": "3", "VIGIL_MISSION_ATTEMPT": "1"])
        #expect(r.code == 1 && r.err.contains("FIFO"), "\(r.err)")
        let none = try env.vigil(["checkpoint", "save", "/etc/hostname"], env: ["VIGIL_MISSION_ID": "4"])
        #expect(none.code == 1 && none.err.contains("no directory"), "\(none.err)")
    }
}

/// Checkpoint retention: removed once the mission ended more than 7 days ago, kept before.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct CheckpointRetentionTests {
    @Test func checkpointsOfMissionsThatEndedLongAgoAreRemoved() throws {
        let env = try MissionEnv("ckpt-retention")
        defer { env.finish() }
        let old = try env.add(["true"])
        let recent = try env.add(["true"])
        let driver = try env.startDriver()
        try waitUntil("both to end") { try env.mission(old).state.isFinal && env.mission(recent).state.isFinal }
        env.stop(driver)
        let src = env.path("src")
        try Data("x".utf8).write(to: URL(fileURLWithPath: src))
        for id in [old, recent] { _ = try CheckpointStore(stateDir: env.state, mission: id).save(from: src, attempt: 1) }
        let eightDaysAgo = Date().timeIntervalSince1970 - 8 * 86400
        try env.queue.db.execute("UPDATE missions SET finished_at = ? WHERE id = ?", [.double(eightDaysAgo), .int(old)])
        try env.startDriver()
        // The files go first, then the entry is journaled: wait for the entry.
        try waitUntil("the old mission's checkpoints removed and journaled") { !env.events("mission-checkpoints-removed").isEmpty }
        #expect(CheckpointStore(stateDir: env.state, mission: old).list().isEmpty)
        #expect(CheckpointStore(stateDir: env.state, mission: recent).list().count == 1, "kept: it ended just now")
        // The directory goes first, then its parent is fsynced, then the removal is journaled.
        try waitUntil("the removal to be journaled") { !env.events("mission-checkpoints-removed").isEmpty }
        #expect(env.events("mission-checkpoints-removed").map { $0["mission"]?.intValue } == [old])
    }
}
