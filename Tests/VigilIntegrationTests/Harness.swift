import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// A fresh state directory with the real `vigil` executable, for tests that run real processes.
/// Tracks every process it starts (and every bridge the runner reports) by identity, and on
/// `finish()` kills those still running and checks that nothing mentioning the directory is
/// left.
final class Harness {
    let dir: String
    private(set) var bin: String
    private(set) var started: [ProcessIdentity] = []

    /// The vigil executable beside the test bundle.
    static let vigil = Binaries.vigil

    /// The temp directory this harness removes at `finish()` (`dir` or its parent).
    private let root: String

    /// - Parameter uncreated: the state directory is a path inside a fresh temp directory that
    ///   does not exist yet (for tests of what creates it).
    init(binary: String = Harness.vigil, uncreated: Bool = false) {
        root = try! TempDir.make("vigil-test")
        dir = uncreated ? root + "/state" : root
        bin = binary
    }

    /// Runs this test's processes from a private copy of the executable (so the test may
    /// replace it); returns its path.
    func useCopyOfBinary() throws -> String {
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
        let copy = dir + "/bin/vigil"
        try FileManager.default.copyItem(atPath: Harness.vigil, toPath: copy)
        bin = copy
        return copy
    }

    /// Fast tunables for tests: sub-second ticks and beats; the limits that turn a slow moment
    /// into a heal action (stale, cooldown) keep a margin, because CI machines are loaded.
    static let fast = ["--tick", "0.1", "--heartbeat-interval", "0.1", "--stale-after", "3", "--cooldown", "3",
                       "--term-grace", "1", "--start-grace", "5", "--stable-after", "1.5"]

    var env: [String: String] { ["VIGIL_TEST_FAULTS": "1", "VIGIL_STATE_DIR": dir] }

    /// Starts `vigil runner` directly (no wrapper).
    @discardableResult
    func startRunner(_ extra: [String] = Harness.fast) throws -> ProcessIdentity {
        try spawn([bin, "runner", "--state-dir", dir] + extra, log: "runner.out")
    }

    /// Starts the wrapper script with this harness's binary.
    @discardableResult
    func startWrapper(_ extra: [String] = Harness.fast) throws -> ProcessIdentity {
        var e = env
        e["VIGIL_BIN"] = bin
        return try spawn([Harness.repoRoot + "/scripts/vigil-run", "--state-dir", dir] + extra, log: "wrapper.out", environment: e)
    }

    static let repoRoot = Binaries.repoRoot

    @discardableResult
    func spawn(_ argv: [String], log: String, environment: [String: String]? = nil) throws -> ProcessIdentity {
        var o = Spawner.Options()
        o.newSession = true
        o.outputPath = root + "/" + log
        o.environment = environment ?? env
        let id = try Spawner.spawn(argv, o)
        started.append(id)
        return id
    }

    struct Result {
        var code: Int32
        var out: String
        var err: String
    }

    /// Runs a vigil CLI command to completion.
    @discardableResult
    func vigil(_ args: [String], environment: [String: String]? = nil) throws -> Result {
        try run(bin, ["--state-dir", dir] + args, environment: environment)
    }

    /// Runs `program` with `args` to its end (e.g. `Binaries.vigilBench`).
    func run(_ program: String, _ args: [String], environment: [String: String]? = nil) throws -> Result {
        let tag = UUID().uuidString.prefix(8)
        let out = "\(root)/.cli-\(tag).out", err = "\(root)/.cli-\(tag).err"
        var o = Spawner.Options()
        o.newSession = false
        o.environment = environment ?? env
        // stdout and stderr apart: run through /bin/sh only to split them (argv is quoted).
        let quoted = ([program] + args).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let id = try Spawner.spawn(["/bin/sh", "-c", "exec \(quoted) >\(out) 2>\(err)"], o)
        let status = Spawner.wait(id.pid) ?? -1
        defer { unlink(out); unlink(err) }
        return Result(code: exitCode(fromWaitStatus: status),
                      out: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                      err: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    /// `vigil status --json`. Throws (without recording an issue: polls call it with `try?`
    /// before the state directory exists) when there is no answer.
    func status() throws -> JSONValue {
        let r = try vigil(["status", "--json"])
        guard let v = JSONValue.parse(Data(r.out.utf8)) else { throw NoStatus(out: r.out, err: r.err) }
        return v
    }

    struct NoStatus: Error, CustomStringConvertible {
        var out: String
        var err: String
        var description: String { "status --json gave no JSON: \(out) \(err)" }
    }

    /// Every entry, across rotated files (`journal.jsonl.1` …) too.
    var journal: [[String: JSONValue]] { Journal.readAll(path: dir + "/journal.jsonl").entries }

    func events(_ name: String) -> [[String: JSONValue]] { journal.filter { $0["event"]?.stringValue == name } }

    func heals(action: String? = nil) -> [[String: JSONValue]] {
        events("heal").filter { action == nil || $0["action"]?.stringValue == action }
    }

    /// The bridge's PID file as it is now.
    var bridgeRecord: (pid: Int32, start: UInt64, version: String, beat: Int64, seq: Int64)? {
        guard case .ok(let v) = StateFile.read(dir + "/bridge.json", kind: "process", as: JSONValue.self),
              let pid = v["identity"]?["pid"]?.intValue, let start = v["identity"]?["start_ticks"]?.intValue else { return nil }
        return (Int32(pid), UInt64(start), v["version"]?.stringValue ?? "", v["beat"]?.intValue ?? 0, v["seq"]?.intValue ?? 0)
    }

    /// The boot time of the last heartbeat in `bridge.beat` / `runner.beat`.
    var bridgeBeat: BootInstant? { beat("bridge.beat") }
    var runnerBeat: BootInstant? { beat("runner.beat") }

    private func beat(_ name: String) -> BootInstant? {
        guard let text = try? String(contentsOfFile: dir + "/" + name, encoding: .utf8) else { return nil }
        let f = text.split(separator: " ")
        guard f.count == 7, f[0] == "vigil-beat", let ns = Int64(f[4]) else { return nil }
        return BootInstant(nanoseconds: ns)
    }

    var bridgeIdentity: ProcessIdentity? { bridgeRecord.map { ProcessIdentity(pid: $0.pid, startTicks: $0.start) } }

    /// Waits until the bridge is healthy (per `vigil status`) and returns its identity.
    @discardableResult
    func waitHealthy(timeout: Double = 20, sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessIdentity {
        var last = ""
        try waitUntil("bridge healthy (last status: \(last))", timeout: timeout, sourceLocation: sourceLocation) {
            guard let s = try? status() else { return false }
            last = s.jsonString
            // Healthy as `vigil status` sees it and as the runner last judged it (a test that
            // injects the next fault before the runner saw the recovery would merge incidents).
            return s["bridge"]?["verdict"]?.stringValue == "healthy"
                && (s["runner"]?["alive"]?.boolValue != true || s["runner"]?["last_verdict"]?.stringValue == "healthy")
        }
        let id = try #require(bridgeIdentity)
        track(id)
        return id
    }

    /// Remembers a process the runner started so `finish()` can end it.
    func track(_ id: ProcessIdentity) {
        if !started.contains(id) { started.append(id) }
    }

    /// Polls `condition` every 20 ms (or `pollMicroseconds`) until it holds; the timeout only
    /// matters when broken.
    func waitUntil(_ what: @autoclosure () -> String, timeout: Double = 20, pollMicroseconds: UInt32 = 20_000,
                   sourceLocation: SourceLocation = #_sourceLocation, _ condition: () throws -> Bool) throws {
        if try VigilTestSupport.waitUntil(timeout: .seconds(timeout), every: .milliseconds(Double(pollMicroseconds) / 1000), condition) { return }
        let tail = journal.suffix(15).map { JSONValue.object($0).jsonString }.joined(separator: "\n")
        Issue.record("timed out waiting for: \(what())\njournal tail:\n\(tail)", sourceLocation: sourceLocation)
        throw WaitTimeout(what: what())
    }

    /// Waits for a process we started to exit and reaps it; returns its exit code.
    func waitExit(_ id: ProcessIdentity, timeout: Double = 20) throws -> Int32? {
        guard let pidfd = id.openPidFD() else { return Spawner.reap(id.pid).map(exitCode(fromWaitStatus:)) }
        guard pidfd.waitForExit(timeoutMilliseconds: Int32(timeout * 1000)) else { throw WaitTimeout(what: "exit of \(id)") }
        return Spawner.wait(id.pid).map(exitCode(fromWaitStatus:))
    }

    /// Processes whose command line mentions this state directory.
    func leftovers() -> [(Int32, String)] {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        return pids.compactMap { pid in
            guard pid != getpid(), let st = ProcStat.read(pid: pid), !st.isZombie else { return nil }
            let argv = ProcStat.commandLine(pid: pid)
            return argv.contains(where: { $0.contains(dir) }) ? (pid, argv.joined(separator: " ")) : nil
        }
    }

    /// Ends every process this test started (and bridges the runner started, by the identities
    /// seen), reaps our children, asserts nothing is left, removes the directory.
    func finish(sourceLocation: SourceLocation = #_sourceLocation) {
        for e in journal {
            for key in ["bridge_after", "bridge", "bridge_before"] {
                if let p = e[key]?["pid"]?.intValue, let s = e[key]?["start_ticks"]?.intValue {
                    track(ProcessIdentity(pid: Int32(p), startTicks: UInt64(s)))
                }
            }
        }
        if let b = bridgeIdentity { track(b) }
        // Processes started by processes we started (a wrapper's runner): their argv names our
        // private temp directory, so they are ours too.
        for (pid, _) in leftovers() { if let id = ProcessIdentity.of(pid: pid) { track(id) } }
        // And what those started in their sessions (a version command, a mission's child).
        let sessions = Set(started.compactMap { id in id.isAlive ? ProcStat.read(pid: id.pid)?.session : nil })
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        for pid in pids where pid != getpid() {
            if let st = ProcStat.read(pid: pid), sessions.contains(st.session), st.session != ProcStat.read(pid: getpid())?.session,
               let id = ProcessIdentity.of(pid: pid) { track(id) }
        }
        for id in started where id.isAlive {
            id.signal(.resume)
            id.signal(.kill)
        }
        for id in started {
            if let fd = id.openPidFD() { _ = fd.waitForExit(timeoutMilliseconds: 5000) }
            _ = Spawner.reap(id.pid)
        }
        // A wrapper may have started a runner (or a runner a bridge) between the scan above and
        // its own SIGKILL: scan again until nothing naming our directory is left.
        for _ in 0..<5 {
            let more = leftovers().compactMap { ProcessIdentity.of(pid: $0.0) }
            if more.isEmpty { break }
            for id in more {
                id.signal(.resume)
                id.signal(.kill)
                if let fd = id.openPidFD() { _ = fd.waitForExit(timeoutMilliseconds: 5000) }
                _ = Spawner.reap(id.pid)
            }
        }
        let left = leftovers()
        #expect(left.isEmpty, "processes survived SIGKILL: \(left)", sourceLocation: sourceLocation)
        try? FileManager.default.removeItem(atPath: root)
    }

    func write(_ name: String, _ text: String) {
        _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(text.utf8))
    }
}
