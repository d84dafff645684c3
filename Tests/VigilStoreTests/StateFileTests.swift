import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilTestSupport

struct Sample: Codable, Equatable, Sendable {
    var pid: Int32
    var name: String
    var beat: Int64
}

let sample = Sample(pid: 4242, name: "bridge \"one\" ünï/", beat: 123_456_789)

extension StateFile.Read {
    var value: T? { if case .ok(let v) = self { return v }; return nil }
    var corruptReason: String? { if case .corrupt(let r) = self { return r }; return nil }
    var isAbsent: Bool { if case .absent = self { return true }; return false }
}

/// A header and payload put together by hand, with a correct checksum unless told otherwise.
func handMade(kind: String = "sample", version: String = "1", payload: String, length: String? = nil, crc: String? = nil) -> Data {
    let p = Data(payload.utf8)
    var d = Data("vigil-state \(version) \(kind) \(length ?? String(p.count)) \(crc ?? CRC32.hex(p))\n".utf8)
    d.append(p)
    d.append(0x0A)
    return d
}

@Suite("StateFile")
struct StateFileTests {
    static let good: Data = try! StateFile.encode(sample, kind: "sample")

    @Test("Round trip through bytes and through a file")
    func roundTrip() throws {
        let data = try StateFile.encode(sample, kind: "sample")
        let header = String(decoding: data.prefix { $0 != 0x0A }, as: UTF8.self).split(separator: " ")
        #expect(header.count == 5 && header[0] == "vigil-state" && header[1] == "1" && header[2] == "sample")
        #expect(data.last == 0x0A)
        #expect(StateFile.decode(data, kind: "sample", as: Sample.self).value == sample)

        let dir = try TempDir()
        let path = dir.file("bridge.json")
        #expect(StateFile.read(path, kind: "sample", as: Sample.self).isAbsent)
        try StateFile.write(sample, kind: "sample", to: path)
        #expect(StateFile.read(path, kind: "sample", as: Sample.self).value == sample)
        var other = sample
        other.beat += 1
        try StateFile.write(other, kind: "sample", to: path)
        #expect(StateFile.read(path, kind: "sample", as: Sample.self).value == other)
        #expect(dir.names() == ["bridge.json"])
        // The heal state is stored this way.
        var heal = HealState()
        heal.tier = 2
        heal.circuit = .halfOpen
        heal.tierSince = BootInstant(nanoseconds: 99)
        try StateFile.write(heal, kind: "heal", to: dir.file("heal.json"))
        #expect(StateFile.read(dir.file("heal.json"), kind: "heal", as: HealState.self).value == heal)
    }

    /// Every way a state file can be damaged, and the reason that must be reported.
    static let corruptions: [(String, Data, String)] = {
        let g = good
        let nl = g.firstIndex(of: 0x0A)!
        var flippedPayload = g
        flippedPayload[nl + 3] ^= 0x01
        var flippedCRC = g
        flippedCRC[nl - 1] = flippedCRC[nl - 1] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        var flippedMagic = g
        flippedMagic[0] ^= 0x20
        return [
            ("empty file", Data(), "empty file"),
            ("zeros (a power cut's hole)", Data(repeating: 0, count: 200), "no header line"),
            ("zeros with a newline", Data(repeating: 0, count: 50) + Data([0x0A]) + Data(repeating: 0, count: 50), "not a Vigil state file"),
            ("torn inside the header", g.prefix(10), "no header line"),
            ("torn right after the header", g.prefix(nl + 1), "torn: shorter than its header says"),
            ("torn inside the payload", g.prefix(nl + 8), "torn: shorter than its header says"),
            ("torn one byte short", g.prefix(g.count - 2), "torn: shorter than its header says"),
            ("flipped payload byte", flippedPayload, "checksum mismatch"),
            ("flipped checksum digit", flippedCRC, "checksum mismatch"),
            ("flipped magic", flippedMagic, "not a Vigil state file"),
            ("wrong kind", try! StateFile.encode(sample, kind: "heal"), "holds a heal record, expected sample"),
            ("garbage text", Data("hello, this is not\nwhat you expected\n".utf8), "not a Vigil state file"),
            ("binary garbage", Data((0..<300).map { UInt8(truncatingIfNeeded: $0 &* 89 &+ 7) }), "not a Vigil state file"),
            ("valid JSON, no header, one line", Data(#"{"pid":1,"name":"x","beat":2}"#.utf8), "no header line"),
            ("valid JSON, no header, with newline", Data("{\"pid\":1,\"name\":\"x\",\"beat\":2}\n".utf8), "not a Vigil state file"),
            ("header and wrong-shape JSON, correct checksum", handMade(payload: #"{"pid":1,"name":"x"}"#), "wrong shape: missing field beat"),
            ("header and wrong types, correct checksum", handMade(payload: #"{"pid":"1","name":"x","beat":2}"#), "wrong shape: wrong type at pid"),
            ("header and a null, correct checksum", handMade(payload: #"{"pid":null,"name":"x","beat":2}"#), "wrong shape: null at pid"),
            ("header and an array, correct checksum", handMade(payload: "[1,2,3]"), "wrong shape: wrong type at "),
            ("header and not JSON, correct checksum", handMade(payload: "pid=1"), "wrong shape: invalid JSON"),
            ("unknown format version", handMade(version: "2", payload: "{}"), "unknown format version 2"),
            ("length not a number", handMade(payload: "{}", length: "abc"), "bad length"),
            ("negative length", handMade(payload: "{}", length: "-1"), "bad length"),
            ("length too long", handMade(payload: "{}", length: "99999"), "torn: shorter than its header says"),
            ("length too short", handMade(payload: #"{"pid":1,"name":"x","beat":2}"#, length: "5"), "checksum mismatch"),
            ("header with extra field", Data("vigil-state 1 sample 2 00000000 extra\n{}\n".utf8), "not a Vigil state file"),
        ]
    }()

    @Test("Every corruption is reported with a clear reason", arguments: corruptions)
    func corrupt(name: String, data: Data, reason: String) throws {
        let r = StateFile.decode(data, kind: "sample", as: Sample.self)
        let got = try #require(r.corruptReason, "\(name) was not detected")
        #expect(got.hasPrefix(reason), "\(name)")
        // The same through a file.
        let dir = try TempDir()
        try put(data, at: dir.file("f"))
        #expect(StateFile.read(dir.file("f"), kind: "sample", as: Sample.self).corruptReason == got)
    }

    @Test("Decoding works on a slice of a larger buffer")
    func slices() throws {
        let padded = Data("junk".utf8) + Self.good
        let slice = padded[4...]
        #expect(slice.startIndex == 4)
        #expect(StateFile.decode(slice, kind: "sample", as: Sample.self).value == sample)
    }

    @Test("A directory, a FIFO, a symlink or an oversized file is corrupt, never a blocked open or a crash")
    func unreadable() throws {
        let dir = try TempDir()
        try #require(mkdir(dir.file("d"), 0o755) == 0)
        #expect(StateFile.read(dir.file("d"), kind: "sample", as: Sample.self).corruptReason == "a directory, not a regular file")
        try #require(mkfifo(dir.file("p"), 0o600) == 0)
        #expect(StateFile.read(dir.file("p"), kind: "sample", as: Sample.self).corruptReason == "a FIFO (named pipe), not a regular file")
        try StateFile.write(Sample(pid: 1, name: "x", beat: 2), kind: "sample", to: dir.file("real"))
        try #require(symlink(dir.file("real"), dir.file("link")) == 0)
        #expect(StateFile.read(dir.file("link"), kind: "sample", as: Sample.self).corruptReason?.contains("symbolic link") == true)
        // A sparse 2 MiB file: above the 1 MiB limit (docs/operator-guide.md, "Bad input").
        let fd = open(dir.file("big"), O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        try #require(fd >= 0 && ftruncate(fd, 2 << 20) == 0)
        close(fd)
        #expect(StateFile.read(dir.file("big"), kind: "sample", as: Sample.self).corruptReason?.hasPrefix("too large") == true)
    }
}

@Suite("StateFiles.load: the corrupt-file policy")
struct StateFilesTests {
    func setUp() throws -> (TempDir, StateDirectory, StateFiles) {
        let dir = try TempDir()
        let sd = StateDirectory(dir.path)
        try sd.prepare()
        let files = StateFiles(dir: sd, journal: Journal(path: sd.journal, source: "test"))
        return (dir, sd, files)
    }

    @Test("A valid file loads; an absent one is nil and not journaled")
    func okAndAbsent() throws {
        let (dir, sd, files) = try setUp()
        defer { withExtendedLifetime(dir) {} }
        #expect(files.load(sd.healState, kind: "sample", as: Sample.self) == nil)
        try files.save(sample, kind: "sample", to: sd.healState)
        #expect(files.load(sd.healState, kind: "sample", as: Sample.self) == sample)
        #expect(Journal.read(path: sd.journal).entries.isEmpty)
    }

    @Test("A corrupt file is moved into quarantine/, journaled, and treated as absent",
          arguments: StateFileTests.corruptions)
    func quarantines(name: String, data: Data, reason: String) throws {
        let (dir, sd, files) = try setUp()
        try put(data, at: sd.pidFile(.bridge))
        #expect(files.load(sd.pidFile(.bridge), kind: "sample", as: Sample.self) == nil)
        #expect(access(sd.pidFile(.bridge), F_OK) != 0, "gone from its place")
        let quarantined = dir.names("quarantine")
        try #require(quarantined.count == 1)
        #expect(quarantined[0].hasPrefix("bridge.json."))
        #expect(bytes(sd.quarantine + "/" + quarantined[0]) == data, "kept as it was, for a person to look at")

        let log = Journal.read(path: sd.journal)
        #expect(log.skipped == 0)
        let entry = try #require(log.entries.first)
        #expect(log.entries.count == 1)
        #expect(entry["event"] == "quarantined")
        #expect(entry["file"] == "bridge.json")
        #expect(entry["reason"]?.stringValue?.hasPrefix(reason) == true)
        #expect(entry["moved_to"]?.stringValue == sd.quarantine + "/" + quarantined[0])
        #expect(entry["source"] == "test")

        // Loading again: absent now, nothing more journaled; a new good file loads.
        #expect(files.load(sd.pidFile(.bridge), kind: "sample", as: Sample.self) == nil)
        #expect(Journal.read(path: sd.journal).entries.count == 1)
        try files.save(sample, kind: "sample", to: sd.pidFile(.bridge))
        #expect(files.load(sd.pidFile(.bridge), kind: "sample", as: Sample.self) == sample)
    }

    @Test("Two corrupt files of the same name are both kept")
    func twoQuarantines() throws {
        let (dir, sd, files) = try setUp()
        for text in ["first", "second"] {
            try put(Data(text.utf8), at: sd.healState)
            #expect(files.load(sd.healState, kind: "heal", as: HealState.self) == nil)
        }
        let kept = dir.names("quarantine").compactMap { bytes(sd.quarantine + "/" + $0) }.map { String(decoding: $0, as: UTF8.self) }
        #expect(kept.sorted() == ["first", "second"])
    }

    @Test("When quarantine/ cannot be made, the file is removed so it cannot wedge every probe, and that is journaled")
    func cannotQuarantine() throws {
        let (dir, sd, files) = try setUp()
        defer { withExtendedLifetime(dir) {} }
        try put(Data("blocker".utf8), at: sd.quarantine) // a file where the directory should be
        try put(Data("garbage".utf8), at: sd.healState)
        #expect(files.load(sd.healState, kind: "heal", as: HealState.self) == nil)
        #expect(access(sd.healState, F_OK) != 0)
        let entry = try #require(Journal.read(path: sd.journal).entries.first)
        #expect(entry["event"] == "quarantined")
        #expect(entry["moved_to"] == .null)
        #expect(entry["removed"] == true)
        #expect(entry["reason"] == "no header line")
    }
}
