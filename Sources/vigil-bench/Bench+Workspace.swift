import Foundation
import VigilApp
import VigilCore
import VigilSystem
import VigilTestSupport

/// `vigil-bench workspace`: the git layer of workspace slots (docs/workspaces.md) on a
/// repository of many small files: a fresh clone of a slot, the cleaning of a slot after a
/// typical mission, and the checks that find a damaged slot (quick, and with fsck).
enum WorkspaceBench {
    static let help = """
    usage: vigil-bench workspace [--files N] [--rounds N] [--json]

    Makes a bare repository of N small files (default 10000) in a temporary directory and, for
    each round (default 5), times cloneFresh() of a slot from it (by path, objects copied), a
    typical mission's mess (a few tracked files modified, untracked files, a build directory),
    clean() of that slot (fetch included), then inspect() without and with fsck. Medians.
    """

    static func run(_ argv: [String], json: Bool = false) throws {
        let args = try Arguments(argv, valued: ["files", "rounds"])
        let files = try args.int("files", min: 1) ?? 10000
        let rounds = try args.int("rounds", min: 1) ?? 5
        let root = try TempDirectory.make(prefix: "vigil-bench-ws")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let bare = root + "/repo.git"
        try GitFixture.makeBareRepo(at: bare, files: files)
        var clone: [Double] = [], clean: [Double] = [], quick: [Double] = [], fsck: [Double] = []
        for round in 0..<rounds {
            let slot = SlotCheckout(path: root + "/slots/\(round)", url: bare, branch: "main")
            var t0 = Clock.boot()
            try slot.cloneFresh()
            clone.append((Clock.boot() - t0).milliseconds)
            try mess(slot, files: files)
            t0 = Clock.boot()
            try slot.clean()
            clean.append((Clock.boot() - t0).milliseconds)
            t0 = Clock.boot()
            guard slot.inspect(fsck: false) == nil else { throw CommandError("inspect calls a cleaned slot damaged") }
            quick.append((Clock.boot() - t0).milliseconds)
            t0 = Clock.boot()
            if let why = slot.inspect(fsck: true) { throw CommandError("fsck calls a cleaned slot damaged: \(why)") }
            fsck.append((Clock.boot() - t0).milliseconds)
            try FileManager.default.removeItem(atPath: slot.path)
        }
        func median(_ a: [Double]) -> Double { ChatBench.percentile(a.sorted(), 0.5) }
        let share = median(clean) / median(clone) * 100
        var table = BenchTable(title: "vigil-bench workspace (\(files) files, \(rounds) rounds, clone by path)")
        table.add("cloneFresh() of a slot, median", String(format: "%.0f ms", median(clone)), "(reference)")
        table.add("clean() after a typical mission (fetch included), median", String(format: "%.0f ms", median(clean)), "(reference)")
        table.add("clean() as a share of a fresh clone, same run", String(format: "%.1f %%", share), "≤ 5 %",
                  "design: hand-out (warm) ≤ 5 % of a fresh clone", value: share, atMost: 5)
        table.add("inspect(fsck: false), median", String(format: "%.1f ms", median(quick)), "(reference)")
        table.add("inspect(fsck: true), median", String(format: "%.0f ms", median(fsck)), "(reference)")
        table.print(json: json)
        if !json {
            print("""

            note: a slot is cleaned when its mission ends, before it is handed out again; the hand-out
            itself (allocating an already clean slot) is a database transaction, measured elsewhere.
            """)
        }
    }

    /// What a mission typically leaves: a few tracked files changed, new files, a build directory
    /// (ignored), a log (ignored).
    static func mess(_ slot: SlotCheckout, files: Int) throws {
        func write(_ name: String, _ text: String) throws {
            let p = slot.path + "/" + name
            try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: p))
        }
        for n in stride(from: 0, to: files, by: max(1, files / 5)).prefix(5) { try write("d\(n / 100)/f\(n).txt", "changed by the mission\n") }
        for n in 0..<20 { try write("notes/new\(n).md", "untracked \(n)\n") }
        for n in 0..<200 { try write("build/obj/o\(n).o", String(repeating: "x", count: 512)) }
        try write("run.log", "log\n")
    }
}
