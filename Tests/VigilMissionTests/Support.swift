import Foundation
import Glibc
import Testing
@testable import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// The `vigil` executable built beside this test bundle.
let vigilPath = Binaries.vigil

/// A temp directory with a state directory, the drivers ("runners") started in it, and a
/// check at the end that nothing of ours is left running.
final class MissionEnv {
    let root: String
    let state: StateDirectory
    private(set) var drivers: [Int32] = []
    private var runCount = 0
    private var _queue: MissionQueue?

    init(_ name: String) throws {
        root = try TempDir.make("vigil-mt-\(name)")
        state = StateDirectory(root + "/state")
    }

    func path(_ name: String) -> String { root + "/" + name }

    var queue: MissionQueue {
        get throws {
            if let q = _queue { return q }
            try AtomicFile.makeDirectory(state.path)
            let q = MissionQueue(db: try Database(path: state.database, busyTimeout: 5))
            _queue = q
            return q
        }
    }

    /// Closes the test's own database connection (before the database file is replaced).
    func closeQueue() {
        _queue = nil
    }

    func mission(_ id: Int64) throws -> Mission {
        try #require(try queue.mission(id))
    }

    /// Runs `vigil --state-dir STATE ARGS…` to completion.
    @discardableResult
    func vigil(_ args: [String], env: [String: String] = [:], cwd: String? = nil) throws -> RunResult {
        runCount += 1
        let out = path("run-\(runCount).out")
        let err = path("run-\(runCount).err")
        let pid = try spawn([vigilPath, "--state-dir", state.path] + args, env: env, stdout: out, stderr: err, cwd: cwd, newSession: false)
        let status = Spawner.wait(pid) ?? -1
        let o = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let e = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        return RunResult(code: exitCode(fromWaitStatus: status), out: o, err: e)
    }

    /// `vigil mission add` that must succeed; returns the printed id.
    func add(_ argv: [String], lock: String? = nil, maxAttempts: Int? = nil, letDaemonsGo: Bool = false, flags: [String] = []) throws -> Int64 {
        var args = ["mission", "add"] + flags
        if let lock { args += ["--lock", lock] }
        if let maxAttempts { args += ["--max-attempts", "\(maxAttempts)"] }
        if letDaemonsGo { args.append("--let-daemons-go") }
        let r = try vigil(args + ["--"] + argv, cwd: root)
        #expect(r.code == 0, "mission add failed: \(r.err)")
        return try #require(Int64(r.out.trimmingCharacters(in: .whitespacesAndNewlines)), "mission add printed \(r.out.debugDescription)")
    }

    /// Starts a mission-only runner loop (`vigil-bench drive`) in its own session.
    @discardableResult
    func startDriver(maxParallel: Int = 1, termGrace: String = "0.3", env: [String: String] = [:]) throws -> Int32 {
        let log = path("driver-\(drivers.count + 1).log")
        let pid = try spawn([Binaries.vigilBench, "--state-dir", state.path, "drive", "--tick", "0.05",
                             "--max-parallel", "\(maxParallel)", "--term-grace", termGrace],
                            env: env, stdout: log, stderr: log, cwd: root, newSession: true)
        drivers.append(pid)
        return pid
    }

    /// kill -9 of a driver, reaped.
    func kill9(_ pid: Int32) {
        kill(pid, SIGKILL)
        _ = Spawner.wait(pid)
        drivers.removeAll { $0 == pid }
    }

    /// SIGTERM (a graceful runner restart), reaped.
    func stop(_ pid: Int32) {
        kill(pid, SIGTERM)
        _ = Spawner.wait(pid)
        drivers.removeAll { $0 == pid }
    }

    /// Waits for a driver that kills itself (a crash point) and reaps it.
    func waitForExit(_ pid: Int32) -> Int32? {
        let status = Spawner.wait(pid)
        drivers.removeAll { $0 == pid }
        return status
    }

    func isRunning(_ pid: Int32) -> Bool {
        Spawner.reap(pid) == nil && kill(pid, 0) == 0
    }

    func journal() -> [[String: JSONValue]] {
        Journal.read(path: state.journal).entries
    }

    func events(_ name: String) -> [[String: JSONValue]] {
        journal().filter { $0["event"]?.stringValue == name }
    }

    /// Live processes that belong to this test: the temp dir in their argv, or this state dir
    /// in their environment.
    func ourProcesses() -> [Int32] {
        var out: [Int32] = []
        let mark = Array(root.utf8)
        let envMark = Array("VIGIL_STATE_DIR=\(state.path)".utf8)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        for name in names {
            guard let pid = Int32(name), pid != getpid(), let st = ProcStat.read(pid: pid), !st.isZombie else { continue }
            let cmd = (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")).map(Array.init) ?? []
            let env = (FileManager.default.contents(atPath: "/proc/\(pid)/environ")).map(Array.init) ?? []
            if contains(cmd, mark) || env.split(separator: 0).contains(where: { $0.elementsEqual(envMark) }) { out.append(pid) }
        }
        return out
    }

    private func contains(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, hay.count >= needle.count else { return false }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] {
            if Array(hay[i..<(i + needle.count)]) == needle { return true }
        }
        return false
    }

    /// Stops the drivers, checks that nothing is left running (killing and reporting what is),
    /// checks the database, and removes the temp dir.
    func finish(allowRunning: Bool = false) {
        for pid in drivers { stop(pid) }
        var left: [Int32] = []
        let deadline = Clock.boot() + .seconds(5)
        repeat {
            left = ourProcesses()
            if left.isEmpty { break }
            usleep(20_000)
        } while Clock.boot() < deadline
        if !allowRunning {
            #expect(left.isEmpty, "processes left behind: \(left.map { ($0, ProcStat.commandLine(pid: $0).joined(separator: " ")) })")
        }
        for pid in left { kill(pid, SIGKILL) }
        // The missions' cgroups (docs/missions.md, "Every process of a mission"): empty and
        // removed once every mission ended; the parent is removed here.
        if let base = MissionCgroup.base(of: state), base.exists {
            let groups = (try? FileManager.default.contentsOfDirectory(atPath: base.path).filter { $0.hasPrefix("mission-") }) ?? []
            for name in groups {
                let g = MissionCgroup(cgroup: base.child(name))
                if !allowRunning { #expect(!g.cgroup.isPopulated, "processes left in \(g.cgroup): \(g.cgroup.processes())") }
                g.kill(patience: .seconds(5))
            }
            try? base.remove()
        }
        if let q = _queue {
            #expect((try? q.db.integrityProblems()) == [], "integrity_check failed")
        }
        _queue = nil
        try? FileManager.default.removeItem(atPath: root)
    }

    // GNU extensions the Glibc module does not export.
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    typealias AddClosefrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    static let addChdir = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np")!, to: AddChdir.self)
    static let addClosefrom = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")!, to: AddClosefrom.self)

    private func spawn(_ argv: [String], env: [String: String], stdout: String, stderr: String, cwd: String?, newSession: Bool) throws -> Int32 {
        var fa = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fa)
        defer { posix_spawn_file_actions_destroy(&fa) }
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fa, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        if stderr == stdout {
            posix_spawn_file_actions_adddup2(&fa, 1, 2)
        } else {
            posix_spawn_file_actions_addopen(&fa, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        }
        if let cwd { _ = MissionEnv.addChdir(&fa, cwd) }
        _ = MissionEnv.addClosefrom(&fa, 3)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t()
        var all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newSession { flags |= 0x80 } // POSIX_SPAWN_SETSID
        posix_spawnattr_setflags(&attr, Int16(flags))
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "VIGIL_STATE_DIR")
        environment.removeValue(forKey: "VIGIL_MISSIONS_CRASH_AT")
        for (k, v) in env { environment[k] = v }
        let cargv = argv.map { strdup($0) } + [nil]
        let cenv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cargv.forEach { free($0) }
            cenv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &fa, &attr, cargv, cenv)
        guard rc == 0 else { throw SystemError("posix_spawn", errno: rc, subject: argv[0]) }
        return pid
    }
}

/// A mission that waits for `flag` to exist, then appends "ran ID ATTEMPT" to `runs` and
/// prints `text`.
func waitingMission(flag: String, runs: String, text: String = "done") -> [String] {
    ["sh", "-c", "while [ ! -e \"$1\" ]; do sleep 0.02; done; echo \"ran $VIGIL_MISSION_ID $VIGIL_MISSION_ATTEMPT\" >> \"$2\"; echo \"$3\"",
     "mission", flag, runs, text]
}

func touch(_ path: String) {
    _ = FileManager.default.createFile(atPath: path, contents: Data())
}

func lines(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
}

func readText(_ path: String) -> String {
    (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
}
