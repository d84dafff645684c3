import FoundationEssentials
import Glibc
import VigilCore

/// Gives back the code pages start-up mapped and idle never runs (docs/architecture.md,
/// "Memory").
///
/// The kernel maps a file's pages into a process around every page it faults on (64 KiB at a
/// time), so start-up (argument parsing, migrations, recovery, the first probe) leaves most of
/// the executable's code mapped: 7 MiB of the runner's 16 MiB resident set, touched once.
/// `release` drops this process's mapping of its clean, read-only, executable file mappings
/// (`madvise(MADV_DONTNEED)` on `r-xp` mappings of files with no anonymous page: none was
/// copied on write, so every page there is the file's own, in the page cache). The pages
/// stay in the page cache; what the loop runs afterwards is mapped again on its first use, by a
/// minor fault. Nothing that was written is touched: data, relocated read-only data (RELRO),
/// the heap and the stacks are never in an `r-xp` mapping.
public enum CodePages {
    /// When a process first releases (start-up is over by then) and how often after that (what
    /// rarer work mapped since, such as a self-check, goes again).
    public static let firstRelease = TimeSpan.seconds(5)
    public static let releaseEvery = TimeSpan.seconds(600)

    /// Releases when due; call every loop turn. `due` starts nil (set to the first release).
    public static func releaseIfDue(_ due: inout BootInstant?, now: BootInstant) {
        guard let d = due else { due = now + firstRelease; return }
        guard now >= d else { return }
        release()
        due = now + releaseEvery
    }

    /// One mapping of `/proc/self/smaps`.
    struct Mapping: Equatable {
        var start: UInt
        var end: UInt
        var perms: String
        var path: String
        var anonymousKB: Int = 0
        var rssKB: Int = 0
    }

    /// Parses `/proc/PID/smaps` text.
    static func parse(_ text: String) -> [Mapping] {
        var out: [Mapping] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if let dash = first.firstIndex(of: "-"), fields.count >= 5,
               let s = UInt(first[..<dash], radix: 16), let e = UInt(first[first.index(after: dash)...], radix: 16) {
                let path = fields.count >= 6 ? fields[5...].joined(separator: " ") : ""
                out.append(Mapping(start: s, end: e, perms: String(fields[1]), path: path))
            } else if !out.isEmpty, fields.count >= 2, let kb = Int(fields[1]) {
                switch first {
                case "Anonymous:": out[out.count - 1].anonymousKB = kb
                case "Rss:": out[out.count - 1].rssKB = kb
                default: break
                }
            }
        }
        return out
    }

    /// The mappings `release` drops: executable, read-only, private, of a file, none of whose
    /// pages was copied on write (`Anonymous: 0`; `Private_Dirty` also counts the file's own
    /// pages not yet written back, as in a program just built).
    static func releasable(_ maps: [Mapping]) -> [Mapping] {
        maps.filter { $0.perms == "r-xp" && $0.path.hasPrefix("/") && $0.anonymousKB == 0 && $0.end > $0.start }
    }

    /// Drops the releasable mappings; returns how many KiB were resident in them (0 when
    /// `/proc/self/smaps` cannot be read).
    @discardableResult
    public static func release() -> Int {
        // Read to the end: a /proc file's size says 0.
        guard let fd = try? FileDescriptor.open("/proc/self/smaps", .readOnly),
              let bytes = try? fd.closeAfter({ () throws(SystemError) in try fd.readAll(limit: 16 << 20) }) else { return 0 }
        var kb = 0
        for m in releasable(parse(String(decoding: bytes, as: UTF8.self))) {
            guard let p = UnsafeMutableRawPointer(bitPattern: m.start) else { continue }
            if madvise(p, Int(m.end - m.start), MADV_DONTNEED) == 0 { kb += m.rssKB }
        }
        return kb
    }
}
