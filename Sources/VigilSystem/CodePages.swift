import CVigil
import FoundationEssentials
import Glibc
import Synchronization
import VigilCore

/// Gives back the pages of the program and its libraries that start-up and rare work mapped and
/// idle does not use (docs/architecture.md, "Memory").
///
/// The kernel maps a file's pages into a process around every page it faults on (64 KiB at a
/// time), so start-up (argument parsing, migrations, recovery, the first probe) leaves most of
/// the executable's code and read-only data mapped, touched once, and so does a heal or a
/// self-check later. `release` drops this process's mapping of its clean, read-only file
/// mappings (`madvise(MADV_DONTNEED)` on `r-xp` and `r--p` private mappings of files with no
/// anonymous page: none was copied on write, so every page there is the file's own, in the page
/// cache). The pages stay in the page cache; what the loop uses afterwards is mapped again on
/// its first use, by a minor fault. Nothing that was written is touched: data, relocated
/// read-only data (RELRO: its pages were written before they were made read-only, so they are
/// anonymous), the heap and the stacks are never in such a mapping. With them go the heap's free
/// pages (`malloc_trim`), and `oneHeap` keeps the threads of a long-running process on one
/// malloc arena.
public enum CodePages {
    /// For the runner and the bridge, before they start threads: one malloc arena. Their few
    /// threads rarely allocate at the same time, and every further arena keeps free pages of
    /// its own (after a heal, the chat thread's arena held 0.9 MiB, most of it free).
    public static func oneHeap() { _ = cvigil_malloc_arena_max(1) }

    /// When a process first releases (start-up is over by then), how often after that, and how
    /// soon after a burst of work (`noteWork`) the pages it mapped go again.
    public static let firstRelease = TimeSpan.seconds(5)
    public static let releaseEvery = TimeSpan.seconds(60)
    public static let settleAfterWork = TimeSpan.seconds(5)

    /// The latest `noteWork`, in boot nanoseconds (0: none yet).
    private static let lastWork = Atomic<Int64>(0)

    /// From any thread, after work that ran code idle does not (a heal step, a metrics refresh
    /// that read new journal entries, a self-check's report): the loop's next release comes
    /// `settleAfterWork` after it, not up to `releaseEvery` later.
    public static func noteWork(_ now: BootInstant = Clock.boot()) { lastWork.store(now.nanoseconds, ordering: .relaxed) }

    /// The latest `noteWork`, if any.
    public static var latestWork: BootInstant? {
        let n = lastWork.load(ordering: .relaxed)
        return n == 0 ? nil : BootInstant(nanoseconds: n)
    }

    /// When the next release is due. A loop keeps one and calls `releaseIfDue` every turn.
    public struct Schedule: Sendable, Equatable {
        /// Nil until the first turn.
        public private(set) var due: BootInstant?
        /// The last work noted that `due` took in.
        private var seenWork: BootInstant?
        public init() {}

        /// True when a release is due at `now`; it then counts as done (the next is
        /// `releaseEvery` later). The first call only sets the first release. `work`: the
        /// latest work noted (`CodePages.latestWork`); a new one brings the release forward.
        public mutating func take(now: BootInstant, work: BootInstant? = nil) -> Bool {
            if let w = work, w != seenWork {
                seenWork = w
                afterWork(now: w)
            }
            guard let d = due else { due = now + CodePages.firstRelease; return false }
            guard now >= d else { return false }
            due = now + CodePages.releaseEvery
            return true
        }

        /// After work that ran code idle does not: release `settleAfterWork` from now unless
        /// one is due sooner.
        public mutating func afterWork(now: BootInstant) {
            let soon = now + CodePages.settleAfterWork
            due = min(due ?? soon, soon)
        }

        /// Releases when due; call every loop turn.
        public mutating func releaseIfDue(now: BootInstant) {
            if take(now: now, work: CodePages.latestWork) { CodePages.release() }
        }
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

    /// The mappings `release` drops: read-only (code or data), private, of a file, none of
    /// whose pages was copied on write (`Anonymous: 0`; `Private_Dirty` also counts the file's
    /// own pages not yet written back, as in a program just built). Never a writable mapping,
    /// a shared one, or one the kernel made (`[vdso]`, `[vvar]`).
    static func releasable(_ maps: [Mapping]) -> [Mapping] {
        maps.filter { ($0.perms == "r-xp" || $0.perms == "r--p") && $0.path.hasPrefix("/") && $0.anonymousKB == 0 && $0.end > $0.start }
    }

    /// Drops the releasable mappings and the heap's free pages; returns how many KiB were
    /// resident in those mappings (0 when `/proc/self/smaps` cannot be read).
    @discardableResult
    public static func release() -> Int {
        // Last, after what reading smaps allocated was freed.
        defer { _ = cvigil_malloc_trim() }
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
