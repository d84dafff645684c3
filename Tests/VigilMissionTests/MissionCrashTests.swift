import Foundation
import Glibc
import Testing
import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Crash points of docs/missions.md, shim deaths, corrupt results, a locked database, locks.
extension MissionTests {
    /// Crash points 4 and 5, and a graceful runner restart: missions keep running; the next
    /// runner reattaches or records what finished meanwhile.
    @Test func runnerKilledWhileMissionsRun() throws {
        let env = try MissionEnv("runner-kill")
        defer { env.finish() }
        let runs = env.path("runs")
        let a = try env.add(waitingMission(flag: env.path("a"), runs: runs, text: "A"))
        let b = try env.add(waitingMission(flag: env.path("b"), runs: runs, text: "B"))
        let driver = try env.startDriver(maxParallel: 2)
        try waitUntil("both to run") { try env.mission(a).shim != nil && env.mission(b).shim != nil }
        env.kill9(driver)
        touch(env.path("a"))
        try waitUntil("A's result file") { FileManager.default.fileExists(atPath: MissionPaths(stateDir: env.state, id: a).result) }
        #expect(try env.mission(a).state == .running) // nobody recorded it yet

        let second = try env.startDriver(maxParallel: 2)
        try waitUntil("the second recovery") { env.events("missions-recovered").count == 2 }
        #expect(try env.mission(a).state == .done)
        let recovered = try #require(env.events("missions-recovered").last)
        #expect(recovered["finalized"]?.intValue == 1)
        #expect(recovered["reattached"]?.intValue == 1)
        #expect(try env.mission(b).state == .running)

        env.stop(second) // a graceful restart does not touch missions either
        #expect(try env.mission(b).state == .running)
        try env.startDriver(maxParallel: 2)
        touch(env.path("b"))
        try waitUntil("B recorded") { try env.mission(b).state == .done }
        #expect(readText(MissionPaths(stateDir: env.state, id: a).output) == "A\n")
        #expect(readText(MissionPaths(stateDir: env.state, id: b).output) == "B\n")
        #expect(lines(runs).sorted() == ["ran \(a) 1", "ran \(b) 1"])
        #expect(try env.mission(a).attempts == 1 && env.mission(b).attempts == 1)
    }

    /// Crash point 2: the runner dies after the claim committed, before the shim started.
    @Test func crashAfterClaim() throws {
        let env = try MissionEnv("after-claim")
        defer { env.finish() }
        let runs = env.path("runs")
        touch(env.path("go"))
        let id = try env.add(waitingMission(flag: env.path("go"), runs: runs), maxAttempts: 1)
        let crashing = try env.startDriver(env: ["VIGIL_MISSIONS_CRASH_AT": "after-claim"])
        let status = env.waitForExit(crashing)
        #expect(status.flatMap(terminatingSignal(fromWaitStatus:)) == SIGKILL)
        let claimed = try env.mission(id)
        #expect(claimed.state == .running && claimed.shim == nil && claimed.attempts == 1)

        try env.startDriver()
        try waitUntil("the mission to run once") { try env.mission(id).state.isFinal }
        let m = try env.mission(id)
        #expect(m.state == .done, "\(m.reason ?? "")")
        #expect(m.attempts == 1) // the start that never happened is not counted
        #expect(lines(runs) == ["ran \(id) 1"])
        #expect(env.events("mission-requeued").first?["uncounted"] == .bool(true))
    }

    /// Crash point 3: the runner dies after starting the shim, before recording its identity.
    @Test func crashAfterSpawn() throws {
        let env = try MissionEnv("after-spawn")
        defer { env.finish() }
        let runs = env.path("runs")
        let id = try env.add(waitingMission(flag: env.path("go"), runs: runs))
        let crashing = try env.startDriver(env: ["VIGIL_MISSIONS_CRASH_AT": "after-spawn"])
        _ = env.waitForExit(crashing)
        #expect(try env.mission(id).shim == nil)

        try env.startDriver()
        try waitUntil("the second recovery") { env.events("missions-recovered").count == 2 }
        #expect(try env.mission(id).shim != nil)
        #expect(env.events("missions-recovered").last?["reattached"]?.intValue == 1)
        touch(env.path("go"))
        try waitUntil("done") { try env.mission(id).state == .done }
        #expect(try env.mission(id).attempts == 1)
        #expect(lines(runs) == ["ran \(id) 1"])
    }

    /// A lost spawn: the runner died while starting a shim, and the next one took the claim
    /// back (uncounted) before the shim showed up in /proc. When recovery then finds that shim
    /// (its attempt follows the pending row's starts, its directory is this row's), it adopts it
    /// instead of killing it: the mission starts once, not twice.
    @Test func lostSpawnShimIsAdoptedNotKilled() throws {
        let env = try MissionEnv("adopt")
        defer { env.finish() }
        let runs = env.path("runs")
        let id = try env.add(["sh", "-c", "echo \"start $VIGIL_MISSION_ID $VIGIL_MISSION_ATTEMPT\" >> \"$1\"; while [ ! -e \"$2\" ]; do sleep 0.02; done",
                              "mission", runs, env.path("go")], lock: "k")
        let crashing = try env.startDriver(env: ["VIGIL_MISSIONS_CRASH_AT": "after-spawn"])
        _ = env.waitForExit(crashing)
        try waitUntil("the shim's mission to start") { lines(runs) == ["start \(id) 1"] }
        // What a recovery that did not see the shim yet did: the claim taken back, uncounted.
        #expect(try env.queue.shimDied(id: id, attempt: 1, reason: "test: not seen", countAttempt: false) == .requeuedUncounted)
        #expect(try env.mission(id).state == .pending)

        try env.startDriver()
        try waitUntil("the recovery") { env.events("missions-recovered").count == 2 }
        let m = try env.mission(id)
        #expect(m.state == .running && m.attempts == 1 && m.shim != nil, "\(m)")
        #expect(try env.queue.lockView().held == ["k": id])
        #expect(env.events("mission-adopted").first?["mission"]?.intValue == id)
        #expect(env.events("missions-recovered").last?["reattached"]?.intValue == 1)
        touch(env.path("go"))
        try waitUntil("done") { try env.mission(id).state == .done }
        #expect(try env.mission(id).attempts == 1)
        #expect(lines(runs) == ["start \(id) 1"], "the mission started again")
    }

    /// Crash point 6: the shim is killed -9 while its mission runs → the leftover mission
    /// process is killed, the mission requeued with attempts + 1, and failed after the max.
    @Test func shimKilled() throws {
        let env = try MissionEnv("shim-kill")
        defer { env.finish() }
        let runs = env.path("runs")
        let id = try env.add(waitingMission(flag: env.path("never"), runs: runs), maxAttempts: 2)
        try env.startDriver()
        try waitUntil("attempt 1 to run") { try env.mission(id).shim != nil }
        let first = try #require(try env.mission(id).shim)
        #expect(first.identity.signal(.kill))
        try waitUntil("attempt 2 to run") { let m = try env.mission(id); return m.attempts == 2 && m.shim != nil }
        // Never two at once: attempt 1's mission process was killed before attempt 2 started.
        let attempts = env.ourProcesses().compactMap { pid -> String? in
            let environ = (FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data())
                .split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return environ.first { $0.hasPrefix("VIGIL_MISSION_ATTEMPT=") }
        }
        #expect(!attempts.contains("VIGIL_MISSION_ATTEMPT=1"))
        #expect(try env.mission(id).reason?.contains("attempt 1 of 2") == true)

        let second = try #require(try env.mission(id).shim)
        #expect(second.identity.signal(.kill))
        try waitUntil("failed after the max") { try env.mission(id).state == .failed }
        let m = try env.mission(id)
        #expect(m.attempts == 2)
        #expect(m.reason?.contains("ended without recording an exit status on attempt 2 of 2; giving up") == true, "\(m.reason ?? "")")
        #expect(lines(runs).isEmpty)
    }

    /// Crash point 7: the shim dies after its child ended, before the result file.
    @Test func shimCrashBeforeResult() throws {
        let env = try MissionEnv("shim-crash")
        defer { env.finish() }
        let id = try env.add(["echo", "hi"], maxAttempts: 2)
        try env.startDriver(env: ["VIGIL_MISSIONS_CRASH_AT": "shim-before-result"])
        try waitUntil("failed") { try env.mission(id).state == .failed }
        let m = try env.mission(id)
        #expect(m.attempts == 2 && m.exitCode == nil)
        #expect(m.reason?.contains("giving up") == true)
        #expect(readText(MissionPaths(stateDir: env.state, id: id).output) == "hi\n--- vigil: attempt 2 of 2 ---\nhi\n")
        // The row is final before the scratch dir is removed (database first): wait for both
        // (the output and the owner record stay).
        try waitUntil("only the output left") {
            ((try? FileManager.default.contentsOfDirectory(atPath: MissionPaths(stateDir: env.state, id: id).directory)) ?? []).sorted() == ["output.log", "owner"]
        }
    }

    /// A mission that ended while no runner watched is announced by the recovery like any
    /// other end (same key), not only in the recovery summary; and the message is in the outbox
    /// with the commit that recorded the end (a crash right after that commit cannot lose it).
    @Test func recoveryAnnouncesEndedMissions() throws {
        let env = try MissionEnv("recovery-notify")
        defer { env.finish() }
        let runs = env.path("runs")
        let id = try env.add(waitingMission(flag: env.path("go"), runs: runs))
        let driver = try env.startDriver()
        try waitUntil("it to run") { try env.mission(id).shim != nil }
        env.kill9(driver)
        touch(env.path("go"))
        try waitUntil("its result file") { FileManager.default.fileExists(atPath: MissionPaths(stateDir: env.state, id: id).result) }
        // The shim exits just after writing the result; until then recovery rightly reattaches.
        try waitUntil("its shim to exit") { try env.mission(id).shim.map { !$0.isAlive } ?? true }
        final class Notes: @unchecked Sendable { var items: [(key: String, text: String)] = [] }
        let notes = Notes()
        let runner = try MissionRunner(stateDir: env.state, journal: Journal(path: env.state.journal, source: "test"), maxParallel: 1,
                                       shimExecutable: vigilPath, notify: { notes.items.append(($0, $1)) })
        runner.endNoticesInOutbox = (["console"], { $0 })
        let summary = try runner.recover()
        #expect(summary.finalized == 1)
        #expect(notes.items.contains { $0.key == "mission-\(id)-1-end" && $0.text.hasPrefix("Mission \(id) done (exit 0)") }, "\(notes.items)")
        let row = try Outbox(try env.queue.db).message(key: "mission-\(id)-1-end", adapter: "console")
        #expect(row?.body == "Mission \(id) done (exit 0).")
    }

    /// A result file that cannot be written for a while (a full disk; here a directory in its
    /// place) is retried by the shim: the mission that ran is not started again.
    @Test func resultWriteRetried() throws {
        let env = try MissionEnv("result-retry")
        defer { env.finish() }
        let runs = env.path("runs")
        let id = try env.add(waitingMission(flag: env.path("go"), runs: runs))
        try env.startDriver()
        try waitUntil("it to run") { try env.mission(id).shim != nil }
        let result = MissionPaths(stateDir: env.state, id: id).result
        try FileManager.default.createDirectory(atPath: result, withIntermediateDirectories: false)
        touch(env.path("go"))
        try waitUntil("the mission ran") { lines(runs).count == 1 }
        usleep(500_000)
        #expect(try env.mission(id).state == .running)
        try FileManager.default.removeItem(atPath: result)
        try waitUntil("recorded") { try env.mission(id).state.isFinal }
        let m = try env.mission(id)
        #expect(m.state == .done && m.attempts == 1, "\(m.reason ?? "")")
        #expect(lines(runs) == ["ran \(id) 1"])
    }

    /// Crash point 9: the runner dies in the middle of recovery; the next one finishes it.
    @Test func crashDuringRecovery() throws {
        let env = try MissionEnv("recovery-crash")
        defer { env.finish() }
        let runs = env.path("runs")
        let id = try env.add(waitingMission(flag: env.path("go"), runs: runs))
        let driver = try env.startDriver()
        try waitUntil("it to run") { try env.mission(id).shim != nil }
        env.kill9(driver)
        #expect(try env.mission(id).shim?.identity.signal(.kill) == true)
        try waitUntil("the shim gone") { try env.mission(id).shim?.identity.isAlive == false }

        let crashing = try env.startDriver(env: ["VIGIL_MISSIONS_CRASH_AT": "recovery-after-requeue"])
        _ = env.waitForExit(crashing)
        let requeued = try env.mission(id)
        #expect(requeued.state == .pending && requeued.attempts == 1)
        #expect(env.ourProcesses().isEmpty) // attempt 1's mission process was killed

        touch(env.path("go"))
        try env.startDriver()
        try waitUntil("done") { try env.mission(id).state == .done }
        #expect(try env.mission(id).attempts == 2)
        #expect(lines(runs) == ["ran \(id) 2"])
    }

    /// Crash point 10: a corrupt result file is quarantined; the mission fails with the reason.
    @Test func corruptResult() throws {
        let env = try MissionEnv("corrupt")
        defer { env.finish() }
        let id = try env.add(waitingMission(flag: env.path("go"), runs: env.path("runs")))
        let driver = try env.startDriver()
        try waitUntil("it to run") { try env.mission(id).shim != nil }
        env.kill9(driver)
        touch(env.path("go"))
        let result = MissionPaths(stateDir: env.state, id: id).result
        try waitUntil("the result file") { try FileManager.default.fileExists(atPath: result) && env.mission(id).shim?.identity.isAlive == false }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: result))
        bytes[bytes.count - 3] ^= 0x55 // a flipped byte in the payload
        try bytes.write(to: URL(fileURLWithPath: result))

        try env.startDriver()
        try waitUntil("the second recovery") { env.events("missions-recovered").count == 2 }
        let m = try env.mission(id)
        #expect(m.state == .failed)
        #expect(m.reason?.contains("result file was corrupt (checksum mismatch)") == true, "\(m.reason ?? "")")
        #expect(!FileManager.default.fileExists(atPath: result))
        let quarantined = (try? FileManager.default.contentsOfDirectory(atPath: env.state.quarantine)) ?? []
        #expect(quarantined.contains { $0.hasPrefix("result.") })
        #expect(env.events("quarantined").count == 1)
        #expect(env.events("missions-recovered").last?["failed"]?.intValue == 1)
    }

    /// A database held locked past the busy timeout: the CLI says so and exits non-zero; the
    /// runner keeps ticking (missions keep running) and records everything once it is free.
    @Test func lockedDatabase() throws {
        let env = try MissionEnv("locked")
        defer { env.finish() }
        let id = try env.add(waitingMission(flag: env.path("go"), runs: env.path("runs")))
        let driver = try env.startDriver()
        try waitUntil("it to run") { try env.mission(id).shim != nil }

        let holder = try Database(path: env.state.database, busyTimeout: 5)
        try holder.execute("BEGIN IMMEDIATE")
        let refused = try env.vigil(["mission", "add", "--", "true"], env: ["VIGIL_BUSY_TIMEOUT": "0.2"])
        #expect(refused.code == 75)
        #expect(refused.err.contains("is locked by another process") && refused.err.contains("the mission was not added"), "\(refused.err)")
        #expect(refused.out.isEmpty)

        touch(env.path("go"))
        try waitUntil("the runner to meet the lock") { !env.events("missions-db-unavailable").isEmpty }
        #expect(FileManager.default.fileExists(atPath: MissionPaths(stateDir: env.state, id: id).result))
        #expect(env.isRunning(driver))

        // A runner that starts while the database is locked cannot recover yet: it keeps
        // ticking and starts nothing.
        env.kill9(driver)
        let second = try env.startDriver()
        try waitUntil("the new runner to meet the lock") { env.events("missions-db-unavailable").count >= 2 }
        #expect(env.isRunning(second))
        #expect(try env.mission(id).state == .running)
        #expect(env.events("missions-recovered").count == 1)
        try holder.execute("ROLLBACK")

        try waitUntil("caught up") { try env.mission(id).state == .done }
        try waitUntil("the runner to journal that the database is back") { !env.events("missions-db-available").isEmpty }
        let later = try env.add(["true"])
        try waitUntil("a new mission runs") { try env.mission(later).state == .done }
        #expect(try env.queue.missions().count == 2)
    }

    /// Two missions on one key never overlap, and the order holds across a runner kill.
    @Test func lockKeyOrderAcrossRunnerKill() throws {
        let env = try MissionEnv("locks")
        defer { env.finish() }
        let log = env.path("log")
        let script = "echo \"start $VIGIL_MISSION_ID\" >> \"$1\"; sleep 0.3; echo \"end $VIGIL_MISSION_ID\" >> \"$1\""
        var ids: [Int64] = []
        for _ in 0..<4 { ids.append(try env.add(["sh", "-c", script, "mission", log], lock: "repo")) }
        let free = try env.add(["true"])
        let other = try env.add(["sh", "-c", script, "mission", env.path("other")], lock: "other-repo")

        let view = try env.queue.lockView()
        let states = try ids.map { view.state(of: try env.mission($0)) }
        #expect(states == [.pending, .waiting, .waiting, .waiting])

        let driver = try env.startDriver(maxParallel: 3)
        try waitUntil("the second to start") { lines(log).contains("start \(ids[1])") }
        let listed = try env.vigil(["mission", "list", "--json"])
        if case .array(let items)? = JSONValue.parse(Data(listed.out.utf8)) {
            #expect(items.first { $0["id"]?.intValue == ids[2] }?["state"]?.stringValue == "waiting")
        } else {
            Issue.record("list --json: \(listed.out)")
        }
        env.kill9(driver)
        try env.startDriver(maxParallel: 3)
        try waitUntil("all done") { try (ids + [free, other]).allSatisfy { try env.mission($0).state == .done } }
        #expect(lines(log) == ids.flatMap { ["start \($0)", "end \($0)"] })
    }

    /// Recovery cleans only orphans of this state dir: a shim no mission claims (and its
    /// child), a process of a mission that has not ended, scratch directories no mission
    /// claims; a mission directory with no row is moved to quarantine/, never deleted. Other
    /// processes stay, and so do processes of a mission that ended long ago (let go or not,
    /// they are forgotten), in their own session or not.
    @Test func orphansCleanedOthersLeftAlone() throws {
        let env = try MissionEnv("orphans")
        defer { env.finish() }
        let done = try env.add(["true"])
        let driver = try env.startDriver()
        try waitUntil("done") { try env.mission(done).state == .done }
        env.stop(driver)
        let pending = try env.add(["true"]) // not started yet: will run after the recovery

        var options = Spawner.Options()
        options.outputPath = env.path("orphan.log")
        let orphan = try Spawner.spawn([vigilPath, "shim", "--state-dir", env.state.path, "--mission", "999", "--attempt", "1",
                                        "--max-attempts", "1", "--cwd", "/", "--", "sleep", "30"], options)
        options.outputPath = env.path("foreign.log")
        let foreign = try Spawner.spawn(["sleep", "30"], options)
        // Processes whose shim is gone (their session leader exited): one of a mission that has
        // not ended is an orphan; one of the finished mission is not, nor one of it in a session
        // with a live leader.
        func leaderless(_ mission: Int64) throws -> ProcessIdentity {
            options.environment = ["VIGIL_STATE_DIR": env.state.path, "VIGIL_MISSION_ID": "\(mission)"]
            options.outputPath = env.path("leaderless-\(mission).pid")
            let parent = try Spawner.spawn(["sh", "-c", "sleep 30 & echo $!"], options)
            _ = Spawner.wait(parent.pid)
            var pid: Int32 = 0
            try waitUntil("the leaderless process of mission \(mission)") {
                pid = Int32(readText(env.path("leaderless-\(mission).pid")).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
                return pid > 0
            }
            return try #require(ProcessIdentity.of(pid: pid))
        }
        let ofPending = try leaderless(pending)
        let ofDone = try leaderless(done)
        options.environment = ["VIGIL_STATE_DIR": env.state.path, "VIGIL_MISSION_ID": "\(done)"]
        let ownSession = try Spawner.spawn(["sleep", "30"], options)
        defer {
            for p in [foreign, ownSession, ofDone] {
                p.signal(.kill)
                _ = Spawner.wait(p.pid)
            }
        }
        try waitUntil("the orphans") { env.ourProcesses().count >= 5 } // the shim and its child, the three tagged ones
        let scratch = MissionPaths(stateDir: env.state, id: done).scratch
        try AtomicFile.makeDirectory(scratch)

        try env.startDriver()
        try waitUntil("the second recovery") { env.events("missions-recovered").count == 2 }
        _ = Spawner.wait(orphan.pid)
        let summary = try #require(env.events("missions-recovered").last)
        #expect(summary["orphans_cleaned"]?.intValue == 4) // shim session, the pending mission's process, missions/999, scratch
        #expect(foreign.isAlive)
        #expect(ownSession.isAlive)
        #expect(ofDone.isAlive, "a process of a mission that ended long ago was killed by a later start")
        try waitUntil("the pending mission's stray process gone") { !ofPending.isAlive }
        #expect(!FileManager.default.fileExists(atPath: scratch))
        #expect(!FileManager.default.fileExists(atPath: MissionPaths(stateDir: env.state, id: 999).directory))
        let unclaimed = try #require(env.events("mission-dir-unclaimed").first)
        #expect(unclaimed["mission"]?.intValue == 999 && unclaimed["action"]?.stringValue == "quarantined", "\(unclaimed)")
        let moved = try #require(unclaimed["moved_to"]?.stringValue)
        #expect(FileManager.default.fileExists(atPath: moved + "/output.log"), "missions/999 was not kept in quarantine/")
        try waitUntil("the pending mission to run") { try env.mission(pending).state == .done }
        try waitUntil("the orphans gone") {
            env.ourProcesses().allSatisfy { env.drivers.contains($0) || [ownSession.pid, ofDone.pid].contains($0) }
        }
    }
}
