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

/// `vigil-bench heal`: fault → healthy-again times against a live pair at default tick and
/// heartbeat, measured from outside (docs/performance.md): a watcher in this process notices
/// the first heartbeat in `bridge.beat` of a bridge that is not the faulted one (for drift: one
/// stamped with the new version). Beside it, the runner's own journal times (`heal`,
/// `recovered`), so the two views can be compared. Also the crash-loop respawn count, probe
/// CPU, idle CPU and RSS. Idle is measured over `--idle` (10 s) on the same pair right after the
/// trials; RSS is read at the end of it (by then the pages the trials mapped were given back:
/// docs/architecture.md, "Memory").
enum HealBench {
    static func run(_ argv: [String], json: Bool = false) throws {
        let args = try Arguments(argv, valued: ["trials", "idle", "out"])
        let trials = try args.int("trials", min: 1) ?? 5
        let idle = try args.duration("idle") ?? .seconds(10)
        var table = BenchTable(title: "vigil-bench heal (\(trials) trials each, tick 1 s, heartbeat 1 s, stale 3 s)")

        // One pair for kill -9, SIGSTOP and drift: default tick/heartbeat; stale 3 s for the
        // hung trials; a short stability window so consecutive trials are independent.
        let stale = 3.0
        let pair = try BenchPair(flags: ["--stale-after", "\(stale)", "--stable-after", "0.5", "--version-file", "VERSION"], version: "1")
        defer { pair.finish() }
        try pair.waitHealthy()

        var dead: [BenchPair.Trial] = [], hung: [BenchPair.Trial] = [], drift: [BenchPair.Trial] = []
        var driftSignals = 0
        for i in 0..<trials {
            printErr("kill -9 trial \(i + 1)/\(trials)\n")
            dead.append(try pair.trial(.kill))
        }
        for i in 0..<trials {
            printErr("SIGSTOP trial \(i + 1)/\(trials)\n")
            // A SIGSTOP comes at any moment of the bridge's beat interval: trial i stops it
            // (i + ½)/trials of an interval after a beat, so the phases are spread evenly and the
            // median is that of a stop at a random moment (not an accident of the bench's own
            // waits). "past last beat + stale-after" is the part that does not depend on it.
            let t = try pair.trial(.stop(staleAfter: .seconds(stale), phase: (Double(i) + 0.5) / Double(trials)))
            printErr(String(format: "  outside %.3f s (%.3f s past last beat + stale-after); journal: SIGTERM %.3f s, recovered %.3f s; stopped bridge's beats after SIGCONT %d, recoveries told %d\n",
                            t.outside, t.healedLag ?? .nan, t.action ?? .nan, t.recovered, t.faultedBeats ?? 0, t.recoveries))
            hung.append(t)
        }
        for i in 0..<trials {
            printErr("drift trial \(i + 1)/\(trials)\n")
            let before = pair.signalActions()
            drift.append(try pair.trial(.drift(version: "\(i + 2)")))
            driftSignals += pair.signalActions() - before
        }
        // Probe cost, idle CPU and RSS, on the same (now idle) pair.
        printErr("idle measurement for \(idle)\n")
        let idleStats = try pair.idle(for: idle)

        func ms(_ xs: [Double?]) -> String {
            let s = Stats(xs.compactMap { $0 })
            return String(format: "%.1f / %.1f / %.1f ms (n=%d)", s.median * 1e3, s.p95 * 1e3, s.max * 1e3, s.values.count)
        }
        func sec(_ xs: [Double?]) -> String { Stats(xs.compactMap { $0 }).seconds() }
        func median(_ xs: [Double?]) -> Double { Stats(xs.compactMap { $0 }).median }
        func medians(_ a: [Double?], _ b: [Double?], unit: Double, _ fmt: String) -> String {
            String(format: fmt, Stats(a.compactMap { $0 }).median * unit, Stats(b.compactMap { $0 }).median * unit)
        }
        table.add("kill -9 → replacement's first heartbeat, outside (median / p95 / max)", ms(dead.map(\.outside)),
                  "≤ 25 ms median", "runit 10 ms, monit 526 ms, s6 1.01 s, supervisord 2.02 s",
                  value: median(dead.map(\.outside)) * 1e3, atMost: 25)
        table.add("  runner's journal: kill -9 → respawn / → recovered (medians)",
                  medians(dead.map(\.action), dead.map(\.recovered), unit: 1e3, "%.1f / %.1f ms"), "(reference)")
        table.add("SIGSTOP → healthy at stale 3 s, outside (median / p95 / max)", sec(hung.map(\.outside)),
                  "≤ 2.8 s median", "monit 4.61 s; others never", value: median(hung.map(\.outside)), atMost: 2.8)
        table.add("  healthy past last beat + stale-after, outside (median / max)",
                  String(format: "%.3f / %.3f s", Stats(hung.compactMap(\.healedLag)).median, Stats(hung.compactMap(\.healedLag)).max), "(reference)")
        table.add("  acted past last beat + stale-after (median / max)",
                  String(format: "%.3f / %.3f s", Stats(hung.compactMap(\.lag)).median, Stats(hung.compactMap(\.lag)).max), "≤ 0.35 s",
                  value: Stats(hung.compactMap(\.lag)).max, atMost: 0.35)
        table.add("  runner's journal: SIGSTOP → SIGTERM / → recovered (medians)",
                  medians(hung.map(\.action), hung.map(\.recovered), unit: 1, "%.3f / %.3f s"), "(reference)")
        // One SIGSTOP is one incident: the stopped bridge, continued by tier 2, neither beats on
        // its way out nor is told recovered (docs/architecture.md, "The escalation state machine").
        let stoppedBeats = hung.map { $0.faultedBeats ?? 0 }, incidents = hung.map { $0.recoveries }
        table.add("  beats of the stopped bridge after SIGCONT, outside (per trial)", stoppedBeats.map(String.init).joined(separator: ", "), "0",
                  value: Double(stoppedBeats.max() ?? 0), met: stoppedBeats.allSatisfy { $0 == 0 })
        table.add("  incidents told recovered per SIGSTOP (per trial)", incidents.map(String.init).joined(separator: ", "), "1",
                  value: Double(incidents.max() ?? 0), met: incidents.allSatisfy { $0 == 1 })
        table.add("drift (program replaced) → healthy, outside (median / p95 / max)", sec(drift.map(\.outside)),
                  "≤ 0.15 s median, no signal", "monit 1.62 s (by killing)", value: median(drift.map(\.outside)), atMost: 0.15)
        table.add("  runner's journal: drift → restart marker / → recovered (medians)",
                  medians(drift.map(\.action), drift.map(\.recovered), unit: 1e3, "%.1f / %.1f ms"), "(reference)")
        table.add("signals sent for drift", "\(driftSignals)", "0", value: Double(driftSignals), met: driftSignals == 0)
        table.add("probe CPU per tick", String(format: "%.1f µs", idleStats.probeMicros), "≤ 100 µs", "Kōan 2.2 ms", value: idleStats.probeMicros, atMost: 100)
        table.add("idle runner CPU", String(format: "%.3f %%", idleStats.runnerCPU), "≤ 0.2 %", "monit 1.23 %", value: idleStats.runnerCPU, atMost: 0.2)
        table.add("idle bridge CPU", String(format: "%.3f %%", idleStats.bridgeCPU), "≤ 0.2 %", value: idleStats.bridgeCPU, atMost: 0.2)
        table.add("idle runner memory", idleStats.runner.text, "RSS ≤ 10 MB", "monit 7.6 MB, supervisord 30.7 MB, runit 2.6 MB",
                  value: Double(idleStats.runner.rss), atMost: 10e6)
        table.add("idle bridge memory", idleStats.bridge.text, "RSS ≤ 10 MB", value: Double(idleStats.bridge.rss), atMost: 10e6)
        let libraries = idleStats.runner.toolchainLibraries.union(idleStats.bridge.toolchainLibraries)
        table.add("  Swift toolchain libraries mapped (runner, bridge)", libraries.isEmpty ? "none" : libraries.sorted().joined(separator: " "),
                  "none", value: Double(libraries.count), met: libraries.isEmpty)
        let binarySize = (try? FileManager.default.attributesOfItem(atPath: Binaries.vigil)[.size] as? Int) ?? 0
        table.add("  vigil binary size", ByteSize.format(UInt64(binarySize)), "(reference)")
        pair.finish()

        // Crash loop: a bridge that dies at every start.
        var loops: [Int] = []
        for i in 0..<trials {
            printErr("crash-loop trial \(i + 1)/\(trials)\n")
            let p = try BenchPair(flags: ["--circuit-limit", "3"], fault: "exit-at-start")
            defer { p.finish() }
            try p.waitFor("circuit open", timeout: 60) { !p.events("circuit-open").isEmpty }
            loops.append(p.events("heal").filter { $0["action"]?.stringValue == "respawn" }.count)
            p.finish()
        }
        table.add("crash loop: respawns until the circuit opened (limit 3)", loops.map(String.init).joined(separator: ", "), "exactly 3 (±1 tick)", "monit 5 starts then silent; supervisord 5–22; runit, s6 never stop",
                  value: loops.map(Double.init).max(), met: loops.allSatisfy { $0 == 3 })

        table.print(json: json)
        if let out = args.value("out") { try Data((table.text + "\n").utf8).write(to: URL(fileURLWithPath: out)) }
    }
}

/// The outside view of `bridge.beat`: inotify on the state directory (set up before the fault),
/// and the file re-read at every event and at least every 5 ms.
final class BeatWatcher {
    let dir: StateDirectory
    private let inotify: Inotify

    init(_ dir: StateDirectory) throws {
        self.dir = dir
        inotify = try Inotify()
        try inotify.watch(directory: dir.path)
    }

    /// Waits for a heartbeat that `accept` takes; returns the boot time it was first seen.
    func waitFor(timeout: TimeSpan, _ accept: (Heartbeat) -> Bool) throws -> BootInstant {
        let deadline = Clock.boot() + timeout
        while true {
            if case .ok(let hb) = Heartbeat.read(dir.beatFile(.bridge)), accept(hb) { return Clock.boot() }
            let now = Clock.boot()
            guard now < deadline else { throw CommandError("benchmark: timed out waiting for a new heartbeat") }
            _ = pollReadable([inotify.fd], timeoutMilliseconds: min(5, (deadline - now).pollMilliseconds))
            _ = inotify.drain()
        }
    }
}

/// A live pair (a runner started directly; it starts the bridge) in a temporary state dir.
final class BenchPair {
    let dir: StateDirectory
    let runner: ProcessIdentity
    private var finished = false

    init(flags: [String], version: String? = nil, fault: String? = nil, config: String? = nil) throws {
        dir = StateDirectory(try TempDirectory.make(prefix: "vigil-bench"))
        var flags = flags
        if let i = flags.firstIndex(of: "VERSION") { flags[i] = dir.file("VERSION") }
        if let version { try Data(version.utf8).write(to: URL(fileURLWithPath: dir.file("VERSION"))) }
        if let config { try Data(config.utf8).write(to: URL(fileURLWithPath: dir.config)) }
        var o = Spawner.Options()
        o.newSession = true
        o.outputPath = dir.file("runner.out")
        if let fault {
            try Data(fault.utf8).write(to: URL(fileURLWithPath: dir.file("fault")))
            o.environment["VIGIL_TEST_FAULTS"] = "1"
        }
        runner = try Spawner.spawn([Binaries.vigil, "runner", "--state-dir", dir.path] + flags, o)
    }

    func writeVersion(_ v: String) {
        try? AtomicFile.write(Data(v.utf8), to: dir.file("VERSION"))
    }

    var journalOffset = 0
    /// Every journal entry read so far, in order.
    private(set) var cache: [[String: JSONValue]] = []
    func events(_ name: String) -> [[String: JSONValue]] {
        let r = Journal.read(path: dir.journal, from: journalOffset)
        cache += r.entries
        journalOffset = r.offset
        return cache.filter { $0["event"]?.stringValue == name }
    }

    func signalActions() -> Int {
        events("heal").filter { ["terminate", "kill"].contains($0["action"]?.stringValue ?? "") }.count
    }

    var bridge: ProcessIdentity? {
        if case .ok(let r) = StateFile.read(dir.pidFile(.bridge), kind: ProcessRecord.kind, as: ProcessRecord.self) { return r.identity }
        return nil
    }

    func waitFor(_ what: String, timeout: Double = 30, _ cond: () -> Bool) throws {
        let deadline = Clock.boot() + .seconds(timeout)
        while !cond() {
            guard Clock.boot() < deadline else { throw CommandError("benchmark: timed out waiting for \(what)") }
            usleep(2_000)
        }
    }

    func waitHealthy() throws {
        try waitFor("a healthy bridge") {
            guard case .ok(let rec) = StateFile.read(dir.pidFile(.runner), kind: ProcessRecord.kind, as: ProcessRecord.self) else { return false }
            return rec.lastVerdict == .healthy && bridge != nil
        }
    }

    enum Fault {
        case kill
        /// `phase`: when in the heartbeat interval (1 s) to stop it, as a fraction after a beat.
        case stop(staleAfter: TimeSpan, phase: Double)
        case drift(version: String)
    }

    /// One trial, in seconds from the fault: the outside view, the runner's action (respawn,
    /// SIGTERM or restart marker, from its journal) and its `recovered` entry; for a hang, how far
    /// past last beat + stale-after the runner acted.
    struct Trial {
        var outside: Double
        var action: Double?
        var recovered: Double
        var lag: Double?
        /// For a hang: the new bridge's first beat seen from outside, past last beat + stale-after.
        var healedLag: Double?
        /// For a hang: heartbeats the stopped bridge wrote after it was stopped (seen from outside).
        var faultedBeats: Int?
        /// `recovered` entries of the trial's incident(s), up to the recovery of the bridge that stayed.
        var recoveries: Int
    }

    /// Injects a fault at a known boot time, waits for the first heartbeat of a bridge that is
    /// not the faulted one (for drift: one stamped with the new version) and for the runner's
    /// `recovered` entry. Each trial starts from a proven bridge.
    func trial(_ fault: Fault) throws -> Trial {
        try waitHealthy()
        usleep(700_000) // past the stability window: each trial starts from a proven bridge
        guard let id = bridge else { throw CommandError("no bridge") }
        let watcher = try BeatWatcher(dir)
        _ = events("heal")
        let healsBefore = cache.count, recoveredBefore = events("recovered").count
        var t0 = Clock.boot()
        var lastBeat: BootInstant? = nil
        var faultedSeqs: Set<UInt64>? = nil
        let accept: (Heartbeat) -> Bool
        switch fault {
        case .kill:
            _ = kill(id.pid, SIGKILL)
            accept = { $0.identity != id }
        case .stop(_, let phase):
            // Just after one of its beats, then the trial's phase of the interval.
            var seq: UInt64? = nil
            if case .ok(let hb) = Heartbeat.read(dir.beatFile(.bridge)), hb.identity == id { seq = hb.seq }
            let beat = try watcher.waitFor(timeout: .seconds(10)) { $0.identity == id && $0.seq != seq }
            let at = beat + .seconds(phase)
            while Clock.boot() < at { usleep(UInt32(max(100, min(5_000, (at - Clock.boot()).nanoseconds / 1_000)))) }
            t0 = Clock.boot()
            _ = kill(id.pid, SIGSTOP)
            try waitFor("the bridge stopped", timeout: 10) { ProcStat.read(pid: id.pid)?.state == "T" }
            // Stopped: no more beats from it, so this one is its last.
            if case .ok(let hb) = Heartbeat.read(dir.beatFile(.bridge)), hb.identity == id { lastBeat = hb.beat }
            faultedSeqs = []
            let stoppedAt = lastBeat
            accept = { hb in
                if hb.identity == id, let b = stoppedAt, hb.beat > b { faultedSeqs?.insert(hb.seq) }
                return hb.identity != id
            }
        case .drift(let v):
            writeVersion(v)
            let dir = self.dir
            accept = { hb in
                guard hb.beat > t0,
                      case .ok(let r) = StateFile.read(dir.pidFile(.bridge), kind: ProcessRecord.kind, as: ProcessRecord.self) else { return false }
                return r.identity == hb.identity && r.version == "file:\(v)"
            }
        }
        let seen = try watcher.waitFor(timeout: .seconds(60), accept)
        // The recovery of the bridge that stayed (for a hang, not one told for the stopped bridge).
        let stayed: ([String: JSONValue]) -> Bool = { e in
            if case .stop = fault { return e["bridge"]?["pid"]?.intValue != Int64(id.pid) }
            return true
        }
        try waitFor("recovery", timeout: 60) { events("recovered").dropFirst(recoveredBefore).contains(where: stayed) }
        func since(_ e: [String: JSONValue]?) -> Double? { e?["boot"]?.intValue.map { (BootInstant(nanoseconds: $0) - t0).seconds } }
        let heals = cache[healsBefore...].filter { $0["event"]?.stringValue == "heal" }
        let wanted: String
        switch fault {
        case .kill: wanted = "respawn"
        case .stop: wanted = "terminate"
        case .drift: wanted = "restart-marker"
        }
        let action = heals.first { $0["action"]?.stringValue == wanted }
        var lag: Double? = nil
        var healedLag: Double? = nil
        if case .stop(let stale, _) = fault, let b = lastBeat {
            if let at = action?["boot"]?.intValue { lag = (BootInstant(nanoseconds: at) - (b + stale)).seconds }
            healedLag = (seen - (b + stale)).seconds
        }
        // The runner's own "healthy again" moment: the first healthy probe of the bridge that
        // stayed (`healthy_boot`; the entry itself is written once it proved stable).
        let recoveries = events("recovered").dropFirst(recoveredBefore)
        let recovered = recoveries.last(where: stayed)
        let healthyAt = recovered?["healthy_boot"]?.intValue.map { (BootInstant(nanoseconds: $0) - t0).seconds } ?? since(recovered)
        return Trial(outside: (seen - t0).seconds, action: since(action), recovered: healthyAt ?? .nan, lag: lag,
                     healedLag: healedLag, faultedBeats: faultedSeqs?.count, recoveries: recoveries.count)
    }

    struct Idle {
        var probeMicros: Double
        var runnerCPU: Double
        var bridgeCPU: Double
        var runner: Memory
        var bridge: Memory
    }

    struct Memory {
        var rss: UInt64
        /// Proportional set size: shared pages (the program's own, and the system libraries both
        /// processes map) divided among their users.
        var pss: UInt64
        /// Private pages only (what this process alone costs).
        var uss: UInt64
        /// Shared libraries of the Swift toolchain it maps (none in a release build, which links
        /// the runtime and FoundationEssentials in: docs/operator-guide.md, "Install").
        var toolchainLibraries: Set<String>

        init(pid: Int32) {
            var r: UInt64 = 0, p: UInt64 = 0, u: UInt64 = 0
            let text = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count >= 2, let kb = UInt64(f[1]) else { continue }
                switch f[0] {
                case "Rss:": r = kb * 1024
                case "Pss:": p = kb * 1024
                case "Private_Clean:", "Private_Dirty:": u += kb * 1024
                default: break
                }
            }
            rss = r; pss = p; uss = u
            let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
            toolchainLibraries = Set(maps.split(separator: "\n").compactMap { line -> String? in
                guard let path = line.split(separator: " ", omittingEmptySubsequences: true).last, path.hasPrefix("/") else { return nil }
                let name = (String(path) as NSString).lastPathComponent
                let toolchain = ["libswift", "libFoundation", "lib_Foundation", "libdispatch", "libBlocksRuntime"].contains { name.hasPrefix($0) }
                return toolchain ? name : nil
            })
        }

        var text: String { "RSS \(ByteSize.format(rss)), PSS \(ByteSize.format(pss)), private \(ByteSize.format(uss))" }
    }

    /// CPU time of all threads of `pid`, from /proc/PID/task/*/schedstat (nanoseconds).
    static func cpuSeconds(_ pid: Int32) -> Double {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var ns: Double = 0
        for t in tasks {
            if let s = try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/schedstat", encoding: .utf8),
               let first = s.split(separator: " ").first, let v = Double(first) { ns += v }
        }
        return ns / 1e9
    }

    func idle(for span: TimeSpan) throws -> Idle {
        try waitHealthy()
        usleep(1_000_000)
        guard let b = bridge else { throw CommandError("no bridge") }
        let r0 = BenchPair.cpuSeconds(runner.pid), b0 = BenchPair.cpuSeconds(b.pid), t0 = Clock.boot()
        usleep(UInt32(span.seconds * 1e6))
        let elapsed = (Clock.boot() - t0).seconds
        let r1 = BenchPair.cpuSeconds(runner.pid), b1 = BenchPair.cpuSeconds(b.pid)
        var probe = Double.nan
        if case .ok(let r) = StateFile.read(dir.pidFile(.runner), kind: ProcessRecord.kind, as: ProcessRecord.self) { probe = r.probeCPUMicros ?? .nan }
        return Idle(probeMicros: probe, runnerCPU: (r1 - r0) / elapsed * 100, bridgeCPU: (b1 - b0) / elapsed * 100,
                    runner: Memory(pid: runner.pid), bridge: Memory(pid: b.pid))
    }

    /// Stops the pair (SIGTERM to the runner stops the bridge too) and removes the directory.
    func finish() {
        guard !finished else { return }
        finished = true
        if let pidfd = runner.openPidFD() {
            pidfd.signal(.terminate)
            if !pidfd.waitForExit(timeoutMilliseconds: 10_000) { pidfd.signal(.kill) }
        }
        _ = Spawner.wait(runner.pid)
        if let b = bridge, runsVigil(b, role: .bridge, dir: dir) { b.signal(.kill) }
        try? FileManager.default.removeItem(atPath: dir.path)
    }
}

/// `vigil-bench probe --state-dir DIR`: the cost of each part of one probe, against a live pair.
enum ProbeBench {
    static func run(_ dir: StateDirectory) throws {
        let files = StateFiles(dir: dir, journal: Journal(path: "/dev/null", source: "bench"))
        let n = 2000
        func time(_ name: String, _ body: () -> Void) {
            body()
            let c0 = Clock.threadCPU()
            for _ in 0..<n { body() }
            let per = (Clock.threadCPU() - c0).seconds * 1e6 / Double(n)
            printOut(String(format: "%-32@ %8.1f µs CPU", name as NSString, per))
        }
        time("read bridge.json (raw)") { _ = StateFile.read(dir.pidFile(.bridge), kind: ProcessRecord.kind, as: JSONValue.self) }
        time("read+decode bridge.json") { _ = files.loadRecord(.bridge) }
        let cache = StateFileCache<ProcessRecord>(dir.pidFile(.bridge), kind: ProcessRecord.kind)
        time("bridge.json through the cache") { _ = cache.load(files) }
        time("read+parse bridge.beat") { _ = Heartbeat.read(dir.beatFile(.bridge)) }
        let rec = files.loadRecord(.bridge)
        let payload = Data((try? String(contentsOfFile: dir.pidFile(.bridge), encoding: .utf8))?.split(separator: "\n").last.map { Array($0.utf8) } ?? [])
        time("JSONSerialization of payload") { _ = try? JSONSerialization.jsonObject(with: payload) }
        time("JSONDecoder of payload") { _ = try? JSONDecoder().decode(ProcessRecord.self, from: payload) }
        time("liveness (/proc/PID/stat)") { _ = rec?.identity.liveness() }
        time("exe identity (stat)") { _ = Executable.fileIdentity(Binaries.vigil) }
        time("marker absent (open ENOENT)") { _ = files.loadMarker(dir.restartMarker(.runner)) }
        time("classify + heal step") {
            let f = ProbeFacts(process: .alive(rssBytes: nil), lastBeat: Clock.boot(), stampedVersion: "a", currentVersion: "a")
            let v = classify(f, now: Clock.boot(), limits: ProbeLimits(staleAfter: .seconds(3)))
            _ = HealMachine.step(HealObservation(verdict: v, lockFree: false), state: HealState(), now: Clock.boot(), policy: Tunables().policy)
        }
    }
}
