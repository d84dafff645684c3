import Foundation
import Glibc
import Testing
@testable import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// A database restored from an older backup, and processes a mission leaves behind
/// (docs/missions.md, "Files of a mission" and "Every process of a mission"): real drivers,
/// shims and missions, a fresh state dir each, nothing left running.
extension MissionTests {
    /// Missions 1..5 run, the database is backed up, 6 (exit 3) and 7 run, everything stops and
    /// the backup is restored. A mission added before the runner starts gets id 6 again: it
    /// runs its own command into a fresh directory and gets its own result; the directories of
    /// the lost 6 and 7 are moved to quarantine/ with their output and result (journaled), never
    /// deleted; a mission added later gets id 7 and a fresh directory too.
    @Test func restoredBackupNeverDeletesOrReusesNewerDirectories() throws {
        let env = try MissionEnv("restore")
        defer { env.finish() }
        var older: [Int64] = []
        for _ in 1...5 { older.append(try env.add(["sh", "-c", "echo old-$VIGIL_MISSION_ID"])) }
        let driver = try env.startDriver()
        try waitUntil("missions 1..5 to end") { try older.allSatisfy { try env.mission($0).state == .done } }
        let backup = env.path("backup.db")
        try env.queue.db.execute("VACUUM INTO '\(backup)'") // a consistent copy, taken while the runner runs
        let lost6 = try env.add(["sh", "-c", "echo old-$VIGIL_MISSION_ID; exit 3"])
        let lost7 = try env.add(["sh", "-c", "echo old-$VIGIL_MISSION_ID"])
        try waitUntil("missions 6 and 7 to end") { try env.mission(lost6).state.isFinal && env.mission(lost7).state.isFinal }
        #expect(try env.mission(lost6).exitCode == 3)
        env.stop(driver)

        // Restore: nothing runs, the test's connection is closed; the newer -wal/-shm go with the newer file.
        env.closeQueue()
        for suffix in ["", "-wal", "-shm"] { unlink(env.state.database + suffix) }
        try FileManager.default.copyItem(atPath: backup, toPath: env.state.database)
        chmod(env.state.database, 0o600)
        // Added before any runner looked: its row exists when the recovery runs.
        let new6 = try env.add(["sh", "-c", "echo new-$VIGIL_MISSION_ID"])
        #expect(new6 == lost6, "the restored database hands out id \(lost6) again")

        try env.startDriver()
        try waitUntil("the new mission \(new6) to end") { try env.mission(new6).state.isFinal }
        let m6 = try env.mission(new6)
        #expect(m6.state == .done && m6.exitCode == 0 && m6.attempts == 1, "it took the lost mission's result: \(m6)")
        #expect(readText(MissionPaths(stateDir: env.state, id: new6).output) == "new-\(new6)\n")
        let new7 = try env.add(["sh", "-c", "echo new-$VIGIL_MISSION_ID"])
        #expect(new7 == lost7)
        try waitUntil("the new mission \(new7) to end") { try env.mission(new7).state == .done }
        #expect(readText(MissionPaths(stateDir: env.state, id: new7).output) == "new-\(new7)\n")
        for id in older { #expect(readText(MissionPaths(stateDir: env.state, id: id).output) == "old-\(id)\n") }

        // Both lost directories are in quarantine/, whole, and journaled with how they ended.
        let unclaimed = env.events("mission-dir-unclaimed")
        #expect(unclaimed.count == 2, "\(unclaimed)")
        for (id, exit, when) in [(lost7, 0, "no mission"), (lost6, 3, "another mission")] {
            let e = try #require(unclaimed.first { $0["mission"]?.intValue == id }, "mission \(id) not journaled")
            #expect(e["action"]?.stringValue == "quarantined")
            #expect(e["why"]?.stringValue?.contains(when) == true, "\(e)")
            #expect(e["result"]?["exit_code"]?.intValue == Int64(exit), "\(e)")
            let moved = try #require(e["moved_to"]?.stringValue)
            #expect(readText(moved + "/output.log") == "old-\(id)\n")
            let result = StateFile.read(moved + "/result", kind: MissionResult.kind, as: MissionResult.self)
            guard case .ok(let r) = result else { Issue.record("mission \(id): \(result)"); continue }
            #expect(r.mission == id && r.exitCode == Int32(exit))
        }
        // Recovery moved the lost 7 (no row); the start of the new 6 moved the lost 6 (its row
        // existed, but the directory was another row's).
        #expect(unclaimed.first?["mission"]?.intValue == lost7)
    }

    /// `--let-daemons-go`: a daemon the mission starts (`setsid -f`) outlives its end and a
    /// runner restart (orphan cleanup never kills a process of an ended mission); the result
    /// and the journal say one was let go. Then the test ends it by PID.
    @Test func letDaemonsGoLeavesThemAlone() throws {
        let env = try MissionEnv("let-go")
        defer { env.finish() }
        let pidFile = env.path("daemon.pid")
        let id = try env.add(MissionTests.daemonMission(pidFile), lock: "deploy", letDaemonsGo: true)
        #expect(try env.mission(id).letDaemonsGo)
        let driver = try env.startDriver()
        try waitUntil("the mission to end") { try env.mission(id).state.isFinal }
        #expect(try env.mission(id).state == .done)
        let pid = try #require(Int32(readText(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)))
        let daemon = try #require(ProcessIdentity.of(pid: pid))
        defer {
            daemon.signal(.kill)
            #expect(waitUntil(timeout: .seconds(30)) { !daemon.isAlive }, "the daemon to be gone")
        }
        #expect(daemon.isAlive, "the daemon was killed at the end")
        let paths = MissionPaths(stateDir: env.state, id: id)
        guard case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self) else {
            Issue.record("no result")
            return
        }
        #expect(r.outsideLetGo == 1 && r.outsideKilled == nil)
        #expect(readText(paths.output).contains("vigil: let 1 process of the mission outside its session go (--let-daemons-go)"))
        try waitUntil("mission-finished") { !env.events("mission-finished").isEmpty }
        #expect(env.events("mission-finished").first?["outside_let_go"]?.intValue == 1)
        // The lock was released although the daemon lives: a mission on the same key runs.
        let next = try env.add(["true"], lock: "deploy")
        try waitUntil("the next mission on the key") { try env.mission(next).state == .done }

        env.stop(driver)
        try env.startDriver()
        try waitUntil("the second recovery") { env.events("missions-recovered").count == 2 }
        #expect(daemon.isAlive, "a later runner start killed a process the mission let go")
        #expect(env.events("missions-recovered").last?["orphans_cleaned"]?.intValue == 0)
    }

    /// A cancel of a `--let-daemons-go` mission ends the mission (its session) and lets its
    /// daemon go, as its end would.
    @Test func cancelLetsDaemonsGoToo() throws {
        let env = try MissionEnv("let-go-cancel")
        defer { env.finish() }
        let pidFile = env.path("daemon.pid")
        let id = try env.add(MissionTests.daemonMission(pidFile) + ["then-wait"], letDaemonsGo: true)
        try env.startDriver()
        try waitUntil("the daemon to start") { FileManager.default.fileExists(atPath: pidFile) }
        let pid = try #require(Int32(readText(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)))
        let daemon = try #require(ProcessIdentity.of(pid: pid))
        defer {
            daemon.signal(.kill)
            #expect(waitUntil(timeout: .seconds(30)) { !daemon.isAlive }, "the daemon to be gone")
        }
        #expect(try env.mission(id).state == .running)
        #expect(try env.vigil(["mission", "cancel", "\(id)"]).code == 0)
        try waitUntil("the mission to end") { try env.mission(id).state.isFinal }
        #expect(try env.mission(id).state == .cancelled)
        #expect(daemon.isAlive, "the cancel killed the daemon it should let go")
        try waitUntil("mission-finished") { !env.events("mission-finished").isEmpty }
        #expect(env.events("mission-finished").first?["outside_let_go"]?.intValue == 1)
    }

    /// Without the flag the same daemon is killed before the result is written: gone at the
    /// end, counted in the result and the journal.
    @Test func daemonsKilledAtTheEndByDefault() throws {
        let env = try MissionEnv("kill-daemons")
        defer { env.finish() }
        let pidFile = env.path("daemon.pid")
        let id = try env.add(MissionTests.daemonMission(pidFile))
        try env.startDriver()
        try waitUntil("the mission to end") { try env.mission(id).state.isFinal }
        #expect(try env.mission(id).state == .done)
        let pid = try #require(Int32(readText(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)))
        let gone = ProcStat.read(pid: pid).map { $0.isZombie || !ProcStat.commandLine(pid: pid).contains("300") } ?? true
        #expect(gone, "the daemon outlived its mission")
        let paths = MissionPaths(stateDir: env.state, id: id)
        guard case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self) else {
            Issue.record("no result")
            return
        }
        #expect(r.outsideKilled == 1 && r.outsideLetGo == nil)
        try waitUntil("mission-finished") { !env.events("mission-finished").isEmpty }
        #expect(env.events("mission-finished").first?["outside_killed"]?.intValue == 1)
    }

    /// The flag is stored (migration 5), shown, and handed to the shim before `--` (the fixed
    /// positions `parseShim` reads stay); an owner record names one row only.
    @Test func letDaemonsGoIsStoredAndHandedToTheShim() throws {
        let env = try MissionEnv("flag")
        defer { env.finish() }
        let plain = try env.add(["true"])
        let flagged = try env.add(["echo", "--let-daemons-go"], letDaemonsGo: true)
        let a = try env.mission(plain)
        let b = try env.mission(flagged)
        #expect(!a.letDaemonsGo && b.letDaemonsGo)
        let show = try env.vigil(["mission", "show", "\(flagged)", "--json"])
        #expect(JSONValue.parse(Data(show.out.utf8))?["let_daemons_go"] == .bool(true), "\(show.out)")
        let argvA = MissionProcesses.shimArguments(executable: "/bin/vigil", stateDir: env.state, mission: a)
        let argvB = MissionProcesses.shimArguments(executable: "/bin/vigil", stateDir: env.state, mission: b)
        #expect(!argvA.contains("--let-daemons-go"))
        #expect(argvB.prefix { $0 != "--" }.contains("--let-daemons-go"))
        #expect(Array(argvB.suffix(3)) == ["--", "echo", "--let-daemons-go"]) // the command's own argument stays its own
        let parsed = try #require(MissionProcesses.parseShim(argvB, stateDir: env.state))
        #expect(parsed.mission == flagged && parsed.attempt == 0)
        #expect(MissionOwner(b).owns(b) && !MissionOwner(a).owns(b))
    }

    /// A mission that starts a daemon in its own session (`setsid -f`), which writes its pid to
    /// `pidFile` and sleeps; the mission ends once the pid is written (with a second argument,
    /// it sleeps on instead, until cancelled).
    static func daemonMission(_ pidFile: String) -> [String] {
        ["sh", "-c", "setsid -f sh -c 'echo $$ > \"$1.tmp\"; mv \"$1.tmp\" \"$1\"; exec sleep 300' daemon \"$1\"; while [ ! -e \"$1\" ]; do sleep 0.01; done; [ -z \"$2\" ] || exec sleep 300",
         "mission", pidFile]
    }
}
