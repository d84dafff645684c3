import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil backup` and `vigil restore` (docs/operator-guide.md, "Backup and restore") on a real
/// pair: online backup, restore refused while the pair runs, mission directories kept.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct BackupTests {
    func missionCount(_ h: Harness) throws -> Int {
        let r = try h.vigil(["mission", "list", "--json"])
        guard case .array(let a)? = JSONValue.parse(Data(r.out.utf8)) else { return -1 }
        return a.count
    }

    @Test func backupWhileRunningRestoreOnlyStoppedKeepingMissionDirectories() throws {
        let h = Harness()
        defer { h.finish() }
        let runner = try h.startRunner()
        try h.waitHealthy()
        for _ in 0..<3 { #expect(try h.vigil(["mission", "add", "--", "true"]).code == 0) }
        let file = h.dir + "/../backup-\(getpid()).db"
        defer { unlink(file) }
        let b = try h.vigil(["backup", file])
        #expect(b.code == 0 && b.out.contains("3 missions"), "\(b.out) \(b.err)")
        var st = stat()
        #expect(stat(file, &st) == 0 && st.st_mode & 0o777 == 0o600, "the backup is private")
        #expect(try h.vigil(["backup", file]).code == 1, "an existing file is not replaced without --force")
        for _ in 0..<2 { #expect(try h.vigil(["mission", "add", "--", "true"]).code == 0) }
        try h.waitUntil("missions 4 and 5 to have run") {
            FileManager.default.fileExists(atPath: h.dir + "/missions/5/result")
        }
        let refused = try h.vigil(["restore", file])
        #expect(refused.code == 3 && refused.err.contains("stop the pair"), "\(refused.err)")
        #expect(try missionCount(h) == 5, "nothing changed")
        #expect(try h.vigil(["stop"]).code == 0)
        _ = try h.waitExit(runner)
        let r = try h.vigil(["restore", file])
        #expect(r.code == 0 && r.out.contains("3 missions"), "\(r.out) \(r.err)")
        #expect(try missionCount(h) == 3)
        #expect(h.events("db-restored").count == 1)
        #expect(FileManager.default.fileExists(atPath: h.dir + "/missions/5/result"), "restore keeps every mission directory")
        let before = try FileManager.default.contentsOfDirectory(atPath: h.dir).filter { $0.hasPrefix("vigil.db.before-restore.") }
        #expect(before.count == 1)
        if let name = before.first {
            let old = try Database(path: h.dir + "/" + name, busyTimeout: 1, migrate: false)
            #expect(try old.scalarInt("SELECT count(*) FROM missions") == 5, "the database as it was is kept")
        }
    }

    @Test func garbageIsNotRestored() throws {
        let h = Harness()
        defer { h.finish() }
        #expect(try h.vigil(["mission", "add", "--", "true"]).code == 0)
        let junk = h.dir + "/../junk-\(getpid()).db"
        defer { unlink(junk) }
        try Data("not a database at all, just some bytes".utf8).write(to: URL(fileURLWithPath: junk))
        let r = try h.vigil(["restore", junk])
        #expect(r.code == 1 && r.err.contains("not a usable database"), "\(r.err)")
        #expect(try missionCount(h) == 1, "the database is unchanged")
        #expect(try h.vigil(["restore", "/nonexistent/x.db"]).code == 1)
    }
}
