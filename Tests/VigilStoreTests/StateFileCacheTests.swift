import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `StateFileCache` (the probe's `bridge.json`): decoded again only when a `stat` says the
/// file changed, and never trusting a stamp a same-size rewrite within one timestamp tick, into
/// the same inode, could repeat (`FileChangeCheck`).
@Suite struct StateFileCacheTests {
    func setUp() throws -> (TempDir, StateDirectory, StateFiles) {
        let dir = try TempDir()
        let sd = StateDirectory(dir.path)
        try sd.prepare()
        return (dir, sd, StateFiles(dir: sd, journal: Journal(path: sd.journal, source: "test")))
    }

    func record(_ beat: Int64) -> Sample { Sample(pid: 4242, name: "bridge", beat: beat) }

    /// The wall clock long after every write of the test: the file has settled.
    var later: Date { Date().addingTimeInterval(60) }

    @Test func aSettledFileIsDecodedOnceAndAChangeIsSeenAtOnce() throws {
        let (dir, sd, files) = try setUp()
        defer { withExtendedLifetime(dir) {} }
        let cache = StateFileCache<Sample>(sd.pidFile(.bridge), kind: "sample")
        #expect(cache.load(files, now: later) == nil)
        try files.save(record(1), kind: "sample", to: sd.pidFile(.bridge))
        #expect(cache.load(files, now: later) == record(1))
        let reads = cache.reads
        #expect(cache.load(files, now: later) == record(1))
        #expect(cache.load(files, now: later) == record(1))
        #expect(cache.reads == reads, "unchanged and settled: not read again")
        try files.save(record(2), kind: "sample", to: sd.pidFile(.bridge))
        #expect(cache.load(files, now: later) == record(2), "replaced: read at once")
    }

    @Test func aFileChangedJustBeforeItWasReadIsReadAgainUntilItSettles() throws {
        let (dir, sd, files) = try setUp()
        defer { withExtendedLifetime(dir) {} }
        let cache = StateFileCache<Sample>(sd.pidFile(.bridge), kind: "sample")
        try files.save(record(1), kind: "sample", to: sd.pidFile(.bridge))
        #expect(cache.load(files) == record(1))
        #expect(cache.load(files) == record(1))
        #expect(cache.reads == 1, "changed less than the granularity before the look: read again, but the same bytes are not decoded again")
        // Not settled: rewritten in place with other bytes of the same size and mtime, it is seen.
        try overwriteInPlace(sd.pidFile(.bridge), with: record(2))
        #expect(cache.load(files) == record(2))
        #expect(cache.reads == 2)
    }

    /// Rewrites `path` in place (same inode) with `value`'s file of the same size, and sets its
    /// mtime back to what it was.
    func overwriteInPlace(_ path: String, with value: Sample) throws {
        let before = try FileStatus.of(path)
        let data = try StateFile.encode(value, kind: "sample")
        try #require(data.count == before.size)
        let fd = open(path, O_WRONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == data.count)
        var times = [timespec(tv_sec: before.modifiedSeconds, tv_nsec: before.modifiedNanoseconds),
                     timespec(tv_sec: before.modifiedSeconds, tv_nsec: before.modifiedNanoseconds)]
        #expect(futimens(fd, &times) == 0)
    }

    /// The case a stamp of inode, size and mtime alone misses: the same inode (an in-place
    /// rewrite, as an atomic replace into a reused inode is), the same size, and the mtime of
    /// the first write (one timestamp tick, or set back): still read again.
    @Test func aSameSizeRewriteWithTheSameMtimeIntoTheSameInodeIsStillRead() throws {
        let (dir, sd, files) = try setUp()
        defer { withExtendedLifetime(dir) {} }
        let path = sd.pidFile(.bridge)
        let cache = StateFileCache<Sample>(path, kind: "sample")
        try files.save(record(1), kind: "sample", to: path)
        // Settled at the first look (its change time long before `later`), so only the stamp can
        // tell: the change time is in it.
        #expect(cache.load(files, now: later) == record(1))
        #expect(cache.load(files, now: later) == record(1))
        let before = try FileStatus.of(path)

        try overwriteInPlace(path, with: record(2))
        let after = try FileStatus.of(path)
        #expect(after.inode == before.inode && after.size == before.size)
        #expect(after.modifiedSeconds == before.modifiedSeconds && after.modifiedNanoseconds == before.modifiedNanoseconds)

        #expect(cache.load(files, now: later) == record(2))
    }

    @Test func aCorruptOrPlantedFileAfterAGoodOneIsQuarantinedAsBefore() throws {
        let (dir, sd, files) = try setUp()
        defer { withExtendedLifetime(dir) {} }
        let path = sd.pidFile(.bridge)
        let cache = StateFileCache<Sample>(path, kind: "sample")
        try files.save(record(1), kind: "sample", to: path)
        #expect(cache.load(files, now: later) == record(1))
        #expect(cache.load(files, now: later) == record(1))

        try AtomicFile.write(Data("vigil-state 1 sample 3 00000000\n{}\n".utf8), to: path)
        #expect(cache.load(files, now: later) == nil)
        #expect(dir.names("quarantine").count == 1, "the corrupt file moved aside")

        #expect(mkfifo(path, 0o600) == 0)
        #expect(cache.load(files, now: later) == nil, "a FIFO is no record, and no open waits for a writer")
        #expect(dir.names("quarantine").count == 2)
        #expect(Journal.read(path: sd.journal).entries.filter { $0["event"] == "quarantined" }.count == 2)

        try files.save(record(3), kind: "sample", to: path)
        #expect(cache.load(files, now: later) == record(3))
    }
}
