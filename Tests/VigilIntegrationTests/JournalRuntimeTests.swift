import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// The journal under a running pair: rotation at `journal-max-bytes` read back across files by
/// `vigil journal`, and a corrupt database journaled at a bounded rate (docs/architecture.md,
/// "Journal rotation" and "Repeated failures").
@Suite(.serialized, .timeLimit(.minutes(3)))
struct JournalRuntimeTests {
    func jsonLines(_ text: String) -> [[String: JSONValue]] {
        text.split(separator: "\n").compactMap { line in
            if case .object(let o)? = JSONValue.parse(Data(line.utf8)) { return o }
            return nil
        }
    }

    @Test("The pair rotates the journal at journal-max-bytes; `vigil journal --since` and `--last` read across the files")
    func rotationUnderThePair() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner(Harness.fast + ["--journal-max-bytes", "4KiB", "--journal-keep", "5"])
        try h.waitHealthy()
        // Each command is journaled by the bridge (`chat-command`): enough to pass 4 KiB.
        let commands = 30
        for _ in 0..<commands {
            let r = try h.vigil(["say", "status"])
            #expect(r.code == 0, "\(r.err)")
        }
        try h.waitUntil("\(commands) chat-command entries", timeout: 60) { h.events("chat-command").count >= commands }
        let path = h.dir + "/journal.jsonl"
        #expect(FileManager.default.fileExists(atPath: path + ".1"), "rotated (the bridge got journal-max-bytes from the runner)")
        #expect(!FileManager.default.fileExists(atPath: path + ".6"), "keep 5")
        let all = Journal.readAll(path: path)
        #expect(all.skipped == 0)

        let r = try h.vigil(["journal", "--json", "--since", "10m"])
        #expect(r.code == 0, "\(r.err)")
        let shown = jsonLines(r.out)
        #expect(shown.first?["crc"] == all.entries.first?["crc"], "the oldest file's first entry comes first")
        #expect(shown.contains { $0["event"]?.stringValue == "runner-started" })
        #expect(shown.filter { $0["event"]?.stringValue == "chat-command" }.count == commands)
        let crcs = shown.compactMap { $0["crc"]?.stringValue }
        #expect(Set(crcs).count == crcs.count, "nothing twice")
        #expect(shown.count >= all.entries.count - 5, "everything journaled so far (a few may have been added since)")

        let last = try h.vigil(["journal", "--json", "--last", "3"])
        #expect(jsonLines(last.out).count == 3)
    }

    /// Starts `writers` journal writers at once (`vigil-bench journal --append`, each its own
    /// process, named w0, w1, …) and waits until each has exited 0.
    private func runWriters(_ h: Harness, _ writers: Int, _ perWriter: Int, _ options: [String]) throws {
        var ids: [ProcessIdentity] = []
        for w in 0..<writers {
            ids.append(try h.spawn([Binaries.vigilBench, "--state-dir", h.dir, "journal", "--append", "\(perWriter)", "--writer", "w\(w)"] + options,
                                   log: "writer\(w).out"))
        }
        for id in ids { #expect(try h.waitExit(id, timeout: 120) == 0) }
    }

    @Test("Six vigil processes appending and rotating at once: none lost, none twice, every CRC holds, each writer's lines in order; --since spans the files")
    func concurrentWritersRotate() throws {
        let h = Harness()
        defer { h.finish() }
        let writers = 6, perWriter = 150
        try runWriters(h, writers, perWriter, ["--max-bytes", "16KiB", "--keep", "20"])
        let path = h.dir + "/journal.jsonl"
        #expect(FileManager.default.fileExists(atPath: path + ".3"), "rotated several times")
        #expect(!FileManager.default.fileExists(atPath: path + ".20"), "nothing rotated out: every line is still here")
        let all = Journal.readAll(path: path)
        #expect(all.skipped == 0, "every line's CRC holds")
        #expect(all.entries.count == writers * perWriter, "none lost, none twice")
        for w in 0..<writers {
            let mine = all.entries.filter { $0["writer"]?.stringValue == "w\(w)" }
            #expect(mine.compactMap { $0["i"]?.intValue } == (0..<Int64(perWriter)).map { $0 }, "writer \(w) in order")
        }
        // Every file holds whole lines only (nothing written after its rename was torn).
        for k in 0...20 {
            let name = k == 0 ? path : "\(path).\(k)"
            guard FileManager.default.fileExists(atPath: name) else { continue }
            #expect(Journal.read(path: name).skipped == 0, "\(name)")
        }
        let r = try h.vigil(["journal", "--json", "--since", "1h"])
        #expect(r.code == 0, "\(r.err)")
        #expect(jsonLines(r.out).count == writers * perWriter)
    }

    @Test("Many processes appending at once without rotating (as CLI commands): every line whole, none lost, each writer's in order")
    func manyProcessesAppendWhole() throws {
        let h = Harness()
        defer { h.finish() }
        let writers = 6, perWriter = 150
        // Records of a few kilobytes (1000 + 37 × i bytes of pad): larger than a pipe's atomic write.
        try runWriters(h, writers, perWriter, ["--no-rotate", "--pad", "1000"])
        #expect(!FileManager.default.fileExists(atPath: h.dir + "/journal.jsonl.1"), "no rotation")
        let r = Journal.read(path: h.dir + "/journal.jsonl")
        #expect(r.skipped == 0)
        #expect(r.entries.count == writers * perWriter)
        for w in 0..<writers {
            let mine = r.entries.filter { $0["writer"]?.stringValue == "w\(w)" }
            #expect(mine.compactMap { $0["i"]?.intValue } == (0..<Int64(perWriter)).map { $0 })
        }
    }

    @Test("`vigil journal --follow` goes on across rotations: the rest of its file (now .1), then the new ones, nothing twice")
    func followAcrossRotations() throws {
        let h = Harness()
        defer { h.finish() }
        func append(_ n: Int, writer: String) throws {
            let r = try h.run(Binaries.vigilBench, ["journal", "--append", "\(n)", "--writer", writer, "--max-bytes", "2KiB", "--keep", "20"])
            #expect(r.code == 0, "\(r.err)")
        }
        try append(5, writer: "before")
        let out = h.dir + "/follow.out"
        let follower = try h.spawn([h.bin, "--state-dir", h.dir, "journal", "--follow", "--json"], log: "follow.out")
        func shown() -> [[String: JSONValue]] { jsonLines((try? String(contentsOfFile: out, encoding: .utf8)) ?? "") }
        try h.waitUntil("the follower printed what was there") { shown().count == 5 }
        try append(100, writer: "during") // about ten rotations at 2 KiB
        #expect(FileManager.default.fileExists(atPath: h.dir + "/journal.jsonl.5"))
        try h.waitUntil("the follower printed all 105", timeout: 30) { shown().count >= 105 }
        follower.signal(.terminate)
        #expect(try h.waitExit(follower) == 0)
        let lines = shown()
        #expect(lines.count == 105)
        #expect(lines.compactMap { $0["i"]?.intValue } == Array(0..<5) + Array(0..<100))
        #expect(Set(lines.compactMap { $0["crc"]?.stringValue }).count == 105)
    }

    /// Overwrites the database in place with garbage, as a disk fault would: the connections
    /// already open then fail as corrupt on their next read.
    func corruptDatabase(_ h: Harness) throws {
        for (name, bytes) in [("vigil.db", Array(repeating: UInt8(ascii: "g"), count: 8192)), ("vigil.db-wal", []),
                              ("vigil.db-shm", Array(repeating: UInt8(0), count: 32768))] {
            let fd = open(h.dir + "/" + name, O_WRONLY | O_CLOEXEC)
            try #require(fd >= 0, "open \(name)")
            defer { close(fd) }
            if name != "vigil.db-shm" { try #require(ftruncate(fd, 0) == 0) }
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            try #require(n == bytes.count)
        }
    }

    @Test("A corrupt database is journaled once per failing part, then at most once a minute, and once when it clears")
    func corruptDatabaseAtABoundedRate() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner()
        try h.waitHealthy()
        try corruptDatabase(h)
        // A new bridge image opens the database afresh (every second while it fails).
        let since = Clock.boot().nanoseconds
        #expect(try h.vigil(["restart", "bridge"]).code == 0)
        func unavailable() -> [[String: JSONValue]] {
            h.journal.filter { ($0["boot"]?.intValue ?? 0) > since && ["chat-outbox-unavailable", "missions-db-unavailable"].contains($0["event"]?.stringValue) }
        }
        func bridgeOpen(_ e: [String: JSONValue]) -> Bool { e["source"]?.stringValue == "bridge" && e["stage"]?.stringValue == "bridge" }
        try h.waitUntil("the re-exec'd bridge's chat cannot open the database", timeout: 30) { unavailable().contains(where: bridgeOpen) }
        // The window is the measurement: the bridge tries to open the database every second.
        let windowEnd = Clock.boot() + .seconds(6)
        try h.waitUntil("six seconds of a failing database", timeout: 30) { Clock.boot() >= windowEnd }
        let seen = unavailable()
        let first = try #require(seen.first(where: bridgeOpen))
        #expect(first["failures"] == 1 && first["suppressed"] == 0)
        #expect(first["error"]?.stringValue?.contains("corrupt") == true)
        // The bridge's parts as its newest image runs them (the old image saw the corruption too,
        // and a new process or image journals its first failure at once).
        let imageStarts = (h.events("bridge-reexec-done") + h.events("bridge-started")).compactMap { $0["boot"]?.intValue }
        let reexec = try #require(imageStarts.max())
        var perPart: [String: Int] = [:]
        for e in seen where e["source"]?.stringValue != "bridge" || (e["boot"]?.intValue ?? 0) > reexec {
            let part = [e["source"]?.stringValue, e["event"]?.stringValue, e["adapter"]?.stringValue ?? e["stage"]?.stringValue].map { $0 ?? "-" }.joined(separator: "/")
            perPart[part, default: 0] += 1
        }
        #expect(perPart.values.allSatisfy { $0 == 1 }, "each failing part journaled once in six seconds: \(perPart)")

        // The operator puts a good database in place (here: none, so a new one is made).
        for name in ["vigil.db", "vigil.db-wal", "vigil.db-shm"] { unlink(h.dir + "/" + name) }
        try h.waitUntil("the bridge's chat journals that the database works again", timeout: 30) {
            h.events("chat-outbox-available").contains(where: bridgeOpen)
        }
        let cleared = try #require(h.events("chat-outbox-available").first(where: bridgeOpen))
        #expect((cleared["suppressed"]?.intValue ?? 0) >= 1, "the repeats not journaled are counted: \(cleared)")
        #expect((cleared["failures"]?.intValue ?? 0) >= 2)
        // Each bridge image journaled its failing open once (a loaded machine may have made the
        // runner respawn the bridge meanwhile: a new process reports its first failure at once).
        var perImage: [Int] = [0]
        for e in h.journal where (e["boot"]?.intValue ?? 0) > since {
            let event = e["event"]?.stringValue
            if e["source"]?.stringValue == "bridge" && (event == "bridge-started" || event == "bridge-reexec-done") { perImage.append(0) }
            if event == "chat-outbox-unavailable" && bridgeOpen(e) { perImage[perImage.count - 1] += 1 }
        }
        #expect(perImage.allSatisfy { $0 <= 1 }, "failing opens journaled per bridge image: \(perImage)")
    }
}
