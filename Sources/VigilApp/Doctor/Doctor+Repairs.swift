import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

extension Doctor {
    /// Runs each distinct repair of `findings` once, in phase order, through the code the
    /// runner and the commands use. A repair that could race a running process checks, at this
    /// moment, that the process is not running (by its lock) and otherwise leaves it alone.
    static func repair(_ findings: [DoctorFinding], _ dir: StateDirectory, _ options: DoctorOptions) -> [DoctorRepair: RepairOutcome] {
        var seen = Set<DoctorRepair>()
        let repairs = findings.compactMap(\.repair).filter { seen.insert($0).inserted }.sorted { $0.phase < $1.phase }
        let journal = Journal(path: dir.journal, source: "doctor")
        var db: Database?
        func database() throws -> Database {
            if let db { return db }
            let opened = try Database(path: dir.database, busyTimeout: options.busyTimeout.seconds, migrate: false)
            db = opened
            return opened
        }
        var out: [DoctorRepair: RepairOutcome] = [:]
        for r in repairs {
            if let flag = r.requiredFlag, !(flag == "--release-long-running" ? options.releaseLongRunning : options.purgeQuarantine) {
                out[r] = .skipped("add \(flag) to --fix for this")
                continue
            }
            do {
                out[r] = try perform(r, dir: dir, options: options, journal: journal, database: database)
            } catch let e as Database.Error where e.isBusy {
                out[r] = .failed("the database stayed locked (\(options.busyTimeout)); nothing was changed")
            } catch {
                out[r] = .failed("\(error)")
            }
        }
        let done = out.filter { if case .done = $0.value { return true }; return false }.count
        if done > 0 { journal.append(.doctorFixed, ["repairs": .int(Int64(done))]) }
        return out
    }

    private static func perform(_ r: DoctorRepair, dir: StateDirectory, options: DoctorOptions, journal: Journal,
                                database: () throws -> Database) throws -> RepairOutcome {
        switch r {
        case .sweepTemps(let dirs):
            let n = dirs.map { AtomicFile.sweepTemps(in: $0) }.reduce(0, +)
            return .done("removed \(n) temp file\(n == 1 ? "" : "s")")

        case .quarantine(let path, let reason, let writer):
            if let writer, !FileLock.isFree(dir.lock(writer)) {
                return .skipped("its writer (the \(writer.rawValue)) is running and replaces it; its readers quarantine it if it stays corrupt")
            }
            StateFiles(dir: dir, journal: journal).quarantine(path, reason: reason)
            return .done("moved to quarantine/ (journaled)")

        case .migrate:
            _ = try Database(path: dir.database, busyTimeout: options.busyTimeout.seconds, migrate: true)
            return .done("migrated to schema version \(Schema.currentVersion)")

        case .checkpoint:
            try database().checkpoint()
            return .done("checkpointed the WAL")

        case .releaseStaleLocks:
            let n = try MissionQueue(db: database()).releaseStaleLocks()
            MissionRunner.poke(dir)
            return .done("released \(n) lock\(n == 1 ? "" : "s")")

        case .missionRecovery:
            guard FileLock.isFree(dir.lock(.runner)) else {
                return .skipped("a runner is running; `vigil restart runner` makes its start-up recovery do this")
            }
            // Take missions.lock as a runner does: from here on no runner can run missions
            // beside us (one starting now retries taking it every tick).
            let engine: MissionRunner
            do {
                engine = try MissionRunner(stateDir: dir, journal: journal, maxParallel: 1, shimExecutable: Executable.path,
                                           notify: { _, _ in }, busyTimeout: options.busyTimeout)
            } catch {
                return .skipped("another process runs the missions (it holds missions.lock) and recovers them itself")
            }
            guard FileLock.isFree(dir.lock(.runner)) else {
                return .skipped("a runner started meanwhile; its start-up recovery does this")
            }
            let summary = try engine.recover()
            return .done("ran the runner's start-up recovery: " + summary.details)

        case .cancelMission(let id):
            switch try MissionQueue(db: database()).requestCancel(id: id) {
            case .requested:
                MissionRunner.poke(dir)
                return .done("cancel requested: the runner sends SIGTERM, then SIGKILL after its grace")
            case .cancelled:
                return .done("cancelled (it was not running any more)")
            case .alreadyRequested:
                return .skipped("its cancel was already requested")
            case .alreadyFinished(let state):
                return .done("it already ended (\(state.rawValue))")
            case .notFound:
                return .skipped("mission \(id) does not exist any more")
            }

        case .workspaceAutoRecover:
            let db = try Database(path: dir.database, busyTimeout: options.busyTimeout.seconds)
            let store = WorkspaceStore(db: db)
            let git = try Configuration.load(stateDir: dir, arguments: try Arguments([], valued: [])).tunables.gitSettings
            var finished = 0
            if FileLock.isFree(dir.lock(.runner)) {
                let worker = SlotWorker(stateDir: dir, store: store, journal: journal, git: git)
                for s in try store.needingWork() where try worker.prepare(s.id, generation: s.record.generation) == .available { finished += 1 }
            }
            let report = try WorkspaceCheck(stateDir: dir, store: store, queue: MissionQueue(db: db), journal: journal, git: git)
                .run(options: AutoRecoverOptions(), fsck: false, by: "doctor")
            let c = report.counts
            return .done("auto-recover: \(c.corruptedRecovered) repaired, \(c.corruptedIsolated) isolated, \(c.orphanedLocksCleaned) orphaned allocations or stale locks cleaned, \(finished) cleanups or clones finished"
                         + (report.errors.isEmpty ? "" : "; not repaired: " + report.errors.joined(separator: "; ")))

        case .releaseOutbox:
            let n = try Outbox(database()).releaseInFlight(where: ChatService.isGone)
            ChatKick.poke(dir)
            return .done("\(n) message\(n == 1 ? "" : "s") back to pending")

        case .purgeQuarantine(let paths):
            let cutoff = Clock.wall().timeIntervalSince1970 - options.quarantineAge.seconds
            var n = 0
            for p in paths {
                guard let st = FileStatus.at(p, followSymlinks: false), st.kind == .regular, Double(st.modifiedSeconds) <= cutoff else { continue }
                if FileSystem.unlink(p) { n += 1 }
            }
            if n > 0 { try? AtomicFile.fsyncDirectory(dir.quarantine) }
            journal.append(.quarantinePurged, ["files": .int(Int64(n)), "older_than": .string("\(options.quarantineAge)")])
            return .done("deleted \(n) file\(n == 1 ? "" : "s") older than \(options.quarantineAge)")
        }
    }
}
