import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Journal rotation by size (docs/architecture.md, "Journal rotation"): files, order, CRCs,
/// readers across files. Writers in several processes rotating at once: JournalRuntimeTests
/// (real `vigil` processes; an exit test here would share swift-testing's exit-test monitor,
/// which spins while another test's child is an unreaped zombie).
@Suite("Journal rotation", .serialized, .timeLimit(.minutes(2)))
struct JournalRotationTests {
    func size(_ path: String) -> Int? {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : nil
    }

    func inode(_ path: String) -> UInt64? {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    @Test("A journal whose whole directory was moved away is not re-created in the directory that now has the name")
    func directoryMovedAwayIsNotRecreated() throws {
        let dir = try TempDir.make("vigil-journal-moved")
        defer { try? FileManager.default.removeItem(atPath: dir + ".old"); try? FileManager.default.removeItem(atPath: dir) }
        let journal = Journal(path: dir + "/journal.jsonl", source: "test")
        #expect(journal.append(.runnerStarted, ["n": 1]))
        #expect(rename(dir, dir + ".old") == 0)
        #expect(mkdir(dir, 0o700) == 0)
        _ = journal.append(.runnerStarted, ["n": 2])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "written into the new directory")
        let kept = Journal.read(path: dir + ".old/journal.jsonl").entries.compactMap { $0["n"]?.intValue }
        #expect(kept == [1, 2], "the entries stay with the directory they were written in")
        // The file alone renamed away in a directory that stayed (a rotation by another writer):
        // a new file is opened at the path, as before.
        let other = Journal(path: dir + ".old/journal.jsonl", source: "test")
        #expect(other.append(.runnerStarted, ["n": 3]))
        #expect(rename(dir + ".old/journal.jsonl", dir + ".old/journal.jsonl.1") == 0)
        #expect(other.append(.runnerStarted, ["n": 4]))
        #expect(Journal.read(path: dir + ".old/journal.jsonl").entries.compactMap { $0["n"]?.intValue } == [4])
    }

    @Test("Past max bytes the file becomes .1 (.1 becomes .2 …), the oldest beyond keep is deleted; every line keeps its CRC, in order")
    func rotatesAndKeeps() throws {
        let dir = try TempDir()
        let path = dir.file("journal.jsonl")
        let j = Journal(path: path, source: "runner", rotation: .init(maxBytes: 4096, keep: 3))
        for i in 0..<300 { #expect(j.append("line", ["i": .int(Int64(i)), "pad": .string(String(repeating: "x", count: 60))])) }
        #expect(size(path + ".1") != nil && size(path + ".2") != nil && size(path + ".3") != nil)
        #expect(size(path + ".4") == nil, "keep 3: older files are deleted")
        for name in [path, path + ".1", path + ".2", path + ".3"] {
            let r = Journal.read(path: name)
            #expect(r.skipped == 0 && !r.entries.isEmpty, "\(name): every line whole with its CRC")
            // A file is rotated by the record that took it past the limit.
            #expect((size(name) ?? 0) <= 4096 + 200, "\(name) is \(size(name) ?? 0) bytes")
        }
        let all = Journal.readAll(path: path)
        let ids = all.entries.compactMap { $0["i"]?.intValue }
        #expect(all.skipped == 0)
        #expect(ids.last == 299)
        #expect(ids == Array((300 - Int64(ids.count))..<300), "the newest lines, oldest file first, none missing in between")
        #expect(Journal.readLast(path: path, count: 50).compactMap { $0["i"]?.intValue } == Array(250..<300))
        // --since: files last written before the cutoff are not read.
        #expect(Journal.readAll(path: path, modifiedSince: Date().addingTimeInterval(3600)).entries.count == Journal.read(path: path).entries.count)
    }

    @Test("A follower's cursor carries across rotations: the rest of its old file, then the new ones, nothing twice")
    func followAcrossRotation() throws {
        let dir = try TempDir()
        let path = dir.file("journal.jsonl")
        let j = Journal(path: path, source: "runner", rotation: .init(maxBytes: 2048, keep: 5))
        for i in 0..<5 { j.append("line", ["i": .int(Int64(i))]) }
        let first = Journal.readAll(path: path)
        #expect(first.entries.count == 5)
        let cursor = try #require(first.cursor)
        // Enough for two rotations.
        var i = 5
        let start = inode(path)
        while size(path + ".2") == nil || inode(path + ".2") != start {
            j.append("line", ["i": .int(Int64(i)), "pad": .string(String(repeating: "y", count: 100))])
            i += 1
            try #require(i < 1000)
        }
        let next = Journal.readAll(path: path, after: cursor)
        #expect(next.entries.compactMap { $0["i"]?.intValue } == Array(5..<Int64(i)))
        let none = Journal.readAll(path: path, after: next.cursor)
        #expect(none.entries.isEmpty)
        j.append("line", ["i": .int(Int64(i))])
        #expect(Journal.readAll(path: path, after: none.cursor).entries.compactMap { $0["i"]?.intValue } == [Int64(i)])
    }

    @Test("A writer without a rotation (a CLI command) never rotates, but follows a rotation by another writer")
    func plainWriterFollows() throws {
        let dir = try TempDir()
        let path = dir.file("journal.jsonl")
        let cli = Journal(path: path, source: "cli")
        let runner = Journal(path: path, source: "runner", rotation: .init(maxBytes: 1024, keep: 3))
        for i in 0..<40 { cli.append("cli", ["i": .int(Int64(i))]) }
        #expect(size(path + ".1") == nil, "the CLI writer does not rotate")
        runner.append("runner") // past the limit: rotates
        #expect(size(path + ".1") != nil)
        cli.append("after") // its descriptor is the renamed file: it must reopen
        #expect(Journal.read(path: path).entries.map { $0["event"] } == ["after"])
        #expect(Journal.readAll(path: path).entries.count == 42)
        // A sink is never rotated.
        let sink = Journal(path: "/dev/null", source: "status", rotation: .init(maxBytes: 1, keep: 1))
        #expect(sink.append("x") && sink.append("y"))
    }

    @Test("A writer stopped while holding the lock does not stop the others: after a bounded wait the record is written without it")
    func stoppedHolderDoesNotBlock() throws {
        let dir = try TempDir()
        let path = dir.file("journal.jsonl")
        let j = Journal(path: path, source: "runner", rotation: .init(maxBytes: 512, keep: 3))
        #expect(j.append("first"))
        // The lock an appender takes, held as by a process stopped mid-append.
        let holder = try #require(try FileLock.tryLock(path))
        let start = Clock.boot()
        for i in 0..<10 { #expect(j.append("while-held", ["i": .int(Int64(i)), "pad": .string(String(repeating: "z", count: 80))])) }
        let took = Clock.boot() - start
        #expect(took < Journal.lockWait * 10 + .seconds(5), "each append waited about lockWait: \(took)")
        #expect(took >= Journal.lockWait * 10)
        #expect(!FileManager.default.fileExists(atPath: path + ".1"), "no rotation without the lock")
        holder.release()
        #expect(j.append("after")) // past 512 bytes, with the lock: rotates now
        #expect(FileManager.default.fileExists(atPath: path + ".1"))
        let all = Journal.readAll(path: path)
        #expect(all.skipped == 0)
        #expect(all.entries.map { $0["event"]?.stringValue } == ["first"] + Array(repeating: "while-held", count: 10) + ["after"])
    }
}
