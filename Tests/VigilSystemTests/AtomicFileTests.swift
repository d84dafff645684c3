import Foundation
import Glibc
import Testing
import VigilSystem
import VigilTestSupport

@Suite("AtomicFile", .serialized, .timeLimit(.minutes(1)))
struct AtomicFileTests {
    @Test("Writes a new file and replaces it whole; no temp file is left")
    func writeAndReplace() throws {
        let dir = try TempDir()
        let path = dir.file("state.json")
        try AtomicFile.write(Data("one".utf8), to: path, mode: 0o600)
        #expect(readText(path) == "one")
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let firstInode = st.st_ino

        try AtomicFile.write(Data("two, longer than one".utf8), to: path, mode: 0o600)
        #expect(readText(path) == "two, longer than one")
        #expect(stat(path, &st) == 0 && st.st_ino != firstInode, "replaced by rename, not rewritten in place")
        try AtomicFile.write(Data(), to: path)
        #expect(readText(path) == "")
        let big = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try AtomicFile.write(big, to: path)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == big)
        #expect(dir.names() == ["state.json"])
    }

    @Test("Copies a file whole with the given mode; a missing source leaves nothing behind")
    func copy() throws {
        let dir = try TempDir()
        let big = Data((0..<3_000_001).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try big.write(to: URL(fileURLWithPath: dir.file("source")))
        try AtomicFile.copy(from: dir.file("source"), to: dir.file("copy"), mode: 0o700)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("copy"))) == big)
        var st = stat()
        #expect(stat(dir.file("copy"), &st) == 0 && st.st_mode & 0o777 == 0o700)
        let error = try #require(throws: SystemError.self) {
            try AtomicFile.copy(from: dir.file("absent"), to: dir.file("copy"), mode: 0o700)
        }
        #expect(error.call == "open" && error.errno == ENOENT)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.file("copy"))) == big, "the old copy is untouched")
        #expect(dir.names() == ["copy", "source"])
    }

    @Test("A failed rename removes the temp file and names the call")
    func renameFailureCleansUp() throws {
        let dir = try TempDir()
        // The target is a non-empty directory: the temp file is written, the rename fails.
        try #require(mkdir(dir.file("target"), 0o755) == 0)
        try AtomicFile.write(Data("inside".utf8), to: dir.file("target/keep"))
        let error = try #require(throws: SystemError.self) {
            try AtomicFile.write(Data("new".utf8), to: dir.file("target"))
        }
        #expect(error.call == "rename")
        #expect(error.subject == dir.file("target"))
        #expect(error.errno == EISDIR || error.errno == ENOTEMPTY || error.errno == EEXIST)
        #expect(dir.names() == ["target"], "no temp file left behind")
        #expect(readText(dir.file("target/keep")) == "inside")
    }

    @Test("Writing into a read-only directory throws a clear SystemError and leaves nothing")
    func readOnlyDirectory() throws {
        let dir = try TempDir()
        let sub = dir.file("ro")
        try #require(mkdir(sub, 0o755) == 0)
        try AtomicFile.write(Data("old".utf8), to: sub + "/f")
        try makeReadOnly(sub)
        defer { makeWritable(sub) }
        let error = try #require(throws: SystemError.self) {
            try AtomicFile.write(Data("new".utf8), to: sub + "/f")
        }
        #expect(error.call == "open")
        #expect([EACCES, EPERM, EROFS].contains(error.errno))
        #expect(error.subject.hasPrefix(sub + "/"))
        #expect(error.description.hasPrefix("open \(sub)/"))
        #expect(error.description.hasSuffix(": " + String(cString: strerror(error.errno))))
        #expect(!error.isNoSpace)
        makeWritable(sub)
        #expect((try? FileManager.default.contentsOfDirectory(atPath: sub)) == ["f"])
        #expect(readText(sub + "/f") == "old", "the old contents are untouched")
    }

    @Test("Writing into a missing directory throws ENOENT")
    func missingDirectory() throws {
        let dir = try TempDir()
        let error = try #require(throws: SystemError.self) {
            try AtomicFile.write(Data("x".utf8), to: dir.file("nope/f"))
        }
        #expect(error.errno == ENOENT && error.call == "open")
        #expect(error.description.contains("No such file or directory"))
    }

    @Test("sweepTemps removes the temp files of dead writers only")
    func sweep() throws {
        let dir = try TempDir()
        let live = try Child(["/bin/sleep", "1000"])
        let deadChild = try Child(["/bin/true"])
        try deadChild.wait()
        let dead = deadChild.pid
        let files = [
            ".state.json.tmp.\(dead).123",             // dead writer: removed
            ".other.tmp.\(dead).9",                    // dead writer: removed
            ".state.json.tmp.garbage.1",               // no PID: nobody can be writing it: removed
            ".state.json.tmp.\(live.pid).456",         // live writer: kept
            ".heal.json.tmp.1.7",                      // PID 1 is alive: kept
            "state.json",                              // not a temp file
            "note.tmp.\(dead).1",                      // temp files start with a dot
            ".hidden",                                 // no marker
        ]
        for f in files { try Data("x".utf8).write(to: URL(fileURLWithPath: dir.file(f))) }
        #expect(AtomicFile.sweepTemps(in: dir.path) == 3)
        #expect(dir.names() == [".heal.json.tmp.1.7", ".hidden", ".state.json.tmp.\(live.pid).456", "note.tmp.\(dead).1", "state.json"])
        #expect(AtomicFile.sweepTemps(in: dir.path) == 0)
        #expect(AtomicFile.sweepTemps(in: dir.file("missing")) == 0)
        live.killAndReap()
        #expect(AtomicFile.sweepTemps(in: dir.path) == 1)
    }

    @Test("remove is durable and accepts an absent file; makeDirectory creates parents")
    func removeAndMakeDirectory() throws {
        let dir = try TempDir()
        try AtomicFile.write(Data("x".utf8), to: dir.file("f"))
        try AtomicFile.remove(dir.file("f"))
        try AtomicFile.remove(dir.file("f"))
        #expect(dir.names().isEmpty)
        try AtomicFile.makeDirectory(dir.file("a/b/c"))
        try AtomicFile.makeDirectory(dir.file("a/b/c"))
        var st = stat()
        #expect(stat(dir.file("a/b/c"), &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
        try AtomicFile.write(Data("x".utf8), to: dir.file("file"))
        let error = try #require(throws: SystemError.self) { try AtomicFile.makeDirectory(dir.file("file")) }
        #expect(error.errno == ENOTDIR)
    }
}
