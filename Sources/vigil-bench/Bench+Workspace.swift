import Foundation
import VigilApp
import VigilCore
import VigilStore
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
    Then the hand-out, from outside: a state directory with one slot of that repository and a
    runner loop (`vigil-bench drive`, woken by the wake file); each round enqueues a mission with
    --workspace and times until its command runs in the slot (the slot warm: cleaned after the
    previous mission), and the same without a workspace, alternating.
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
        let (handOut, plain) = try handOutLatency(bare: bare, root: root, rounds: max(10, rounds * 4))
        func median(_ a: [Double]) -> Double { ChatBench.percentile(a.sorted(), 0.5) }
        // The hand-out is what a workspace adds to a mission's start: the slot allocated in the
        // claim transaction, the slot's lock taken by the shim, VIGIL_WORKSPACE set. The start
        // itself (claim, shim, exec) is there with or without a workspace.
        let extra = median(handOut) - median(plain)
        let handOutShare = max(0, extra) / median(clone) * 100
        var table = BenchTable(title: "vigil-bench workspace (\(files) files, \(rounds) rounds, clone by path)")
        table.add("cloneFresh() of a slot, median", String(format: "%.0f ms", median(clone)), "(reference)")
        table.add("hand-out (warm): what a workspace adds to a mission's start, outside view (median with − median without)",
                  extra < 0 ? String(format: "%.2f ms: none measurable (the medians differ by less than their noise)", extra)
                      : String(format: "%.2f ms (%.2f %% of a fresh clone)", extra, handOutShare), "≤ 5 % of a fresh clone, same run",
                  value: handOutShare, atMost: 5)
        table.add("enqueue → command running in its (warm) slot, outside view, median / p95",
                  String(format: "%.1f / %.1f ms (%.1f %% of a fresh clone)", median(handOut), ChatBench.percentile(handOut.sorted(), 0.95),
                         median(handOut) / median(clone) * 100), "(reference: the whole start, shim and exec included)")
        table.add("the same mission without a workspace, same run, median / p95",
                  String(format: "%.1f / %.1f ms", median(plain), ChatBench.percentile(plain.sorted(), 0.95)), "(reference)")
        table.add("clean() after a typical mission (fetch included), median",
                  String(format: "%.0f ms (%.1f %% of a clone)", median(clean), median(clean) / median(clone) * 100),
                  "(reference: done when a mission ends, not at hand-out)")
        table.add("inspect(fsck: false), median", String(format: "%.1f ms", median(quick)), "(reference)")
        table.add("inspect(fsck: true), median", String(format: "%.0f ms", median(fsck)), "(reference)")
        table.print(json: json)
        if !json {
            print("""

            note: a slot is cleaned when its mission ends (by a worker the runner starts), so a mission
            that finds a free slot gets a clean one at once: its hand-out is the claim transaction that
            allocates the slot plus the shim's start, measured above from outside.
            """)
        }
    }

    /// Enqueue → the mission's command running, with a workspace slot (warm) and without,
    /// alternating, through a real runner loop: the outside view (a file the command makes, seen
    /// by inotify). Returns the two sets of samples in ms.
    static func handOutLatency(bare: String, root: String, rounds: Int) throws -> (workspace: [Double], plain: [Double]) {
        let dir = StateDirectory(root + "/state")
        let marks = root + "/marks"
        try AtomicFile.makeDirectory(marks)
        let added = try CommandRun.run([Binaries.vigil, "--state-dir", dir.path, "workspace", "add-repo", "app", bare], timeout: .seconds(600))
        guard added.succeeded else { throw CommandError("benchmark: add-repo failed: \(added.output)") }
        let q = MissionQueue(db: try Database(path: dir.database))
        let store = WorkspaceStore(db: q.db)
        let driver = try MissionBench.idleDriver(dir, log: root + "/driver.log")
        defer {
            driver.signal(.terminate)
            _ = Spawner.wait(driver.pid)
        }
        let watch = try Inotify()
        try watch.watch(directory: marks)
        func settle(_ what: String, _ done: () throws -> Bool) throws {
            let end = Clock.boot() + .seconds(60)
            while try !done() {
                guard Clock.boot() < end else { throw CommandError("benchmark: \(what) (see \(root)/driver.log)") }
                usleep(5_000)
            }
        }
        var withSlot: [Double] = [], without: [Double] = []
        for i in 0..<(rounds * 2) {
            // Warm: the previous mission ended and its slot is clean again; the runner is idle.
            try settle("a mission did not end, or its slot was not cleaned") {
                try q.missions().allSatisfy { $0.state.isFinal } && store.slots().allSatisfy { $0.record.phase == .available }
            }
            usleep(50_000)
            _ = watch.drain()
            let name = "ran-\(i)"
            let useSlot = i % 2 == 0
            let t0 = Clock.boot()
            _ = try q.enqueue(argv: ["touch", marks + "/" + name], cwd: "/", workspace: useSlot ? "app" : nil)
            MissionRunner.poke(dir)
            var seen = false
            while !seen {
                guard !pollReadable([watch.fd], timeoutMilliseconds: 10_000).isEmpty else {
                    throw CommandError("benchmark: mission \(i) did not start within 10 s (see \(root)/driver.log)")
                }
                seen = watch.drain().contains { $0.name == name }
            }
            let ms = (Clock.boot() - t0).milliseconds
            if useSlot { withSlot.append(ms) } else { without.append(ms) }
        }
        try settle("the last mission did not end") { try q.missions().allSatisfy { $0.state.isFinal } && store.slots().allSatisfy { $0.record.phase == .available } }
        return (withSlot, without)
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
