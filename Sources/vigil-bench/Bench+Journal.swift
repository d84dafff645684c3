import Foundation
// Tooling, not product: the benchmark acts on processes and sockets from outside with libc
// directly (kill, SIGSTOP, a socket server), as a second program would; the product does that
// only through VigilSystem (docs/architecture.md, "One syscall edge").
import Glibc
import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil-bench journal`: what one journal append costs (docs/architecture.md, "Journal
/// rotation"): the bare floor (one write + fdatasync on an O_APPEND descriptor), the lock and
/// inode check alone, and `Journal.append` without and with rotation.
enum JournalBench {
    static let help = """
    usage: vigil-bench journal [--records N]
           vigil-bench journal --append N [--writer NAME] [--max-bytes SIZE] [--keep K] [--no-rotate] [--pad BYTES]

    Appends N records (default 2000, ~150 bytes each) to journals in a temporary directory and
    prints the median and p99 of one append:
      bare write+fdatasync    the floor: O_APPEND descriptor, no lock, no check
      lock + inode check      flock, fstat, stat, unlock (what rotation safety adds)
      Journal.append          as CLI commands append (no rotation)
      Journal.append rotating as the runner and bridge append, rotating every 64 KiB (keep 3)

    With --append: appends N records (`bench-line`, fields `writer` and `i`) to the state
    directory's journal as one writer that rotates at --max-bytes (default 16MiB) keeping
    --keep files (default 3; --no-rotate: as a CLI command, never), and prints the append
    times. Record i carries a pad of 50 + i % 100 bytes, or with --pad of BYTES + 37 × i. Several at once are the test of
    rotation under concurrent writers (and its cost under contention).
    """

    static func run(_ args: [String], stateDir: StateDirectory, json: Bool = false) throws {
        let a = try Arguments(args, valued: ["records", "append", "writer", "max-bytes", "keep", "pad"], booleans: ["no-rotate"])
        if let count = try a.int("append", min: 1) { return try append(count, a, stateDir: stateDir) }
        let n = try a.int("records", min: 10) ?? 2000
        let dir = try TempDir.make("vigil-bench-journal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fields: [String: JSONValue] = ["tier": 2, "verdict": "hung", "action": "terminate", "note": .string(String(repeating: "x", count: 40))]

        func time(_ body: () throws -> Void) rethrows -> Double {
            let t = Clock.boot()
            try body()
            return (Clock.boot() - t).seconds * 1e6
        }
        var bare: [Double] = [], check: [Double] = [], plain: [Double] = [], rotating: [Double] = []
        let record = Journal.encode(event: "heal", source: "bench", fields: fields, boot: Clock.boot(), wall: Clock.wall())
        let fd = try PrivateFile.open(dir + "/bare.jsonl", O_RDWR | O_APPEND | O_CREAT)
        defer { close(fd) }
        let path = dir + "/check.jsonl"
        let cfd = try PrivateFile.open(path, O_RDWR | O_APPEND | O_CREAT)
        defer { close(cfd) }
        let j1 = Journal(path: dir + "/plain.jsonl", source: "bench")
        let j2 = Journal(path: dir + "/rotating.jsonl", source: "bench", rotation: .init(maxBytes: 64 << 10, keep: 3))
        for _ in 0..<n {
            bare.append(try time {
                try AtomicFile.writeAll(fd, record, subject: "bare")
                _ = fdatasync(fd)
            })
            check.append(time {
                var a = stat(), b = stat()
                _ = fstat(cfd, &a)
                _ = flock(cfd, LOCK_EX)
                _ = stat(path, &b)
                _ = flock(cfd, LOCK_UN)
            })
            plain.append(time { j1.append(.heal, fields) })
            rotating.append(time { j2.append(.heal, fields) })
        }
        var table = BenchTable(title: "Journal append (\(n) records of \(record.count) bytes)")
        func row(_ name: String, _ v: [Double]) {
            let s = Stats(v)
            table.add(name, String(format: "%.1f µs median, %.1f µs p99", s.median, s.quantile(0.99)), "")
        }
        row("bare write+fdatasync", bare)
        row("lock + inode check", check)
        row("Journal.append", plain)
        row("Journal.append rotating", rotating)
        table.print(json: json)
    }

    static func append(_ count: Int, _ a: Arguments, stateDir: StateDirectory) throws {
        let writer = a.value("writer") ?? "\(getpid())"
        var maxBytes = Journal.Rotation.defaultMaxBytes
        if let text = a.value("max-bytes") {
            guard let b = ByteSize.parse(text), b >= 1024, b <= UInt64(Int64.max) else { throw UsageError("--max-bytes \(text.debugDescription): not a size of at least 1KiB") }
            maxBytes = Int64(b)
        }
        let keep = try a.int("keep", min: 1) ?? Journal.Rotation.defaultKeep
        guard keep <= Journal.maxKeep else { throw UsageError("--keep must be at most \(Journal.maxKeep)") }
        let pad = try a.int("pad", min: 0)
        let j = Journal(path: stateDir.journal, source: "bench", rotation: a.has("no-rotate") ? nil : .init(maxBytes: maxBytes, keep: keep))
        var times: [Double] = []
        for i in 0..<count {
            let t = Clock.boot()
            let padding = String(repeating: "p", count: pad.map { $0 + 37 * i } ?? 50 + i % 100)
            guard j.append(.benchLine, ["writer": .string(writer), "i": .int(Int64(i)), "pad": .string(padding)]) else {
                throw CommandError("append \(i) of writer \(writer) failed (kept in memory: \(j.backlog))")
            }
            times.append((Clock.boot() - t).seconds * 1e6)
        }
        let s = Stats(times)
        printOut(String(format: "writer %@: %d appends, %.1f µs median, %.1f µs p99", writer, count, s.median, s.quantile(0.99)))
    }
}
