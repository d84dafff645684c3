import Foundation
import Glibc
import Testing
@testable import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil doctor`: each anomaly is made for real in a temp state dir (real files, real SQLite,
/// real processes), found, repaired when that is safe, and left alone when it is not.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct DoctorTests {
    // MARK: - Command line, JSON, exit codes

    @Test func usageAndMissingStateDir() throws {
        let env = try DoctorEnv("usage")
        defer { env.finish() }
        let help = try env.vigil(["doctor", "--help"])
        #expect(help.code == 0 && help.out.hasPrefix("usage: vigil doctor"))
        #expect(try env.vigil(["doctor", "--bogus"]).code == 2)
        let flagAlone = try env.vigil(["doctor", "--release-long-running"])
        #expect(flagAlone.code == 2 && flagAlone.err.contains("--fix"))
        #expect(try env.vigil(["doctor", "--max-runtime", "soon"]).code == 2)
        #expect(try env.vigil(["doctor", "extra"]).code == 2)

        let missing = try env.vigil(["--state-dir", env.path("nowhere"), "doctor"])
        #expect(missing.code == 1)
        #expect(missing.err.contains("no state directory at \(env.path("nowhere"))"))
        #expect(!env.exists(env.path("nowhere")), "doctor must not create a state directory")
    }

    @Test func jsonShapeAndExitCodes() throws {
        let env = try DoctorEnv("json")
        defer { env.finish() }
        _ = try env.queue.enqueue(argv: ["true"], cwd: "/")
        try env.queue.db.execute("UPDATE missions SET state = 'done', finished_at = 1 WHERE id = 1")
        let held = try env.pretendRunner()
        defer { held.forEach { $0.release() } }
        let limits = ["--min-free", "1", "--min-free-percent", "0"]

        // Healthy (the bridge not running is only information while the runner heals it).
        let clean = try env.vigil(["doctor", "--json"] + limits)
        #expect(clean.code == 0, "\(clean.out)\(clean.err)")
        let cj = try #require(clean.json)
        #expect(cj["ok"] == true && cj["fixed"] == 0 && cj["needs_person"] == 0 && cj["remaining"] == 0)
        guard case .array(let items)? = cj["findings"] else {
            Issue.record("findings is not an array: \(clean.out)")
            return
        }
        #expect(items.allSatisfy { $0["severity"] == "info" })
        for key in ["check", "subject", "severity", "what", "why", "action", "fixable", "requires", "fixed", "needs_person", "note"] {
            #expect(items.allSatisfy { $0[key] != nil }, "every finding has \(key)")
        }
        let human = try env.vigil(["doctor"] + limits)
        #expect(human.code == 0 && human.out.contains("vigil doctor: \(env.state.path)"))

        // Something --fix can repair: exit 1 before, 0 after.
        let dead = try env.deadIdentity()
        try write("half", to: env.state.file(".heal.json.tmp.\(dead.pid).7"))
        let before = try env.vigil(["doctor", "--json"] + limits)
        #expect(before.code == 1)
        let bj = try #require(before.json)
        #expect(bj["fixable"] == 1 && bj["needs_person"] == 0 && bj["remaining"] == 1 && bj["ok"] == false)
        let fixed = try env.vigil(["doctor", "--fix", "--json"] + limits)
        #expect(fixed.code == 0, "\(fixed.out)")
        let fj = try #require(fixed.json)
        #expect(fj["fixed"] == 1 && fj["remaining"] == 0 && fj["fix"] == true)
        guard case .array(let after)? = fj["findings"], let temp = after.first(where: { $0["check"] == "temp-files" }) else {
            Issue.record("no temp-files finding after --fix: \(fixed.out)")
            return
        }
        #expect(temp["fixed"] == true && temp["needs_person"] == false)
        #expect(!env.exists(env.state.file(".heal.json.tmp.\(dead.pid).7")))

        // Something that needs a person: exit 1, and the human list says so.
        let low = try env.vigil(["doctor", "--min-free", "1000000GB"])
        #expect(low.code == 1 && low.out.contains("low disk space") && low.out.contains("needs a person"))
    }

    // MARK: - Processes, watchdog, disk

    @Test func runnerCircuitStopAndDisk() throws {
        let env = try DoctorEnv("heal")
        defer { env.finish() }
        var r = try env.doctor()
        #expect(r.finding("runner")?.severity == .critical)
        #expect(r.finding("bridge")?.severity == .info)
        #expect(r.finding("database")?.severity == .info, "no database yet")
        #expect(!env.exists(env.state.database), "doctor must not create the database")

        var heal = HealState()
        heal.tier = 3
        heal.circuit = .open
        heal.circuitOpenedAt = Clock.boot()
        heal.failedRespawns = 3
        try StateFile.write(HealFile(bootID: Clock.bootID, state: heal), kind: HealFile.kind, to: env.state.healState)
        r = try env.fix()
        let circuit = try #require(r.finding("heal.circuit"))
        #expect(circuit.severity == .critical && circuit.repair == nil && circuit.action.contains("vigil heal reset"))
        #expect(r.needsPerson(circuit) && !circuit.fixed)
        #expect(r.exitCode == 1)

        let stop = try env.vigil(["stop", "--timeout", "1s"])
        #expect(stop.code == 0, "\(stop.err)")
        r = try env.doctor()
        #expect(r.finding("stop")?.severity == .info)
        #expect(r.finding("runner") == nil, "a stopped runner is not an anomaly")

        r = try env.doctor { $0.minFreeBytes = UInt64.max / 2 }
        let disk = try #require(r.finding("disk"))
        #expect(disk.severity == .critical && disk.repair == nil && disk.what.contains("low disk space"))
    }

    // MARK: - Missions

    @Test func longRunningMissionIsReleasedOnlyWithTheFlag() throws {
        let env = try DoctorEnv("long")
        defer { env.finish() }
        let driver = try env.spawn([Binaries.vigilBench, "--state-dir", env.state.path, "drive", "--tick", "0.05", "--term-grace", "0.3"],
                                   output: env.path("driver.log"))
        let id = try env.queue.enqueue(argv: ["sleep", "1000"], cwd: "/")
        MissionRunner.poke(env.state)
        try waitUntil("the mission to run under a live shim") {
            guard let m = try env.queue.mission(id), m.state == .running, let shim = m.shim else { return false }
            return shim.isAlive && !MissionProcesses.members(of: env.state).isEmpty
        }
        let tiny: (inout DoctorOptions) -> Void = { $0.maxRuntime = .milliseconds(1) }

        var r = try env.doctor { $0.maxRuntime = .seconds(3600) }
        #expect(r.finding("missions.long-running") == nil)
        r = try env.doctor(tiny)
        let long = try #require(r.finding("missions.long-running", "mission \(id)"))
        #expect(long.severity == .warning && long.repair == .cancelMission(id) && long.repair?.requiredFlag == "--release-long-running")
        #expect(!r.needsPerson(long), "--fix can release it")

        // --fix alone: reported, never released.
        r = try env.fix(tiny)
        let kept = try #require(r.finding("missions.long-running", "mission \(id)"))
        #expect(!kept.fixed && kept.note?.contains("--release-long-running") == true && r.needsPerson(kept))
        let still = try #require(try env.queue.mission(id))
        #expect(still.state == .running && !still.cancelRequested)
        #expect(still.shim?.isAlive == true)

        // With the flag: the normal cancel path.
        r = try env.fix { $0.maxRuntime = .milliseconds(1); $0.releaseLongRunning = true }
        #expect(r.finding("missions.long-running", "mission \(id)")?.fixed == true)
        try waitUntil("the runner to cancel the mission") { try env.queue.mission(id)?.state == .cancelled }
        kill(driver.pid, SIGTERM)
        env.reap(driver.pid)
    }

    @Test func staleLockIsReleased() throws {
        let env = try DoctorEnv("locks")
        defer { env.finish() }
        let q = try env.queue
        let holder = try q.enqueue(argv: ["true"], cwd: "/", lockKey: "repo")
        let waiter = try q.enqueue(argv: ["true"], cwd: "/", lockKey: "repo")
        #expect(try q.claim(limit: 1).map(\.id) == [holder])
        // The holder ended without its lock being released (a row edited by hand, an old bug).
        try q.db.execute("UPDATE missions SET state = 'failed', finished_at = 1 WHERE id = ?", [.int(holder)])
        #expect(try q.lockView().state(of: try #require(try q.mission(waiter))) == .waiting)

        var r = try env.doctor()
        let stale = try #require(r.finding("missions.stale-locks"))
        #expect(stale.repair == .releaseStaleLocks && stale.what.contains("repo (mission \(holder))"))
        r = try env.fix()
        #expect(r.finding("missions.stale-locks")?.fixed == true)
        #expect(try q.lockView().held.isEmpty)
        #expect(try q.lockView().state(of: try #require(try q.mission(waiter))) == .pending)
    }

    @Test func deadShimsAreRecoveredOnlyWhileNoRunnerRuns() throws {
        let env = try DoctorEnv("deadshim")
        defer { env.finish() }
        let q = try env.queue
        let neverStarted = try q.enqueue(argv: ["sleep", "1000"], cwd: "/")
        let died = try q.enqueue(argv: ["true"], cwd: "/", lockKey: "repo")
        #expect(try q.claim(limit: 2).count == 2)
        try q.recordShims([(died, 1, MissionShim(identity: try env.deadIdentity(), bootID: Clock.bootID))])

        // A runner is alive: it records ended shims itself; doctor leaves them.
        var held = try env.pretendRunner()
        var r = try env.fix()
        #expect(r.all("missions.dead-shim").isEmpty)
        #expect(try q.mission(neverStarted)?.state == .running && q.mission(died)?.state == .running)
        held.forEach { $0.release() }
        held = []

        r = try env.doctor()
        #expect(r.all("missions.dead-shim").count == 2)
        #expect(r.all("missions.dead-shim").allSatisfy { $0.repair == .missionRecovery && !r.needsPerson($0) })

        r = try env.fix()
        #expect(r.all("missions.dead-shim").count == 2 && r.all("missions.dead-shim").allSatisfy { $0.fixed })
        let a = try #require(try q.mission(neverStarted))
        #expect(a.state == .pending && a.attempts == 0, "a claim whose shim never started is requeued uncounted")
        let b = try #require(try q.mission(died))
        #expect(b.state == .pending && b.attempts == 1, "a dead shim's attempt counts")
        #expect(try q.lockView().held.isEmpty)
        let recovered = try #require(env.journal("missions-recovered").last)
        #expect(recovered["source"] == "doctor" && recovered["requeued"] == 2)
        #expect(FileLock.isFree(env.state.missionsLock), "doctor gives missions.lock back")
    }

    @Test func orphansAreCleanedOnlyWhileNoRunnerRuns() throws {
        let env = try DoctorEnv("orphans")
        defer { env.finish() }
        let q = try env.queue
        // A workspace of a mission that ended, and a mission directory with no row.
        let done = try q.enqueue(argv: ["true"], cwd: "/")
        _ = try q.claim(limit: 1)
        try q.finish(id: done, attempt: 1, result: MissionResult(mission: done, attempt: 1, exitCode: 0, signal: nil, reason: nil,
                                                                  childPID: nil, started: "", finished: ""))
        let scratch = MissionPaths(stateDir: env.state, id: done).scratch
        try AtomicFile.makeDirectory(scratch)
        try AtomicFile.makeDirectory(MissionPaths(stateDir: env.state, id: 999).directory)
        // A process of a mission that has not ended (pending again: its shim died), whose shim
        // (its session leader) is gone.
        let requeued = try q.enqueue(argv: ["true"], cwd: "/")
        let pidFile = env.path("stray.pid")
        let leader = try env.spawn(["/bin/sh", "-c", "sleep 1000 & echo $! > \"$0\"", pidFile],
                                   environment: ["VIGIL_STATE_DIR": env.state.path, "VIGIL_MISSION_ID": "\(requeued)"])
        env.reap(leader.pid)
        var strayPID: Int32 = 0
        try waitUntil("the stray mission process") {
            strayPID = Int32(((try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            return strayPID > 0
        }
        let stray = try #require(ProcessIdentity.of(pid: strayPID))
        env.stray(stray)
        // A shim that no running mission claims (mission 77 has no row), with its child.
        let shim = try env.spawn([vigilPath, "shim", "--state-dir", env.state.path, "--mission", "77", "--attempt", "1",
                                  "--max-attempts", "1", "--cwd", "/", "--", "sleep", "1000"], output: env.path("shim.out"))
        try waitUntil("the orphan shim's child") {
            MissionProcesses.members(of: env.state).contains { $0.mission == 77 }
        }

        var r = try env.doctor()
        #expect(r.finding("missions.orphan-shims")?.what.contains("pid \(shim.pid)") == true)
        #expect(r.finding("missions.orphan-processes")?.what.contains("pid \(stray.pid)") == true)
        let ws = try #require(r.finding("missions.orphan-workspaces"))
        #expect(ws.what.contains("missions/\(done)/scratch") && ws.what.contains("missions/999"))

        // A runner is alive: doctor reports them and touches nothing.
        var held = try env.pretendRunner()
        r = try env.fix()
        for check in ["missions.orphan-shims", "missions.orphan-processes", "missions.orphan-workspaces"] {
            let f = try #require(r.finding(check))
            #expect(!f.fixed && f.note?.contains("runner") == true, "\(check): \(f.note ?? "")")
        }
        #expect(shim.isAlive && stray.isAlive && env.exists(scratch))
        held.forEach { $0.release() }
        held = []

        r = try env.fix()
        for check in ["missions.orphan-shims", "missions.orphan-processes", "missions.orphan-workspaces"] {
            #expect(r.finding(check)?.fixed == true, "\(check)")
        }
        env.reap(shim.pid)
        try waitUntil("the orphans to be gone") { !stray.isAlive && MissionProcesses.members(of: env.state).isEmpty }
        #expect(!env.exists(scratch) && !env.exists(MissionPaths(stateDir: env.state, id: 999).directory))
        #expect(env.exists(MissionPaths(stateDir: env.state, id: done).directory), "the mission's own directory stays")
        #expect(try q.mission(done)?.state == .done)
    }

    @Test func liveRunnerIsLeftAloneAndGetsMissionsLockAfterDoctor() throws {
        let env = try DoctorEnv("runner")
        defer { env.finish() }
        _ = try env.queue // the database exists from the start
        // Doctor's recovery holds missions.lock while a runner starts.
        var doctorsLock: FileLock? = try env.hold(env.state.missionsLock)
        let runner = try env.spawn([vigilPath, "runner", "--state-dir", env.state.path, "--tick", "0.05", "--heartbeat-interval", "0.1",
                                    "--stale-after", "2"], output: env.path("runner.out"))
        try waitUntil("the runner to find missions.lock taken") { !env.journal("missions-unavailable").isEmpty }
        let orphan = MissionPaths(stateDir: env.state, id: 999).directory
        try AtomicFile.makeDirectory(orphan)

        // A runner is running: doctor reports the orphan and leaves it to the runner.
        let r = try env.fix()
        #expect(r.finding("runner") == nil)
        let ws = try #require(r.finding("missions.orphan-workspaces"))
        #expect(!ws.fixed && ws.note?.contains("runner") == true && env.exists(orphan), "\(ws)")

        // Released: the runner takes the lock on a later tick, recovers, runs missions.
        doctorsLock?.release()
        doctorsLock = nil
        let id = try env.queue.enqueue(argv: ["true"], cwd: "/")
        MissionRunner.poke(env.state)
        try waitUntil("the mission to run") { try env.queue.mission(id)?.state == .done }
        #expect(!env.exists(orphan), "the runner's start-up recovery removed the orphan")
        try waitUntil("doctor to find nothing that needs attention") { try env.doctor().exitCode == 0 }

        let bridge = StatusCommand.readQuietly(env.state.pidFile(.bridge), kind: ProcessRecord.kind, ProcessRecord.self).0?.identity
        kill(runner.pid, SIGTERM)
        env.reap(runner.pid)
        if let bridge { try waitUntil("the bridge to stop") { !bridge.isAlive } }
    }

    /// A healthy pair is not "hung" or "stale" to doctor, however long ago the processes
    /// started: their heartbeats are in `*.beat` (the `*.json` PID files keep the start-time beat).
    @Test func healthyPairHasNoProcessFindingsLongAfterStart() throws {
        let env = try DoctorEnv("healthy")
        defer { env.finish() }
        let runner = try env.spawn([vigilPath, "runner", "--state-dir", env.state.path, "--tick", "0.05", "--heartbeat-interval", "0.1",
                                    "--stale-after", "1"], output: env.path("runner.out"))
        func jsonBeatAge(_ role: StateDirectory.Role) -> TimeSpan? {
            StatusCommand.readQuietly(env.state.pidFile(role), kind: ProcessRecord.kind, ProcessRecord.self).0.map { Clock.boot() - $0.beat }
        }
        // Until both PID files' own beat is older than the stale limit (this is what fooled doctor).
        try waitUntil("both PID files older than the stale limit") {
            (jsonBeatAge(.bridge) ?? .zero) > .seconds(1.5) && (jsonBeatAge(.runner) ?? .zero) > .seconds(1.5)
        }
        let r = try env.doctor()
        #expect(r.finding("runner") == nil, "\(r.findings)")
        #expect(r.finding("bridge") == nil, "\(r.findings)")

        let bridge = StatusCommand.readQuietly(env.state.pidFile(.bridge), kind: ProcessRecord.kind, ProcessRecord.self).0?.identity
        kill(runner.pid, SIGTERM)
        env.reap(runner.pid)
        if let bridge { try waitUntil("the bridge to stop") { !bridge.isAlive } }
    }

    // MARK: - Files

    @Test func corruptStateFilesAreQuarantinedWhenTheirWriterIsNotRunning() throws {
        let env = try DoctorEnv("corrupt")
        defer { env.finish() }
        try write("garbage", to: env.state.healState)
        try write("vigil-state 1 process 999 00000000\n{", to: env.state.pidFile(.runner))
        let torn = try StateFile.encode(Marker.now(by: "test", reason: "torn"), kind: ProcessRecord.kind)
        try torn.prefix(torn.count - 12).write(to: URL(fileURLWithPath: env.state.pidFile(.bridge)))
        try AtomicFile.makeDirectory(env.state.chatDirectory)
        try write("{not a state file", to: env.state.chatStatus)

        var r = try env.doctor()
        #expect(Set(r.all("state-file").compactMap(\.subject)) == ["heal.json", "runner.json", "bridge.json", "chat/status.json"])
        #expect(r.finding("state-file", "bridge.json")?.what.contains("torn") == true)

        // The runner runs: its files are left to it; the bridge's are quarantined.
        var held = try env.pretendRunner()
        r = try env.fix()
        #expect(r.finding("state-file", "bridge.json")?.fixed == true)
        #expect(r.finding("state-file", "chat/status.json")?.fixed == true)
        for name in ["heal.json", "runner.json"] {
            let f = try #require(r.finding("state-file", name))
            #expect(!f.fixed && f.note?.contains("runner") == true)
            #expect(env.exists(env.state.file(name)))
        }
        let recent = try #require(r.finding("quarantine", "recent"), "the quarantined files need a person to look")
        #expect(recent.severity == .warning && recent.repair == nil && recent.what.hasPrefix("2 files"))
        held.forEach { $0.release() }
        held = []

        r = try env.fix()
        #expect(r.all("state-file").allSatisfy { $0.fixed })
        #expect(!env.exists(env.state.healState) && !env.exists(env.state.pidFile(.runner)))
        let moved = try FileManager.default.contentsOfDirectory(atPath: env.state.quarantine)
        #expect(moved.count == 4)
        #expect(env.journal("quarantined").count == 4)
        #expect(r.finding("quarantine", "recent")?.what.hasPrefix("4 files") == true)
        #expect(r.exitCode == 1)

        // Old quarantined files: deleted only with --purge-quarantine.
        let old = env.state.quarantine + "/bridge.json.1.2.3"
        try write("old", to: old)
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -40 * 86400)], ofItemAtPath: old)
        r = try env.fix()
        let purge = try #require(r.finding("quarantine", "old"))
        #expect(purge.severity == .info && purge.note?.contains("--purge-quarantine") == true && env.exists(old))
        r = try env.fix { $0.purgeQuarantine = true }
        #expect(r.finding("quarantine", "old")?.fixed == true)
        #expect(!env.exists(old))
        #expect(try FileManager.default.contentsOfDirectory(atPath: env.state.quarantine).count == 4, "recent ones are kept")
    }

    @Test func tempFilesOfDeadWritersAreSwept() throws {
        let env = try DoctorEnv("temps")
        defer { env.finish() }
        let id = try env.queue.enqueue(argv: ["true"], cwd: "/")
        let missionDir = MissionPaths(stateDir: env.state, id: id).directory
        try AtomicFile.makeDirectory(missionDir)
        let dead = try env.deadIdentity()
        let live = try env.spawn(["sleep", "1000"])
        let stale1 = env.state.file(".bridge.json.tmp.\(dead.pid).1")
        let stale2 = missionDir + "/.result.tmp.\(dead.pid).2"
        let busy = env.state.file(".heal.json.tmp.\(live.pid).3")
        for p in [stale1, stale2, busy] { try write("x", to: p) }

        var r = try env.doctor()
        let temps = try #require(r.finding("temp-files"))
        #expect(temps.what.hasPrefix("2 temp files") && temps.what.contains("missions/\(id)/"))
        r = try env.fix()
        #expect(r.finding("temp-files")?.fixed == true)
        #expect(!env.exists(stale1) && !env.exists(stale2))
        #expect(env.exists(busy), "a temp file of a live writer is left alone")
    }

    // MARK: - Database

    @Test func integrityFailureNeedsAPersonAndIsNeverTouched() throws {
        let env = try DoctorEnv("integrity")
        defer { env.finish() }
        try Outbox(try env.queue.db).enqueue((0..<3000).map { OutboxItem(key: "k\($0)", adapter: "console", body: String(repeating: "x", count: 50)) })
        env.closeDatabase() // before touching the file with plain file APIs (docs/durability.md, "No plain file APIs on an open database")
        #expect(!env.exists(env.state.database + "-wal"), "the last connection removed the WAL")
        // Damage one entry of an index page (a leaf with "pending" in it): the page stays
        // readable, the index no longer matches the table.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: env.state.database)))
        let page = 4096
        var patched = false
        for start in stride(from: page, to: bytes.count, by: page) where bytes[start] == 0x0A {
            let slice = bytes[start..<(start + page)]
            if let i = slice.indices.first(where: { Array(bytes[$0..<min($0 + 7, start + page)]) == Array("pending".utf8) }) {
                bytes[i + 6] = UInt8(ascii: "X")
                patched = true
                break
            }
        }
        #expect(patched)
        try Data(bytes).write(to: URL(fileURLWithPath: env.state.database))

        let r = try env.fix()
        let f = try #require(r.finding("database.integrity"))
        #expect(f.severity == .critical && f.repair == nil && r.needsPerson(f) && f.action.contains(".recover"))
        #expect(r.exitCode == 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: env.state.database)) == Data(bytes), "--fix never writes a corrupt database")

        try write("this is not a database at all, just text", to: env.state.database)
        let garbage = try env.doctor()
        #expect(garbage.finding("database.integrity")?.what.contains("not a database") == true)
    }

    @Test func lockedDatabaseIsAFindingNotACrash() throws {
        let env = try DoctorEnv("busy")
        defer { env.finish() }
        try env.queue.db.execute("PRAGMA locking_mode=EXCLUSIVE")
        try env.queue.db.write { try env.queue.db.execute("UPDATE missions SET cwd = cwd") } // takes the exclusive lock for good
        let r = try env.vigil(["doctor", "--json", "--min-free", "1", "--min-free-percent", "0"], env: ["VIGIL_BUSY_TIMEOUT": "100ms"])
        #expect(r.code == 1, "\(r.err)")
        guard case .array(let items)? = r.json?["findings"] else {
            Issue.record("no JSON: \(r.out) \(r.err)")
            return
        }
        let locked = items.first { $0["check"] == "database.locked" }
        #expect(locked?["severity"] == "warning" && locked?["needs_person"] == true)
        env.closeDatabase()
        let after = try env.doctor()
        #expect(after.finding("database.locked") == nil)
    }

    @Test func largeWALIsCheckpointedAndOldSchemaMigrated() throws {
        let env = try DoctorEnv("wal")
        defer { env.finish() }
        let old = try Database(path: env.state.database, busyTimeout: 5, migrate: false)
        var r = try env.doctor()
        #expect(r.finding("database.schema")?.repair == .migrate)
        r = try env.fix()
        #expect(r.finding("database.schema")?.fixed == true)
        #expect(try old.scalarInt("PRAGMA user_version") == Int64(Schema.currentVersion))

        // Our connection stays open (idle), so closing connections does not checkpoint.
        try Outbox(old).enqueue(key: "big", adapter: "console", body: String(repeating: "y", count: 300_000))
        var st = stat()
        #expect(stat(env.state.database + "-wal", &st) == 0 && st.st_size > 300_000)
        r = try env.doctor { $0.maxWAL = 64 << 10 }
        #expect(r.finding("database.wal")?.repair == .checkpoint)
        r = try env.fix { $0.maxWAL = 64 << 10 }
        #expect(r.finding("database.wal")?.fixed == true)
        #expect(stat(env.state.database + "-wal", &st) == 0 && st.st_size == 0)
        #expect(try Outbox(old).message(key: "big", adapter: "console") != nil)
    }

    // MARK: - Outbox

    @Test func outboxFailedStuckAndOrphanedMessages() throws {
        let env = try DoctorEnv("outbox")
        defer { env.finish() }
        let outbox = Outbox(try env.queue.db)
        try outbox.enqueue(key: "a", adapter: "console", body: "one")
        try outbox.enqueue(key: "b", adapter: "console", body: "two")
        try outbox.enqueue(key: "c", adapter: "webhook", body: "three")
        try outbox.enqueue(key: "d", adapter: "webhook", body: "four")
        let dead = try env.deadIdentity()
        let deadOwner = "\(dead.pid):\(dead.startTicks):x"
        guard case .claimed(let one, _) = try outbox.claimNext(adapter: "console", now: Clock.boot(), owner: deadOwner) else {
            Issue.record("could not claim")
            return
        }
        let live = try env.spawn(["sleep", "1000"])
        let liveOwner = "\(live.pid):\(live.startTicks):y"
        guard case .claimed(let three, _) = try outbox.claimNext(adapter: "webhook", now: Clock.boot(), owner: liveOwner) else {
            Issue.record("could not claim")
            return
        }
        try outbox.markFailed(id: three.id, owner: liveOwner, error: "HTTP 400: bad payload")
        try env.queue.db.execute("UPDATE outbox SET created_wall = created_wall - 3600 WHERE key = 'b'")
        try AtomicFile.makeDirectory(env.state.chatDirectory)
        try StateFile.write(JSONValue.object([
            "pid": .int(1),
            "adapters": [["adapter": "console", "circuit": "open", "consecutive_failures": 3, "last_error": "connection refused",
                          "delivered": 0, "failed": 0]],
        ]), kind: "chat-status", to: env.state.chatStatus)

        var r = try env.doctor()
        let orphaned = try #require(r.finding("outbox.orphaned-sending"))
        #expect(orphaned.repair == .releaseOutbox && orphaned.what.contains("#\(one.id)"))
        let failed = try #require(r.finding("outbox.failed"))
        #expect(failed.repair == nil && failed.action.contains("vigil outbox --retry failed") && failed.what.contains("HTTP 400"))
        let stuck = try #require(r.finding("outbox.stuck-pending", "console"))
        #expect(stuck.why.contains("circuit is open") && stuck.why.contains("connection refused"))
        #expect(r.finding("outbox.stuck-pending", "webhook") == nil, "a fresh message is not stuck")

        r = try env.fix()
        #expect(r.finding("outbox.orphaned-sending")?.fixed == true)
        #expect(try outbox.message(id: one.id)?.state == .pending)
        #expect(r.finding("outbox.failed").map { !$0.fixed && r.needsPerson($0) } == true)
        #expect(try outbox.message(id: three.id)?.state == .failed, "failed messages wait for a person")
        #expect(r.exitCode == 1)
    }
}

extension DoctorTests {
    /// Workspace anomalies made for real (docs/workspaces.md): an allocation of a mission that
    /// does not run, a damaged idle slot, a stale git lock, a slot in error, a clone nobody
    /// finished; `--fix` repairs each and leaves what a person isolated alone.
    @Test func workspaceAnomaliesAreFoundAndFixed() throws {
        let env = try DoctorEnv("workspaces")
        defer { env.finish() }
        let origin = env.path("app.git")
        _ = try GitFixture.makeBareRepo(at: origin, files: 3)
        try AtomicFile.write(Data(#"{"workspace-git-backoff": "10ms"}"#.utf8), to: env.state.config)
        let add = try env.vigil(["workspace", "add-repo", "app", origin, "--slots", "5"])
        #expect(add.code == 0, "\(add.err)")
        let q = try env.queue
        let store = WorkspaceStore(db: q.db)
        // 1: allocated to a mission that is no longer running (its row says failed).
        let m = try q.enqueue(argv: ["true"], cwd: "/", workspace: "app")
        #expect(try q.claim(limit: 1).first?.slot == 1)
        try q.db.execute("UPDATE missions SET state = 'failed' WHERE id = ?", [.int(m)])
        // 2: damaged; 3: a stale lock; 4: isolated by a person; 5: to be cloned, nobody on it.
        try FileManager.default.removeItem(atPath: env.state.workspaceSlot(repo: "app", id: 2) + "/.git/HEAD")
        try Data().write(to: URL(fileURLWithPath: env.state.workspaceSlot(repo: "app", id: 3) + "/.git/index.lock"))
        try #require(try store.apply(.isolate(reason: "disk check", byPerson: true), to: 4) != nil)
        try #require(try store.apply(.recover(force: false), to: 5) != nil)
        var r = try env.doctor()
        #expect(r.finding("workspaces.orphaned", "slot 1 (app)") != nil)
        #expect(r.finding("workspaces.corrupted", "slot 2 (app)")?.what.contains("HEAD") == true)
        #expect(r.finding("workspaces.stale-locks", "slot 3 (app)") != nil)
        #expect(r.finding("workspaces.error", "slot 4 (app)")?.severity == .info)
        #expect(r.finding("workspaces.unfinished", "slot 5 (app)") != nil)
        r = try env.fix()
        for (check, slot) in [("workspaces.orphaned", 1), ("workspaces.corrupted", 2), ("workspaces.stale-locks", 3), ("workspaces.unfinished", 5)] {
            #expect(r.finding(check, "slot \(slot) (app)")?.resolved == true, "\(check): \(r.finding(check, "slot \(slot) (app)")?.note ?? "")")
        }
        let states = try store.slots().map { "\($0.id)=\($0.record.phase.rawValue)" }
        #expect(states == ["1=available", "2=available", "3=available", "4=error", "5=available"], "\(states)")
    }
}
