import Foundation
import Testing
@testable import VigilSystem

@Suite struct CodePagesTests {
    @Test func parsesSmapsAndReleasesOnlyCleanExecutableFileMappings() {
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
        """
        let maps = CodePages.parse(text)
        #expect(maps.count == 5)
        #expect(maps[0] == CodePages.Mapping(start: 0x55780d72f000, end: 0x55780e149000, perms: "r-xp", path: "/opt/vigil/bin/vigil",
                                             anonymousKB: 0, rssKB: 7336))
        #expect(maps[3].path == "/usr/lib/with space/libx.so")
        // Only the clean r-xp mapping of a file: not RELRO data, not anonymous memory, not a
        // code mapping someone wrote to (a debugger's breakpoint), not the vDSO.
        #expect(CodePages.releasable(maps).map(\.path) == ["/opt/vigil/bin/vigil"])
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
        let mine = CodePages.releasable(maps).filter { $0.path.hasSuffix(URL(fileURLWithPath: own).lastPathComponent) }
        #expect(!mine.isEmpty, "\(maps.filter { $0.perms == "r-xp" })")
        // Released, the code is mapped again as it runs: the process goes on, smaller.
        let before = mine.reduce(0) { $0 + $1.rssKB }
        #expect(CodePages.release() > 0)
        let after = CodePages.releasable(CodePages.parse(try smaps())).filter { $0.path == mine.first?.path }.reduce(0) { $0 + $1.rssKB }
        #expect(after < before, "resident code \(before) kB → \(after) kB")
    }
}
