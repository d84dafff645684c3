import Foundation
import Testing
import VigilCore
@testable import VigilSystem

@Suite struct CodePagesTests {
    @Test func parsesSmapsAndReleasesOnlyCleanReadOnlyFileMappings() {
        let text = """
        55780d72f000-55780e149000 r-xp 00352000 fe:00 5351621                    /opt/vigil/bin/vigil
        Size:              10344 kB
        Rss:                7336 kB
        Private_Dirty:       100 kB
        Anonymous:             0 kB
        VmFlags: rd ex mr mw me
        55780e149000-55780e300000 r--p 00d6c000 fe:00 5351621                    /opt/vigil/bin/vigil
        Rss:                1816 kB
        Anonymous:           332 kB
        55780e300000-55780e400000 rw-p 00000000 00:00 0
        Rss:                1228 kB
        Anonymous:          1228 kB
        7f0000000000-7f0000100000 r-xp 00000000 fe:00 77                          /usr/lib/with space/libx.so
        Rss:                 100 kB
        Anonymous:             4 kB
        7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
        Rss:                   8 kB
        Private_Dirty:       100 kB
        Anonymous:             0 kB
        7f0000200000-7f0000300000 r--p 00000000 fe:00 78                          /usr/lib/libc.so.6
        Rss:                 152 kB
        Anonymous:             0 kB
        7f0000300000-7f0000310000 rw-p 00100000 fe:00 78                          /usr/lib/libc.so.6
        Rss:                  16 kB
        Anonymous:             0 kB
        7f0000400000-7f0000500000 r--s 00000000 fe:00 79                          /var/lib/vigil/state.db-shm
        Rss:                  32 kB
        Anonymous:             0 kB
        7ffd00010000-7ffd00014000 r--p 00000000 00:00 0                          [vvar]
        Rss:                   0 kB
        Anonymous:             0 kB
        """
        let maps = CodePages.parse(text)
        #expect(maps.count == 9)
        #expect(maps[0] == CodePages.Mapping(start: 0x55780d72f000, end: 0x55780e149000, perms: "r-xp", path: "/opt/vigil/bin/vigil",
                                             anonymousKB: 0, rssKB: 7336))
        #expect(maps[3].path == "/usr/lib/with space/libx.so")
        // Only clean read-only private mappings of a file: not RELRO data (written before it
        // was made read-only), not anonymous memory, not a code mapping someone wrote to (a
        // debugger's breakpoint), not the vDSO or vvar, not a writable mapping even while
        // nothing was written to it yet, not a shared one.
        #expect(CodePages.releasable(maps).map(\.path) == ["/opt/vigil/bin/vigil", "/usr/lib/libc.so.6"])
        #expect(CodePages.releasable(maps).map(\.perms) == ["r-xp", "r--p"])
    }

    @Test func scheduleReleasesAfterStartThenPeriodicallyAndSoonAfterWork() {
        let t0 = BootInstant(nanoseconds: 1_000_000_000)
        var s = CodePages.Schedule()
        do { let due = s.take(now: t0); #expect(!due) }
        #expect(s.due == t0 + CodePages.firstRelease)
        do { let due = s.take(now: t0 + .seconds(4.9)); #expect(!due) }
        do { let due = s.take(now: t0 + .seconds(5)); #expect(due) }
        let second = t0 + .seconds(5) + CodePages.releaseEvery
        #expect(s.due == second)
        do { let due = s.take(now: second - .seconds(0.1)); #expect(!due) }
        // Work brings the next release forward to 5 s after it, never later than it was due.
        let w = t0 + .seconds(20)
        s.afterWork(now: w)
        #expect(s.due == w + CodePages.settleAfterWork)
        s.afterWork(now: w + .seconds(1))
        #expect(s.due == w + CodePages.settleAfterWork)
        do { let due = s.take(now: w + CodePages.settleAfterWork); #expect(due) }
        #expect(s.due == w + CodePages.settleAfterWork + CodePages.releaseEvery)
        // Work just before a periodic release does not postpone it.
        var late = s
        late.afterWork(now: s.due! - .seconds(1))
        #expect(late.due == s.due)
        // Work noted from another thread comes in through `take(now:work:)`: once per note.
        var noted = CodePages.Schedule()
        do { let due = noted.take(now: t0); #expect(!due) }
        do { let due = noted.take(now: t0 + CodePages.firstRelease); #expect(due) }
        let w2 = t0 + .seconds(10)
        do { let due = noted.take(now: t0 + .seconds(11), work: w2); #expect(!due) }
        #expect(noted.due == w2 + CodePages.settleAfterWork)
        do { let due = noted.take(now: w2 + CodePages.settleAfterWork, work: w2); #expect(due) }
        #expect(noted.due == w2 + CodePages.settleAfterWork + CodePages.releaseEvery, "the same note twice moved it again")
        // Work before the first turn: the release comes 5 s after the work.
        var fresh = CodePages.Schedule()
        fresh.afterWork(now: t0)
        #expect(fresh.due == t0 + CodePages.settleAfterWork)
    }

    @Test func theTestProcessFindsItsOwnCodeAndReleasesIt() throws {
        func smaps() throws -> String {
            let fd = try FileDescriptor.open("/proc/self/smaps", .readOnly)
            defer { fd.close() }
            return String(decoding: try fd.readAll(), as: UTF8.self)
        }
        let text = try smaps()
        let own = CommandLine.arguments[0]
        let maps = CodePages.parse(text)
        let mine = CodePages.releasable(maps).filter { $0.perms == "r-xp" && $0.path.hasSuffix(URL(fileURLWithPath: own).lastPathComponent) }
        #expect(!mine.isEmpty, "\(maps.filter { $0.perms == "r-xp" })")
        // Released, the code is mapped again as it runs: the process goes on, smaller.
        let before = mine.reduce(0) { $0 + $1.rssKB }
        #expect(CodePages.release() > 0)
        let after = CodePages.releasable(CodePages.parse(try smaps())).filter { $0.perms == "r-xp" && $0.path == mine.first?.path }.reduce(0) { $0 + $1.rssKB }
        #expect(after < before, "resident code \(before) kB → \(after) kB")
    }
}
