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

extension DoctorReport {
    func finding(_ check: String, _ subject: String? = nil) -> DoctorFinding? {
        findings.first { $0.check == check && (subject == nil || $0.subject == subject) }
    }
    func all(_ check: String) -> [DoctorFinding] { findings.filter { $0.check == check } }
}

/// A temp directory with a state directory; every process and lock a test makes is recorded
/// and ended in `finish()`.
final class DoctorEnv {
    let root: String
    let state: StateDirectory
    private var children: [Int32] = []
    private var strays: [ProcessIdentity] = []
    private var _queue: MissionQueue?
    private var runCount = 0

    init(_ name: String) throws {
        root = try TempDir.make("vigil-doctor-\(name)")
        state = StateDirectory(root + "/state")
        try AtomicFile.makeDirectory(state.path)
    }

    func path(_ name: String) -> String { root + "/" + name }

    /// A connection of the test (kept open until `closeDatabase`).
    var queue: MissionQueue {
        get throws {
            if let q = _queue { return q }
            let q = MissionQueue(db: try Database(path: state.database, busyTimeout: 5))
            _queue = q
            return q
        }
    }

    func closeDatabase() { _queue = nil }

    /// `Doctor.run` in this process, with disk limits that a test machine always meets unless
    /// a test sets its own.
    func doctor(_ configure: (inout DoctorOptions) -> Void = { _ in }) throws -> DoctorReport {
        var o = DoctorOptions()
        o.minFreeBytes = 1
        o.minFreePercent = 0
        configure(&o)
        return try Doctor.run(state, o)
    }

    func fix(_ configure: (inout DoctorOptions) -> Void = { _ in }) throws -> DoctorReport {
        try doctor { o in
            o.fix = true
            configure(&o)
        }
    }

    /// Takes a lock file a running process would hold (`runner.lock`, `missions.lock`, …).
    func hold(_ path: String) throws -> FileLock {
        try #require(try FileLock.tryLock(path))
    }

    /// Holds what a live runner holds: `runner.lock` and `missions.lock`.
    func pretendRunner() throws -> [FileLock] {
        [try hold(state.lock(.runner)), try hold(state.missionsLock)]
    }

    /// Starts a process (our child) and records it for cleanup.
    @discardableResult
    func spawn(_ argv: [String], environment: [String: String] = [:], output: String? = nil) throws -> ProcessIdentity {
        var o = Spawner.Options()
        o.newSession = true
        o.outputPath = output
        o.environment = environment
        let id = try Spawner.spawn(argv, o)
        children.append(id.pid)
        return id
    }

    /// The identity of a process that has ended (and was reaped).
    func deadIdentity() throws -> ProcessIdentity {
        let id = try Spawner.spawn(["/bin/true"], Spawner.Options())
        _ = Spawner.wait(id.pid)
        return id
    }

    /// A process that is not our child (it must be signalled through its identity at the end).
    func stray(_ id: ProcessIdentity) { strays.append(id) }

    func reap(_ pid: Int32) {
        _ = Spawner.wait(pid)
        children.removeAll { $0 == pid }
    }

    /// Runs `vigil --state-dir STATE ARGS…` to completion.
    func vigil(_ args: [String], env: [String: String] = [:]) throws -> RunResult {
        runCount += 1
        let out = path("run-\(runCount).out")
        let err = path("run-\(runCount).err")
        var fa = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fa)
        defer { posix_spawn_file_actions_destroy(&fa) }
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "VIGIL_STATE_DIR")
        for (k, v) in env { environment[k] = v }
        let argv = [vigilPath, "--state-dir", state.path] + args
        let cargv = argv.map { strdup($0) } + [nil]
        let cenv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cargv.forEach { free($0) }
            cenv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, vigilPath, &fa, nil, cargv, cenv)
        guard rc == 0 else { throw SystemError("posix_spawn", errno: rc, subject: vigilPath) }
        let status = Spawner.wait(pid) ?? -1
        return RunResult(code: exitCode(fromWaitStatus: status),
                         out: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                         err: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    func journal(_ event: String) -> [[String: JSONValue]] {
        Journal.read(path: state.journal).entries.filter { $0["event"]?.stringValue == event }
    }

    func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    func finish() {
        for id in strays { _ = id.signal(.kill) }
        for pid in children {
            kill(pid, SIGKILL)
            _ = Spawner.wait(pid)
        }
        _queue = nil
        try? FileManager.default.removeItem(atPath: root)
    }
}

func write(_ text: String, to path: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}
