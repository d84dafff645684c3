import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// One look at a state directory: the checks of `vigil doctor`, each adding findings. Reads
/// only: nothing is written, quarantined or signalled here (repairs are in `Doctor+Repairs`).
final class DoctorScan {
    let dir: StateDirectory
    let options: DoctorOptions
    private(set) var findings: [DoctorFinding] = []
    /// The database, when it exists and could be opened (and its schema is one we know).
    private(set) var db: Database?
    private(set) var schemaVersion = 0

    /// Who is running, by their singleton locks (held for a process's whole life, freed by
    /// the kernel when it dies).
    let runnerRunning: Bool
    let bridgeRunning: Bool
    /// A runner's missions (`MissionRunner`) run: they record ended attempts themselves.
    let missionsRunning: Bool
    let stopped: Bool
    private(set) var tunables = Tunables()
    private(set) var circuit: Circuit = .closed

    init(dir: StateDirectory, options: DoctorOptions) {
        self.dir = dir
        self.options = options
        runnerRunning = !FileLock.isFree(dir.lock(.runner))
        bridgeRunning = !FileLock.isFree(dir.lock(.bridge))
        missionsRunning = !FileLock.isFree(dir.missionsLock)
        stopped = FileSystem.exists(dir.stopMarker)
    }

    func add(_ f: DoctorFinding) { findings.append(f) }

    /// Runs a check; an error it throws becomes a finding instead of ending the run.
    func guarded(_ name: String, _ body: () throws -> Void) {
        do {
            try body()
        } catch let e as Database.Error {
            databaseError(e, during: "the \(name) check")
        } catch {
            add(DoctorFinding(check: "doctor.check-failed", subject: name, severity: .warning,
                              what: "the \(name) check could not run: \(error)",
                              why: "doctor could not look at this part of the state directory, so it may hide a problem",
                              action: "run `vigil doctor` again; if it persists, look at the error above"))
        }
    }

    // MARK: - Configuration

    func checkConfiguration() {
        do {
            tunables = try Configuration.load(stateDir: dir, arguments: try Arguments([], valued: [])).tunables
        } catch {
            add(DoctorFinding(check: "config", subject: "vigil.json", severity: .critical,
                              what: "the configuration is invalid: \(error)",
                              why: "the runner refuses to start with it (exit 2), and the wrapper does not relaunch it",
                              action: "fix or remove \(dir.config) (docs/operator-guide.md, \"Configuration\")"))
        }
        do {
            _ = try ChatConfig.load(configFile: dir.config)
        } catch {
            add(DoctorFinding(check: "config", subject: "chat", severity: .critical,
                              what: "the chat configuration is invalid: \(error)",
                              why: "the bridge cannot start its chat, so no notification is delivered and no command is heard",
                              action: "fix the \"chat\" object of \(dir.config) (docs/chat.md, \"Configuration\")"))
        }
    }

    // MARK: - Processes and the watchdog

    func checkProcesses() {
        let now = Clock.boot()
        let (runner, _) = StateFiles.readLiveRecordQuietly(dir, .runner)
        let (bridge, _) = StateFiles.readLiveRecordQuietly(dir, .bridge)
        if case .ok(let h) = StateFile.read(dir.healState, kind: HealFile.kind, as: HealFile.self), h.bootID == Clock.bootID {
            circuit = h.state.circuit
        }
        if stopped {
            let m = StatusCommand.readQuietly(dir.stopMarker, kind: Marker.kind, Marker.self).0
            add(DoctorFinding(check: "stop", severity: .info,
                              what: "`vigil stop` is in effect\(m.map { " (since \($0.requestedWall), by \($0.by))" } ?? ""): the bridge is not resurrected",
                              why: "an operator stopped the pair",
                              action: "start the pair again with vigil-run (it clears the stop marker)"))
        }
        if !runnerRunning {
            if !stopped {
                let last = runner.map { " (last: pid \($0.identity.pid), heartbeat \($0.beatWall))" } ?? ""
                add(DoctorFinding(check: "runner", severity: .critical,
                                  what: "the runner is not running\(last)",
                                  why: "nothing watches or heals the bridge, and no mission runs",
                                  action: "start it: vigil-run --state-dir \(dir.path) (or `systemctl start vigil`)"))
            }
        } else if let r = runner, r.bootID == Clock.bootID, r.identity.isAlive, now - r.beat > max(tunables.staleAfter, tunables.tick * 3) {
            add(DoctorFinding(check: "runner", severity: .warning,
                              what: "the runner's heartbeat is \(Doctor.age(now - r.beat)) old (pid \(r.identity.pid))",
                              why: "its loop may be stuck: while it is, nothing heals the bridge and missions are not recorded",
                              action: "`vigil restart runner`; if it does not react, kill pid \(r.identity.pid) (the wrapper relaunches it)"))
        }

        let current = runnerRunning ? runner?.currentVersion : nil
        let probe = Probe.run(record: bridge, starting: nil, currentVersion: current,
                              limits: ProbeLimits(staleAfter: tunables.staleAfter, rssLimit: tunables.rssLimit), now: now,
                              isBridge: { runsVigil($0, role: .bridge, dir: self.dir) })
        guard probe.verdict != .healthy, !stopped else { return }
        let healing = runnerRunning && circuit != .open
        let state: String
        switch probe.verdict {
        case .healthy: return
        case .drifted: state = "running an older version than the one on disk"
        case .bloated: state = "above its memory limit"
        case .hung: state = "hung (its heartbeat is stale)"
        case .dead: state = "dead (its PID file names a process that is gone)"
        case .missing: state = "not running (no PID file)"
        }
        // Informational: what heals the bridge (the runner) has its own findings.
        let how: String
        if healing {
            how = "the watchdog is healing it"
        } else {
            how = runnerRunning ? "the watchdog's circuit is open (see that finding)" : "nothing heals it while the runner is not running"
        }
        add(DoctorFinding(check: "bridge", severity: .info,
                          what: "the bridge is \(state); \(how)",
                          why: "without a healthy bridge notifications wait in the outbox and chat commands are not heard",
                          action: healing ? "watch `vigil status`; nothing to do unless it persists" : "see the runner and circuit findings"))
    }

    func checkHeal() {
        guard case .ok(let h) = StateFile.read(dir.healState, kind: HealFile.kind, as: HealFile.self), h.bootID == Clock.bootID else { return }
        let now = Clock.boot()
        switch h.state.circuit {
        case .closed:
            return
        case .open:
            let since = h.state.circuitOpenedAt.map { " \(Doctor.age(now - $0)) ago" } ?? ""
            add(DoctorFinding(check: "heal.circuit", severity: .critical,
                              what: "the watchdog's circuit is open (opened\(since), after \(h.state.failedRespawns) failed respawns): it has stopped restarting the bridge",
                              why: "the bridge failed its respawns in a row; the watchdog retries once per circuit-cooloff so it does not thrash",
                              action: "find the cause (`tail -50 \(dir.log(.bridge))`, `vigil journal --since 30m`), fix it, then `vigil heal reset`"))
        case .halfOpen:
            add(DoctorFinding(check: "heal.circuit", severity: .warning,
                              what: "the watchdog's circuit is half-open: one trial respawn after an open circuit",
                              why: "the bridge failed its respawns in a row before",
                              action: "watch `vigil status`; if it opens again, read \(dir.log(.bridge))"))
        }
    }

    // MARK: - Files

    func checkStateFiles() {
        func check<T: Decodable & Sendable>(_ path: String, _ kind: String, _ type: T.Type, writer: StateDirectory.Role?) {
            if case .corrupt(let why) = StateFile.read(path, kind: kind, as: type) { corrupt(path, why, writer: writer) }
        }
        check(dir.pidFile(.bridge), ProcessRecord.kind, ProcessRecord.self, writer: .bridge)
        check(dir.pidFile(.runner), ProcessRecord.kind, ProcessRecord.self, writer: .runner)
        check(dir.healState, HealFile.kind, HealFile.self, writer: .runner)
        check(dir.restartMarker(.bridge), Marker.kind, Marker.self, writer: .runner)
        check(dir.restartMarker(.runner), Marker.kind, Marker.self, writer: nil)
        check(dir.stopMarker, Marker.kind, Marker.self, writer: nil)
        check(dir.healReset, Marker.kind, Marker.self, writer: nil)
        if case .corrupt(let why) = ChatService.readStatusFile(dir) { corrupt(dir.chatStatus, why, writer: .bridge) }
        checkChatRooms()
    }

    /// The bridge's last word on each adapter's destination (chat/status.json): a Matrix room that
    /// cannot be reached or is encrypted (docs/chat.md, "Room problems").
    func checkChatRooms() {
        for a in ChatService.readStatus(dir) ?? [] {
            guard let p = a.problem else { continue }
            let encrypted = p.hasPrefix("room is encrypted")
            add(DoctorFinding(check: "chat.room", subject: a.adapter, severity: .warning,
                              what: "chat: \(ChatText.brief(p, maxLength: 300))",
                              why: encrypted ? "Vigil does no end-to-end encryption: commands said there cannot be read (its own messages still arrive, unencrypted)"
                                             : "nothing Vigil sends reaches anyone, and no command is heard",
                              action: encrypted ? "configure an unencrypted room in chat.matrix.room of \(dir.config) (encryption cannot be turned off in a room)"
                                                : "check chat.matrix.room in \(dir.config) (the alias exists, the bot is invited), then `vigil restart bridge` (docs/chat.md, \"Room problems\")"))
        }
    }

    private func corrupt(_ path: String, _ why: String, writer: StateDirectory.Role?) {
        let name = String(path.dropFirst(dir.path.count + 1))
        add(DoctorFinding(check: "state-file", subject: name, severity: .warning,
                          what: "\(name) is corrupt: \(why)",
                          why: "a torn write or an outside edit; Vigil treats it as absent (its readers quarantine it when they load it)",
                          action: "`vigil doctor --fix` moves it to quarantine/ (it is never deleted)",
                          repair: .quarantine(path: path, reason: why, writer: writer)))
    }

    func checkQuarantine() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.quarantine), !names.isEmpty else { return }
        let now = Clock.wall().timeIntervalSince1970
        var recent: [(name: String, mtime: Double)] = []
        var old: [String] = []
        for name in names {
            let path = dir.quarantineEntry(name)
            guard let st = FileStatus.at(path, followSymlinks: false), st.kind == .regular else { continue }
            let mtime = Double(st.modifiedSeconds) + Double(st.modifiedNanoseconds) / 1e9
            if now - mtime >= options.quarantineAge.seconds { old.append(path) } else { recent.append((name, mtime)) }
        }
        if let newest = recent.max(by: { $0.mtime < $1.mtime }) {
            add(DoctorFinding(check: "quarantine", subject: "recent", severity: .warning,
                              what: "\(recent.count) file\(recent.count == 1 ? "" : "s") in quarantine/ (newest: \(newest.name), \(Doctor.age(.seconds(now - newest.mtime))) ago)",
                              why: "state files found corrupt were moved aside and kept for a person to look at; a torn file after a crash is harmless, repeated ones point at a disk or a writer that misbehaves",
                              action: "read why (`vigil journal --json | grep quarantined`), look at the files in \(dir.quarantine), then delete them"))
        }
        if !old.isEmpty {
            add(DoctorFinding(check: "quarantine", subject: "old", severity: .info,
                              what: "\(old.count) file\(old.count == 1 ? "" : "s") in quarantine/ older than \(options.quarantineAge)",
                              why: "quarantined files are kept until someone deletes them",
                              action: "delete them, or `vigil doctor --fix --purge-quarantine`",
                              repair: .purgeQuarantine(old.sorted())))
        }
    }

    func checkTempFiles() {
        var dirs = [dir.path, dir.chatDirectory]
        let ids = ((try? FileManager.default.contentsOfDirectory(atPath: dir.missions)) ?? []).compactMap { Int64($0) }.sorted()
        dirs += ids.map { MissionPaths(stateDir: dir, id: $0).directory }
        var found: [(dir: String, count: Int)] = []
        for d in dirs {
            let n = AtomicFile.staleTemps(in: d).count
            if n > 0 { found.append((d, n)) }
        }
        guard !found.isEmpty else { return }
        let total = found.map(\.count).reduce(0, +)
        let places = found.map { $0.dir == dir.path ? "the state dir" : String($0.dir.dropFirst(dir.path.count + 1)) + "/" }
        add(DoctorFinding(check: "temp-files", severity: .warning,
                          what: "\(total) temp file\(total == 1 ? "" : "s") left by writers that died (in \(places.joined(separator: ", ")))",
                          why: "a process was killed while replacing a state file: the old file is intact, the temp file is litter (the runner sweeps them when it starts)",
                          action: "`vigil doctor --fix` removes them",
                          repair: .sweepTemps(found.map(\.dir))))
    }

    func checkDisk() {
        let free: UInt64, total: UInt64
        do { (free, total) = try FileSystem.space(at: dir.path) } catch {
            add(DoctorFinding(check: "disk", severity: .warning,
                              what: "cannot read the free space of \(dir.path): \(error.reason)",
                              why: "a full disk stops state files, the journal and the database", action: "check the file system with df"))
            return
        }
        let percent = total > 0 ? Double(free) / Double(total) * 100 : 100
        guard free < options.minFreeBytes || percent < options.minFreePercent else { return }
        add(DoctorFinding(check: "disk", severity: .critical,
                          what: "low disk space: \(ByteSize.format(free)) free of \(ByteSize.format(total)) (\(DecimalText.fixed(percent, places: 1))%) where the state dir is (limits: \(ByteSize.format(options.minFreeBytes)), \(DecimalText.compact(options.minFreePercent))%)",
                          why: "on a full disk heartbeats, heal state and commits fail: the watchdog goes on from memory, but missions and messages cannot be recorded",
                          action: "free space on that file system (old logs: \(dir.log(.bridge)), chat.log.1, mission output in \(dir.missions)/)"))
    }

    // MARK: - Database

    static let restoreSteps = """
        stop the pair (`vigil stop`); copy vigil.db, vigil.db-wal and vigil.db-shm together to a safe place; \
        then restore a backup, or salvage: `sqlite3 vigil.db .recover | sqlite3 recovered.db`, check it \
        (`sqlite3 recovered.db 'PRAGMA integrity_check'`), remove the three old files and move recovered.db to \
        vigil.db; start the pair. Never delete -wal or -shm on their own: committed transactions are in there
        """

    /// Memory of the machine and of our own processes: a machine out of memory gets its
    /// processes killed (the watchdog too); a runner or bridge that keeps growing leaks.
    func checkMemory() {
        if let m = ProcStat.systemMemory() {
            let percent = m.total > 0 ? Double(m.available) / Double(m.total) * 100 : 100
            if m.available < options.minAvailableMemory || percent < options.minAvailableMemoryPercent {
                add(DoctorFinding(check: "memory", subject: "machine", severity: .critical,
                                  what: "low memory: \(ByteSize.format(m.available)) available of \(ByteSize.format(m.total)) (\(DecimalText.fixed(percent, places: 1))%; limits \(ByteSize.format(options.minAvailableMemory)), \(DecimalText.compact(options.minAvailableMemoryPercent))%)",
                                  why: "the kernel's OOM killer picks processes to kill when memory runs out, the runner and the bridge among them",
                                  action: "find what uses the memory (ps aux --sort=-rss | head); lower max-parallel if missions do"))
            }
        }
        for role in StateDirectory.Role.allCases {
            guard let record = StateFiles.readLiveRecordQuietly(dir, role).0, record.identity.liveness() == .alive,
                  runsVigil(record.identity, role: role, dir: dir), let rss = record.identity.residentBytes(),
                  rss > options.maxProcessMemory else { continue }
            add(DoctorFinding(check: "memory", subject: role.rawValue, severity: .warning,
                              what: "the \(role.rawValue) (pid \(record.identity.pid)) uses \(ByteSize.format(rss)) (limit \(ByteSize.format(options.maxProcessMemory)))",
                              why: "an idle runner or bridge stays at a few tens of MiB; one that keeps growing leaks",
                              action: role == .bridge ? "`vigil restart bridge` (or set rss-limit: the watchdog restarts a bloated bridge itself)" : "`vigil restart runner`"))
        }
    }

    func checkDatabase(integrity: Bool = true) {
        guard FileSystem.exists(dir.database) else {
            add(DoctorFinding(check: "database", severity: .info,
                              what: "no database yet (\(dir.database))",
                              why: "nothing was queued here so far; the first mission, message or runner creates it",
                              action: "nothing"))
            return
        }
        let db: Database
        do {
            db = try Database(path: dir.database, busyTimeout: options.busyTimeout.seconds, migrate: false)
        } catch let e as Database.Error {
            databaseError(e, during: "opening it")
            return
        } catch {
            add(DoctorFinding(check: "database", severity: .critical, what: "cannot open the database: \(error)",
                              why: "missions and messages cannot be recorded", action: "check \(dir.database) and its permissions"))
            return
        }
        do {
            schemaVersion = Int(try db.scalarInt("PRAGMA user_version") ?? 0)
            if schemaVersion > Schema.currentVersion {
                add(DoctorFinding(check: "database.schema", severity: .critical,
                                  what: "the database has schema version \(schemaVersion), newer than this program knows (\(Schema.currentVersion))",
                                  why: "a newer Vigil wrote it; this one cannot use it",
                                  action: "run the newer Vigil (check VIGIL_BIN and the installed binary)"))
                return
            }
            if schemaVersion < Schema.currentVersion {
                add(DoctorFinding(check: "database.schema", severity: .warning,
                                  what: "the database has schema version \(schemaVersion); this program's is \(Schema.currentVersion)",
                                  why: "its tables are not all there yet; the runner and every command migrate it when they open it",
                                  action: "`vigil doctor --fix` migrates it (as the runner would)", repair: .migrate))
            }
            let problems = integrity ? try db.integrityProblems() : []
            if !problems.isEmpty {
                add(DoctorFinding(check: "database.integrity", severity: .critical,
                                  what: "the database fails its integrity check: \(problems.prefix(3).joined(separator: "; "))\(problems.count > 3 ? " (and \(problems.count - 3) more)" : "")",
                                  why: "missions or messages may be lost or wrong; doctor never repairs this itself",
                                  action: DoctorScan.restoreSteps))
            }
        } catch let e as Database.Error {
            databaseError(e, during: "checking it")
            return
        } catch {
            add(DoctorFinding(check: "database", severity: .critical, what: "cannot check the database: \(error)",
                              why: "missions and messages may not be recordable", action: "check \(dir.database)"))
            return
        }
        if let st = FileStatus.at(dir.database + "-wal"), UInt64(st.size) > options.maxWAL {
            add(DoctorFinding(check: "database.wal", severity: .warning,
                              what: "the database's WAL is \(ByteSize.format(UInt64(st.size))) (limit \(ByteSize.format(options.maxWAL)))",
                              why: "a WAL that is never checkpointed grows without bound and slows every read",
                              action: "`vigil doctor --fix` checkpoints it (wal_checkpoint(TRUNCATE)); never delete the -wal file",
                              repair: .checkpoint))
        }
        self.db = db
    }

    func databaseError(_ e: Database.Error, during: String) {
        db = nil
        if findings.contains(where: { $0.check.hasPrefix("database") && $0.severity >= .warning }) { return }
        if e.isBusy {
            add(DoctorFinding(check: "database.locked", severity: .warning,
                              what: "the database is locked by another process (waited \(options.busyTimeout) while \(during))",
                              why: "while it stays locked missions and messages cannot be recorded; doctor skipped the mission and outbox checks",
                              action: "run doctor again; if it stays locked, find the holder with `fuser -v \(dir.database)`"))
        } else if e.isCorrupt {
            add(DoctorFinding(check: "database.integrity", severity: .critical,
                              what: "the database is corrupt (\(during)): \(e.message)",
                              why: "missions and messages cannot be read or recorded; doctor never repairs this itself",
                              action: DoctorScan.restoreSteps))
        } else {
            add(DoctorFinding(check: "database", severity: .critical,
                              what: "cannot use the database (\(during)): \(e)",
                              why: "missions and messages cannot be recorded",
                              action: e.isFull ? "free disk space" : "check \(dir.database), its directory and permissions"))
        }
    }

    // MARK: - Missions

    func checkMissions(_ db: Database) throws {
        // MissionQueue reads every column up to workspace/slot (migration 8); an older database
        // is reported by `database.schema` and checked once migrated.
        guard schemaVersion >= 8 else { return }
        let q = MissionQueue(db: db)
        // Rows, then /proc, then rows again: a shim started in between has its row in the second read.
        let first = try q.running()
        let shims = MissionProcesses.shims(of: dir)
        var byID = Dictionary(first.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for m in try q.running() { byID[m.id] = m }
        let running = byID.values.sorted { $0.id < $1.id }
        var alive: [Int64: MissionShim] = [:]
        for m in running {
            if let (shim, _) = MissionRunner.shimCandidate(of: m, among: shims), shim.identity.isAlive { alive[m.id] = shim }
        }
        let now = Clock.wall()
        for m in running {
            guard alive[m.id] != nil else {
                // A live runner records an ended shim itself (its pidfd wakes it).
                if missionsRunning { continue }
                let shim = m.shim.map { "its shim (\($0.identity)) is gone" } ?? "its shim never started"
                add(DoctorFinding(check: "missions.dead-shim", subject: "mission \(m.id)", severity: .warning,
                                  what: "mission \(m.id) is marked running (attempt \(m.attempts) of \(m.maxAttempts)), but \(shim) and no runner is running to recover it",
                                  why: "its end was never recorded: the mission does not run, holds a slot\(m.lockKey.map { " and its lock \($0)" } ?? ""), and is not requeued",
                                  action: "start the runner: its start-up recovery records the result, requeues or fails it; or `vigil doctor --fix`, which runs the same recovery",
                                  repair: .missionRecovery))
                continue
            }
            guard let started = m.startedAt, now.timeIntervalSince(started) > options.maxRuntime.seconds else { continue }
            let ran = Doctor.age(.seconds(now.timeIntervalSince(started)))
            let command = MissionCommand.display(m.argv).prefix(80)
            if m.cancelRequested {
                add(DoctorFinding(check: "missions.long-running", subject: "mission \(m.id)", severity: .info,
                                  what: "mission \(m.id) has run for \(ran) (limit \(options.maxRuntime)); its cancel is in progress: \(command)",
                                  why: "a cancel was requested: the runner sends SIGTERM, then SIGKILL after its grace",
                                  action: "nothing, unless it is still running after the grace (then see `vigil journal`)"))
            } else {
                add(DoctorFinding(check: "missions.long-running", subject: "mission \(m.id)", severity: .warning,
                                  what: "mission \(m.id) has been running for \(ran) (limit \(options.maxRuntime)): \(command)",
                                  why: "it may be stuck; it takes a slot\(m.lockKey.map { " and holds its lock \($0)" } ?? ""), so missions behind it wait",
                                  action: "look at its output (`vigil mission show \(m.id)`); cancel it with `vigil mission cancel \(m.id)`, or `vigil doctor --fix --release-long-running`",
                                  repair: .cancelMission(m.id)))
            }
        }

        let stale = try q.staleLocks()
        if !stale.isEmpty {
            add(DoctorFinding(check: "missions.stale-locks", severity: .warning,
                              what: "\(stale.count) lock\(stale.count == 1 ? "" : "s") held by missions that are not running: \(stale.prefix(5).map { "\($0.key) (mission \($0.mission))" }.joined(separator: ", "))",
                              why: "missions waiting for these keys never start",
                              action: "`vigil doctor --fix` releases them (the runner also does when it starts)",
                              repair: .releaseStaleLocks))
        }

        let claimed = Set(alive.values.map(\.identity))
        let cleanUp = missionsRunning || runnerRunning
            ? "`vigil restart runner`: its start-up recovery cleans them up (doctor leaves them to a running runner; directories with no mission go to quarantine/)"
            : "`vigil doctor --fix` cleans them up with the runner's start-up recovery, or start the runner (directories with no mission go to quarantine/)"
        let orphanShims = MissionRunner.orphanShims(of: dir, claimed: claimed)
        if !orphanShims.isEmpty {
            add(DoctorFinding(check: "missions.orphan-shims", severity: .warning,
                              what: "\(orphanShims.count) mission shim\(orphanShims.count == 1 ? "" : "s") that no running mission claims: \(orphanShims.prefix(5).map { "pid \($0.identity.pid) (mission \($0.mission) attempt \($0.attempt))" }.joined(separator: ", "))",
                              why: "their process groups run work no mission records (a requeued attempt may run beside them)",
                              action: cleanUp, repair: .missionRecovery))
        }
        let orphanProcesses = try MissionRunner.orphanProcesses(of: dir, q, claimedSessions: Set(claimed.map(\.pid)), watched: Set(alive.keys))
        if !orphanProcesses.isEmpty {
            add(DoctorFinding(check: "missions.orphan-processes", severity: .warning,
                              what: "\(orphanProcesses.count) mission process\(orphanProcesses.count == 1 ? "" : "es") of missions that have not ended and whose shim is gone: \(orphanProcesses.prefix(5).map { "pid \($0.identity.pid) (mission \($0.mission))" }.joined(separator: ", "))",
                              why: "left behind by a shim that died; nobody waits for them or records their output (processes of ended missions are never counted: they were let go)",
                              action: cleanUp, repair: .missionRecovery))
        }
        let paths = try MissionRunner.orphanPaths(of: dir, q, running: Set(running.map(\.id)))
        if !paths.scratch.isEmpty || !paths.directories.isEmpty {
            var parts: [String] = []
            if !paths.scratch.isEmpty { parts.append("\(paths.scratch.count) scratch director\(paths.scratch.count == 1 ? "y" : "ies") of missions that do not run") }
            if !paths.directories.isEmpty { parts.append("\(paths.directories.count) mission director\(paths.directories.count == 1 ? "y" : "ies") with no mission (moved to quarantine/, never deleted)") }
            let all = (paths.scratch + paths.directories).prefix(5).map { String($0.dropFirst(dir.path.count + 1)) }
            add(DoctorFinding(check: "missions.orphan-workspaces", severity: .warning,
                              what: parts.joined(separator: " and ") + ": " + all.joined(separator: ", "),
                              why: "workspaces left by a shim that died, or directories of missions the database does not know (restored from an older backup?); a new mission with that id must not use them",
                              action: cleanUp, repair: .missionRecovery))
        }
    }

    // MARK: - Outbox

    func checkOutbox(_ db: Database) throws {
        guard schemaVersion >= 2 else { return }
        let outbox = Outbox(db)
        let now = Clock.wall()
        let stuck = options.stuckAfter.seconds

        let failed = try outbox.list(limit: Int.max, state: .failed)
        if !failed.isEmpty {
            let last = failed.last?.lastError.map { "; last error: " + ChatText.brief($0, maxLength: 120) } ?? ""
            add(DoctorFinding(check: "outbox.failed", severity: .warning,
                              what: "\(failed.count) message\(failed.count == 1 ? "" : "s") given up on (\(Doctor.ids(failed.map(\.id))))\(last)",
                              why: "refused by the chat server or out of attempts: nobody has read them",
                              action: "read them: `vigil outbox --state failed`; after fixing the chat server or configuration, queue them again: `vigil outbox --retry failed`"))
        }

        let sending = try outbox.list(limit: Int.max, state: .sending)
        let orphaned = sending.filter { ChatService.isGone($0.claimedBy ?? "") }
        if !orphaned.isEmpty {
            add(DoctorFinding(check: "outbox.orphaned-sending", severity: .warning,
                              what: "\(orphaned.count) message\(orphaned.count == 1 ? "" : "s") marked sending by a bridge that is gone (\(Doctor.ids(orphaned.map(\.id))))",
                              why: "the bridge stopped during delivery; each holds back the later messages of its adapter until it is released (a starting bridge does that)",
                              action: "`vigil doctor --fix` puts them back to pending (same idempotency key: no duplicate where the chat de-duplicates)",
                              repair: .releaseOutbox))
        }
        let inFlight = sending.filter { !ChatService.isGone($0.claimedBy ?? "") && now.timeIntervalSince($0.updated) > stuck }
        if !inFlight.isEmpty {
            add(DoctorFinding(check: "outbox.stuck-sending", severity: .warning,
                              what: "\(inFlight.count) message\(inFlight.count == 1 ? "" : "s") in flight for more than \(options.stuckAfter) (\(Doctor.ids(inFlight.map(\.id))))",
                              why: "a delivery call should end within its timeout; its sender may be stuck",
                              action: "`vigil restart bridge`; if that does not help, look at \(dir.log(.bridge))"))
        }

        let pending = try outbox.list(limit: Int.max, state: .pending).filter { now.timeIntervalSince($0.created) > stuck }
        let circuits = ChatService.readStatus(dir) ?? []
        for adapter in Set(pending.map(\.adapter)).sorted() {
            let rows = pending.filter { $0.adapter == adapter }
            guard let oldest = rows.first else { continue }
            var reasons: [String] = []
            if !bridgeRunning { reasons.append("no bridge is running to deliver them") }
            if let c = circuits.first(where: { $0.adapter == adapter }), c.circuit != .closed {
                reasons.append("the \(adapter) circuit is \(c.circuit.rawValue)\(c.lastError.map { " (last error: \(ChatText.brief($0, maxLength: 120)))" } ?? "")")
            }
            if let e = oldest.lastError { reasons.append("the oldest one's last error: \(ChatText.brief(e, maxLength: 120))") }
            if reasons.isEmpty { reasons.append("delivery is retrying with backoff, or the adapter is not configured any more") }
            add(DoctorFinding(check: "outbox.stuck-pending", subject: adapter, severity: .warning,
                              what: "\(rows.count) message\(rows.count == 1 ? "" : "s") for \(adapter) undelivered for more than \(options.stuckAfter) (oldest: #\(oldest.id), \(Doctor.age(.seconds(now.timeIntervalSince(oldest.created)))) old)",
                              why: reasons.joined(separator: "; "),
                              action: "check the chat server and the configuration (`vigil outbox --adapter \(adapter)`, \(dir.log(.bridge))); they go out in order once delivery works"))
        }
    }
}

extension Doctor {
    /// `2h 5m`, `3m 10s`, `4.2s`.
    static func age(_ span: TimeSpan) -> String {
        let s = max(0, span.seconds)
        if s < 60 { return DecimalText.fixed(s, places: 1) + "s" }
        let total = Int(s)
        if total < 3600 { return "\(total / 60)m \(total % 60)s" }
        if total < 86400 { return "\(total / 3600)h \(total % 3600 / 60)m" }
        return "\(total / 86400)d \(total % 86400 / 3600)h"
    }

    static func ids(_ ids: [Int64]) -> String {
        let shown = ids.prefix(8).map { "#\($0)" }.joined(separator: ", ")
        return ids.count > 8 ? shown + ", …" : shown
    }
}
