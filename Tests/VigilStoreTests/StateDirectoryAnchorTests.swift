import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// The pinned state directory (docs/operator-guide.md, "The state directory removed or
/// replaced"): what `check()` says for a directory left alone, removed, renamed away and
/// replaced; the journal through the pinned descriptor; the handed token; creating inside a
/// state directory never re-creates it.
@Suite struct StateDirectoryAnchorTests {
    @Test func aDirectoryLeftAloneIsOurs() throws {
        let t = try TempDir()
        let anchor = try StateDirectoryAnchor(StateDirectory(t.path))
        #expect(anchor.check() == nil)
        try put(Data("x".utf8), at: t.file("a"))
        #expect(anchor.check() == nil, "its contents changing is no loss")
        #expect(StateDirectoryAnchor.verify(StateDirectory(t.path), token: anchor.token) == nil)
    }

    @Test func removedIsRemovedAndStaysSo() throws {
        let t = try TempDir()
        let dir = StateDirectory(t.path + "/state")
        try AtomicFile.makeDirectory(dir.path)
        let anchor = try StateDirectoryAnchor(dir)
        let token = anchor.token
        try FileManager.default.removeItem(atPath: dir.path)
        guard case .removed(let why)? = anchor.check() else { Issue.record("not removed: \(String(describing: anchor.check()))"); return }
        #expect(why.contains("deleted"))
        try AtomicFile.makeDirectory(dir.path)
        #expect(anchor.check()?.kind == "removed", "a loss is final")
        #expect(StateDirectoryAnchor.verify(dir, token: token) == .replaced)
        // Nothing reaches the removed directory through the pinned path.
        #expect(!Journal(path: anchor.pinnedPath("journal.jsonl"), source: "test").append("x"))
        #expect(!FileManager.default.fileExists(atPath: dir.journal))
    }

    @Test func renamedAwayAndReplacedIsReplacedAndTheOldOneStillReachable() throws {
        let t = try TempDir()
        let dir = StateDirectory(t.path + "/state")
        try AtomicFile.makeDirectory(dir.path)
        let anchor = try StateDirectoryAnchor(dir)
        #expect(rename(dir.path, t.path + "/old") == 0)
        #expect(mkdir(dir.path, 0o700) == 0)
        #expect(anchor.check() == .replaced)
        #expect(Journal(path: anchor.pinnedPath("journal.jsonl"), source: "test").append("state-dir-lost", ["k": "v"]))
        #expect(Journal.read(path: t.path + "/old/journal.jsonl").entries.map { $0["event"]?.stringValue } == ["state-dir-lost"])
        #expect(t.names("state").isEmpty, "nothing written into the new directory")
    }

    @Test func makingASubdirectoryNeverRecreatesTheStateDirectory() throws {
        let t = try TempDir()
        let dir = StateDirectory(t.path + "/state")
        try AtomicFile.makeDirectory(dir.path)
        try dir.makeDirectory(dir.file("chat/deeper"))
        #expect(FileManager.default.fileExists(atPath: dir.file("chat/deeper")))
        try FileManager.default.removeItem(atPath: dir.path)
        #expect(throws: SystemError.self) { try dir.makeDirectory(dir.file("chat")) }
        #expect(!FileManager.default.fileExists(atPath: dir.path))
    }

    /// A process started for one directory prepares it with `create: false`: removed between
    /// the runner's check and the new process's start, it is not made again.
    @Test func preparingWithoutCreateNeverMakesTheStateDirectory() throws {
        let t = try TempDir()
        let dir = StateDirectory(t.path + "/state")
        #expect(throws: StateDirectoryError.self) { try dir.prepare(create: false) }
        #expect(!FileManager.default.fileExists(atPath: dir.path))
        try dir.prepare()
        try dir.prepare(create: false)
        #expect(FileManager.default.fileExists(atPath: dir.path))
    }

    @Test func processIdentityTokenRoundTrips() {
        let me = ProcessIdentity.current
        #expect(ProcessIdentity(token: me.token) == me)
        for bad in ["", "12", "12:", ":5", "x:5", "-3:5", "1:2:3"] { #expect(ProcessIdentity(token: bad) == nil, "\(bad)") }
    }
}
