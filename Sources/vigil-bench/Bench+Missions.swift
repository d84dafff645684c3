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

/// `vigil-bench missions`: the mission figures of the targets in docs/performance.md, measured on the disk of
/// the state directory (in a scratch directory inside it, removed afterwards).
enum MissionBench {
    static let help = """
    usage: vigil-bench missions [--enqueues N] [--queued N] [--cycles N] [--starts N] [--trials N]

    Durable enqueue latency beside a bare SQLite durable commit (same disk, same run, interleaved);
    start-up recovery with N queued missions (after kill -9 of the process that queued them);
    full cycles (enqueue, claim, complete, each its own durable transaction); enqueue → the
    mission's process running, with an idle runner (woken by the CLI's wake file); and the CPU
    of an idle runner tick.
    """

    struct Row {
        var figure: String
        var measured: String
        var target: String
        /// The number the target is judged on, and whether it was met (nil: no target of its own).
        var value: Double? = nil
        var met: Bool? = nil
    }

    static func run(_ argv: [String], stateDir: StateDirectory, json: Bool = false) throws {
        let args = try Arguments(argv, valued: ["enqueues", "queued", "cycles", "starts", "trials"], booleans: [])
        let enqueues = try args.int("enqueues", min: 10) ?? 1000
        let queued = try args.int("queued", min: 1) ?? 100_000
        let cycles = try args.int("cycles", min: 1) ?? 1000
        let starts = try args.int("starts", min: 1) ?? 30
        let trials = try args.int("trials", min: 1) ?? 3

        try AtomicFile.makeDirectory(stateDir.path)
        let work = stateDir.file("bench-missions.\(getpid())")
        try? FileManager.default.removeItem(atPath: work)
        try AtomicFile.makeDirectory(work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        var rows: [Row] = []
        printErr("measuring in \(work) …\n")

        rows += try enqueueLatency(StateDirectory(work + "/enqueue"), count: enqueues)
        rows += try fullCycles(StateDirectory(work + "/cycles"), count: cycles)
        rows += try recovery(work, queued: queued, trials: trials)
        rows += try startLatency(StateDirectory(work + "/start"), count: starts)
        rows += try idleTick(StateDirectory(work + "/idle"))

        var table = BenchTable(title: "vigil-bench missions (\(enqueues) enqueues, \(queued) queued, \(cycles) cycles, \(starts) starts, \(trials) trials)")
        for r in rows { table.add(r.figure, r.measured, r.target, value: r.value, met: r.met) }
        table.print(json: json)
    }

    // MARK: - Figures

    static func enqueueLatency(_ dir: StateDirectory, count: Int) throws -> [Row] {
        try AtomicFile.makeDirectory(dir.path)
        let q = MissionQueue(db: try Database(path: dir.database))
        let barePath = dir.file("bare.db")
        let bare = try Database(path: barePath, migrate: false)
        try bare.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        var i = 0
        /// One interleaved round (both see the same disk weather): enqueue, wake file, bare commit.
        func round() throws -> (enqueue: Double, withWake: Double, bare: Double) {
            i += 1
            let t0 = Clock.boot()
            _ = try q.enqueue(argv: ["true", "\(i)"], cwd: "/")
            let t1 = Clock.boot()
            MissionRunner.poke(dir)
            let t2 = Clock.boot()
            try bare.write { try bare.execute("INSERT INTO t(v) VALUES (?)", [.text("[\"true\",\"\(i)\"]")]) }
            let t3 = Clock.boot()
            return ((t1 - t0).milliseconds, (t2 - t0).milliseconds, (t3 - t2).milliseconds)
        }
        func walSize(_ db: String) -> Int64 {
            var st = stat()
            return stat(db + "-wal", &st) == 0 ? Int64(st.st_size) : 0
        }
        // Cold: fresh databases, the WAL files still grow (every fdatasync also commits the
        // file system's journal for the new size).
        var cold: [(enqueue: Double, withWake: Double, bare: Double)] = []
        for _ in 0..<count { cold.append(try round()) }
        // Warm-up until both WAL files stopped growing (checkpointed and reused: the steady
        // state of a running system), then the same again.
        var stable = 0
        var sizes = (walSize(dir.database), walSize(barePath))
        var rounds = 0
        while stable < 300 && rounds < 5000 {
            _ = try round()
            rounds += 1
            let now = (walSize(dir.database), walSize(barePath))
            stable = now == sizes ? stable + 1 : 0
            sizes = now
        }
        var warm: [(enqueue: Double, withWake: Double, bare: Double)] = []
        for _ in 0..<count { warm.append(try round()) }

        func rows(_ samples: [(enqueue: Double, withWake: Double, bare: Double)], _ label: String) -> [Row] {
            let enq = samples.map(\.enqueue), raw = samples.map(\.bare), wake = samples.map(\.withWake)
            return [
                Row(figure: "\(label): bare SQLite commit (WAL, FULL), p50 / p95 / p99", measured: ms3(raw), target: "(reference)"),
                Row(figure: "\(label): durable enqueue, p50 / p95 / p99", measured: ms3(enq), target: "p99 ≤ 5 ms",
                    value: percentile(enq, 99), met: percentile(enq, 99) <= 5),
                Row(figure: "\(label):   enqueue p50 ÷ bare commit p50", measured: String(format: "%.2f×", median(enq) / median(raw)), target: "≤ 1.5×",
                    value: median(enq) / median(raw), met: median(enq) / median(raw) <= 1.5),
                Row(figure: "\(label):   enqueue + wake file (`mission add`), p50 / p95", measured: ms2(wake), target: ""),
            ]
        }
        return rows(warm, "warm WAL") + rows(cold, "cold WAL (growing)")
    }

    static func fullCycles(_ dir: StateDirectory, count: Int) throws -> [Row] {
        try AtomicFile.makeDirectory(dir.path)
        let q = MissionQueue(db: try Database(path: dir.database))
        func done(_ m: Mission) -> MissionQueue.Settlement {
            .finished(MissionResult(mission: m.id, attempt: m.attempts, exitCode: 0, signal: nil, reason: nil, childPID: nil, started: "", finished: ""))
        }
        // Warm-up: let the WAL reach its working size first (a growing WAL file makes every
        // fdatasync also write metadata); both variants below then run on the same footing.
        for i in 0..<min(count, 300) {
            let id = try q.enqueue(argv: ["warm", "\(i)"], cwd: "/")
            guard let m = try q.claim(limit: 1).first, m.id == id else { throw CommandError("benchmark: claimed the wrong mission") }
            _ = try q.settleAndClaim([(id, m.attempts, done(m))], claimLimit: 0)
        }
        // As the runner's tick does it: an ended attempt and the next claim share one commit.
        let t0 = Clock.boot()
        _ = try q.enqueue(argv: ["true", "0"], cwd: "/")
        var current = try q.claim(limit: 1).first
        for i in 0..<count {
            guard let m = current else { throw CommandError("benchmark: nothing claimed at cycle \(i)") }
            if i + 1 < count { _ = try q.enqueue(argv: ["true", "\(i + 1)"], cwd: "/") }
            let (outcomes, claimed) = try q.settleAndClaim([(m.id, m.attempts, done(m))], claimLimit: i + 1 < count ? 1 : 0)
            guard outcomes == [.ended(.done, reason: nil)] else { throw CommandError("benchmark: mission \(m.id) not completed") }
            current = claimed.first
        }
        let pipelined = Clock.boot() - t0
        // Every step its own transaction (3 commits per mission).
        let t1 = Clock.boot()
        for i in 0..<count {
            let id = try q.enqueue(argv: ["true", "\(i)"], cwd: "/")
            guard let m = try q.claim(limit: 1).first, m.id == id else { throw CommandError("benchmark: claimed the wrong mission") }
            _ = try q.settleAndClaim([(id, m.attempts, done(m))], claimLimit: 0)
        }
        let separate = Clock.boot() - t1
        return [
            Row(figure: "\(count) full cycles (enqueue, claim, complete; each durable)", measured: String(format: "%.3f s", pipelined.seconds), target: "≤ 1 s",
                value: pipelined.seconds, met: pipelined.seconds <= 1),
            Row(figure: "  (complete + next claim share a commit, as in the runner's tick: 2 commits/mission)", measured: "", target: ""),
            Row(figure: "  \(count) cycles with 3 separate commits per mission", measured: String(format: "%.3f s", separate.seconds), target: "(reference)"),
        ]
    }

    static func recovery(_ work: String, queued: Int, trials: Int) throws -> [Row] {
        var recoverMS: [Double] = []
        var firstMS: [Double] = []
        var openMS: [Double] = []
        for trial in 0..<trials {
            let dir = StateDirectory(work + "/recovery-\(trial)")
            // A separate process queues them and is killed -9 right after its commit.
            var options = Spawner.Options()
            options.outputPath = work + "/fill.log"
            let filler = try Spawner.spawn([Binaries.vigilBench, "--state-dir", dir.path, "fill", "\(queued)"], options)
            _ = Spawner.wait(filler.pid)
            let journal = Journal(path: dir.journal, source: "bench")
            let t0 = Clock.boot()
            let runner = try MissionRunner(stateDir: dir, journal: journal, maxParallel: 1, shimExecutable: Binaries.vigil, notify: { _, _ in })
            let summary = try runner.recover()
            let t1 = Clock.boot()
            // The claim goes through a queue of its own (the runner's is its own business): its
            // open is counted in "first mission claimed", so that figure is if anything high.
            guard try MissionQueue(db: try Database(path: dir.database)).claim(limit: 1).count == 1 else {
                throw CommandError("benchmark: no mission claimable after recovery (\(summary.text))")
            }
            let t2 = Clock.boot()
            recoverMS.append((t1 - t0).milliseconds)
            firstMS.append((t2 - t0).milliseconds)
            let t3 = Clock.boot()
            _ = try Database(path: dir.database).scalarInt("SELECT count(*) FROM missions WHERE state = 'pending'")
            openMS.append((Clock.boot() - t3).milliseconds)
        }
        return [
            Row(figure: "start-up recovery, \(queued) queued (after kill -9), median of \(trials)", measured: String(format: "%.1f ms", median(recoverMS)), target: "≤ 200 ms",
                value: median(recoverMS), met: median(recoverMS) <= 200),
            Row(figure: "  first mission claimed (recovery + claim)", measured: String(format: "%.1f ms", median(firstMS)), target: "≤ 100 ms",
                value: median(firstMS), met: median(firstMS) <= 100),
            Row(figure: "  (open + count the queue, for reference)", measured: String(format: "%.1f ms", median(openMS)), target: ""),
        ]
    }

    /// A runner loop that only runs missions (`vigil-bench drive`) with a 10 s tick, so only the
    /// wake file (inotify) makes it start a mission quickly; returned once it has recovered
    /// (it journals that) and gone idle. The caller ends it (SIGTERM, then reaps it).
    static func idleDriver(_ dir: StateDirectory, log: String) throws -> ProcessIdentity {
        var options = Spawner.Options()
        options.outputPath = log
        let driver = try Spawner.spawn([Binaries.vigilBench, "--state-dir", dir.path, "drive", "--tick", "10"], options)
        let ready = Clock.boot() + .seconds(10)
        while !Journal.read(path: dir.journal).entries.contains(where: { $0["event"]?.stringValue == "missions-recovered" }) {
            guard Clock.boot() < ready else {
                driver.signal(.terminate)
                _ = Spawner.wait(driver.pid)
                throw CommandError("benchmark: the mission runner did not start (see \(log))")
            }
            usleep(10_000)
        }
        return driver
    }

    static func startLatency(_ dir: StateDirectory, count: Int) throws -> [Row] {
        try AtomicFile.makeDirectory(dir.path)
        let marks = dir.file("marks")
        try AtomicFile.makeDirectory(marks)
        let q = MissionQueue(db: try Database(path: dir.database))
        let driver = try idleDriver(dir, log: dir.file("driver.log"))
        defer {
            driver.signal(.terminate)
            _ = Spawner.wait(driver.pid)
        }
        let watch = try Inotify()
        try watch.watch(directory: marks)
        var samples: [Double] = []
        for i in 0..<count {
            usleep(50_000)
            _ = watch.drain()
            let name = "ran-\(i)"
            let t0 = Clock.boot()
            _ = try q.enqueue(argv: ["touch", marks + "/" + name], cwd: "/")
            MissionRunner.poke(dir)
            var seen = false
            while !seen {
                guard !pollReadable([watch.fd], timeoutMilliseconds: 5000).isEmpty else {
                    throw CommandError("benchmark: mission \(i) did not start within 5 s (see \(dir.file("driver.log")))")
                }
                seen = watch.drain().contains { $0.name == name }
            }
            samples.append((Clock.boot() - t0).milliseconds)
        }
        // Let the last shims finish before the scratch directory goes away.
        let settled = Clock.boot() + .seconds(10)
        while try !q.missions().allSatisfy({ $0.state.isFinal }) && Clock.boot() < settled { usleep(10_000) }
        return [Row(figure: "enqueue → mission process running (idle runner), p50 / p95", measured: ms2(samples), target: "(no target; shim + exec included)")]
    }

    static func idleTick(_ dir: StateDirectory) throws -> [Row] {
        try AtomicFile.makeDirectory(dir.path)
        let runner = try MissionRunner(stateDir: dir, journal: Journal(path: dir.journal, source: "bench"), maxParallel: 1,
                                       shimExecutable: Binaries.vigil, notify: { _, _ in })
        try runner.recover()
        try runner.tick(now: Clock.boot())
        let n = 2000
        let c0 = Clock.processCPU()
        for _ in 0..<n { try runner.tick(now: Clock.boot()) }
        let perTick = (Clock.processCPU() - c0).milliseconds * 1000 / Double(n)
        return [Row(figure: "idle runner tick (missions part), CPU", measured: String(format: "%.1f µs", perTick), target: "probe budget ≤ 100 µs",
                    value: perTick, met: perTick <= 100)]
    }

    /// `vigil-bench fill`: queues `count` missions in one transaction (the caller then
    /// kills itself with SIGKILL, so the database is opened after a crash).
    static func fill(stateDir: StateDirectory, count: Int) throws {
        try AtomicFile.makeDirectory(stateDir.path)
        let db = try Database(path: stateDir.database)
        let now = Clock.wall().timeIntervalSince1970
        try db.write {
            for i in 0..<count {
                try db.execute("INSERT INTO missions(argv, cwd, lock_key, max_attempts, created_at) VALUES (?, ?, ?, ?, ?)",
                               [.text("[\"true\",\"\(i)\"]"), .text("/"), i % 10 == 0 ? .text("key-\(i % 7)") : .null, .int(3), .double(now)])
            }
        }
    }

    // MARK: - Statistics

    static func percentile(_ xs: [Double], _ p: Double) -> Double {
        guard !xs.isEmpty else { return .nan }
        let s = xs.sorted()
        let idx = min(s.count - 1, max(0, Int((p / 100 * Double(s.count - 1)).rounded())))
        return s[idx]
    }

    static func median(_ xs: [Double]) -> Double { percentile(xs, 50) }

    static func ms2(_ xs: [Double]) -> String {
        String(format: "%.3f / %.3f ms", percentile(xs, 50), percentile(xs, 95))
    }

    static func ms3(_ xs: [Double]) -> String {
        String(format: "%.3f / %.3f / %.3f ms", percentile(xs, 50), percentile(xs, 95), percentile(xs, 99))
    }
}
