import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilTestSupport

@Suite("Journal", .serialized, .timeLimit(.minutes(1)))
struct JournalTests {
    func lines(_ path: String) -> [Substring] {
        String(decoding: bytes(path) ?? Data(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
    }

    @Test("Entries round-trip with their checksum, one line each")
    func roundTrip() throws {
        let dir = try TempDir()
        let j = Journal(path: dir.file("journal.jsonl"), source: "runner")
        #expect(j.append("heal", ["tier": 2, "verdict": "hung", "action": "terminate"]))
        #expect(j.append("note", ["text": "two\nlines and \"quotes\" and ünïcödé", "crc": "forged", "n": nil,
                                  "nested": ["a": [1, 2.5, true]]]))
        #expect(j.append("bare"))
        #expect(j.backlog == 0)

        let raw = lines(j.path)
        #expect(raw.count == 4 && raw.last == "", "three lines, each ending in a newline")
        for line in raw.dropLast() {
            #expect(Journal.decode(line: line) != nil)
            #expect(line.hasSuffix("\"}"))
        }
        let r = Journal.read(path: j.path)
        #expect(r.skipped == 0)
        #expect(r.offset == bytes(j.path)?.count)
        try #require(r.entries.count == 3)
        let (a, b, c) = (r.entries[0], r.entries[1], r.entries[2])
        #expect(a["event"] == "heal" && a["tier"] == 2 && a["verdict"] == "hung" && a["source"] == "runner")
        #expect(b["text"] == "two\nlines and \"quotes\" and ünïcödé")
        #expect(b["n"] == .null && b["nested"] == ["a": [1, 2.5, true]])
        #expect(b["crc"] != "forged", "crc is the journal's own")
        #expect(c["event"] == "bare")
        for e in r.entries {
            let ts = try #require(e["ts"]?.stringValue)
            #expect(ts.count == 24 && ts.hasSuffix("Z"), "ISO-8601 with milliseconds: \(ts)")
            #expect((e["boot"]?.intValue ?? 0) > 0)
            #expect(e["crc"]?.stringValue?.count == 8)
        }
        #expect(try #require(a["boot"]?.intValue) <= c["boot"]?.intValue ?? 0)
    }

    @Test("A torn last line is left for later; once something follows it, it is skipped and counted")
    func tornTail() throws {
        let dir = try TempDir()
        let path = dir.file("journal.jsonl")
        let first = Journal(path: path, source: "runner")
        first.append("one")
        first.append("two")
        let intact = try #require(bytes(path)).count
        // A writer died in the middle of a record.
        let whole = Array(lines(path)[0].utf8)
        try appendRaw(Data(whole.prefix(whole.count / 2)), to: path)

        let before = Journal.read(path: path)
        #expect(before.entries.count == 2)
        #expect(before.skipped == 0)
        #expect(before.offset == intact, "the unterminated tail is not consumed")

        // A new writer (after the crash) starts on a new line.
        let second = Journal(path: path, source: "runner")
        #expect(second.append("three"))
        let after = Journal.read(path: path)
        #expect(after.entries.map { $0["event"] } == ["one", "two", "three"])
        #expect(after.skipped == 1)
        #expect(lines(path).count == 5) // one, two, torn, three, ""
    }

    @Test("Garbage lines are skipped and counted, valid ones around them are kept")
    func garbage() throws {
        let dir = try TempDir()
        let path = dir.file("journal.jsonl")
        let j = Journal(path: path, source: "cli")
        j.append("before")
        var tampered = Array(lines(path)[0].utf8)
        tampered[12] ^= 0x01
        try appendRaw(Data("garbage\n".utf8), to: path)
        try appendRaw(Data("{\"event\":\"no crc\"}\n".utf8), to: path)
        try appendRaw(Data(tampered) + Data("\n".utf8), to: path)
        try appendRaw(Data("\n\n".utf8), to: path)                                   // empty lines: not counted
        try appendRaw(Data([0xFF, 0xFE, 0x00, 0x0A]), to: path)
        try appendRaw(Data("{\"event\":\"x\",\"crc\":\"zzzzzzzz\"}\n".utf8), to: path)
        j.append("after")
        let r = Journal.read(path: path)
        #expect(r.entries.map { $0["event"] } == ["before", "after"])
        #expect(r.skipped == 5)
    }

    @Test("read(from:) follows: only what was added since, a partial line waits until it is complete")
    func follow() throws {
        let dir = try TempDir()
        let path = dir.file("journal.jsonl")
        #expect(Journal.read(path: path, from: 0).entries.isEmpty, "no file yet")
        let j = Journal(path: path, source: "runner")
        for i in 0..<3 { j.append("e\(i)") }
        let r1 = Journal.read(path: path)
        #expect(r1.entries.count == 3)
        j.append("e3")
        j.append("e4")
        let r2 = Journal.read(path: path, from: r1.offset)
        #expect(r2.entries.map { $0["event"] } == ["e3", "e4"])
        let r3 = Journal.read(path: path, from: r2.offset)
        #expect(r3.entries.isEmpty && r3.skipped == 0 && r3.offset == r2.offset)

        // Half a record arrives, then the rest.
        let line = Array(lines(path)[0].utf8) + [0x0A]
        try appendRaw(Data(line.prefix(20)), to: path)
        let r4 = Journal.read(path: path, from: r3.offset)
        #expect(r4.entries.isEmpty && r4.offset == r3.offset)
        try appendRaw(Data(line.dropFirst(20)), to: path)
        let r5 = Journal.read(path: path, from: r4.offset)
        #expect(r5.entries.map { $0["event"] } == ["e0"])
        #expect(r5.offset == bytes(path)?.count)
    }

    @Test("A failed write is kept in memory and written by the next append or flush")
    func backlog() throws {
        let dir = try TempDir()
        let path = dir.file("later/journal.jsonl")
        let j = Journal(path: path, source: "runner")
        #expect(!j.append("first"))
        #expect(!j.append("second"))
        #expect(j.backlog == 2)
        #expect(!j.flush())
        try #require(mkdir(dir.file("later"), 0o755) == 0)
        #expect(j.flush())
        #expect(j.backlog == 0)
        #expect(j.append("third"))
        #expect(Journal.read(path: path).entries.map { $0["event"] } == ["first", "second", "third"])
    }

    @Test("Threads sharing one journal never interleave")
    func threads() async throws {
        let dir = try TempDir()
        let j = Journal(path: dir.file("journal.jsonl"), source: "runner")
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask { for i in 0..<50 { j.append("t", ["thread": .int(Int64(t)), "i": .int(Int64(i))]) } }
            }
        }
        let r = Journal.read(path: j.path)
        #expect(r.entries.count == 200 && r.skipped == 0)
    }

    // Many processes appending at once: JournalRuntimeTests.manyProcessesAppendWhole, with real
    // `vigil` processes (an exit test here shared swift-testing's exit-test monitor, which spins
    // while any other test's child is an unreaped zombie, and hung the whole run).
}
