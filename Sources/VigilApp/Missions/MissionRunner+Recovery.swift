import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// Start-up recovery (docs/missions.md, "Start-up recovery").
extension MissionRunner {
    // MARK: - Recovery

    /// Start-up recovery, in order: reattach live shims → record the others' ended attempts as
    /// the tick does (result, corrupt result, or a dead shim: requeue or fail) → release locks
    /// of dead holders → only then clean orphans. Journals
    /// the summary and hands it to `notify` when not empty. Idempotent: when it throws (the
    /// database is unavailable), calling it again redoes what is left; no mission starts
    /// before it succeeded.
    @discardableResult
    public func recover() throws -> MissionRecoverySummary {
        let q = try openQueue()
        recovered = false
        tracked.removeAll()
        var summary = MissionRecoverySummary()
        let running = try q.running()
        let shims = MissionProcesses.shims(of: stateDir)

        // 1. Reattach missions whose shim is alive.
        var rest: [Mission] = []
        var toRecord: [(id: Int64, attempt: Int, shim: MissionShim)] = []
        for m in running {
            if let (shim, recorded) = MissionRunner.shimCandidate(of: m, among: shims), let fd = shim.identity.openPidFD() {
                watch(m, shim: shim, pidfd: fd, recorded: recorded)
                if !recorded { toRecord.append((m.id, m.attempts, shim)) }
                summary.reattached += 1
            } else {
                rest.append(m)
            }
        }
        try q.recordShims(toRecord)
        for r in toRecord { tracked[r.id]?.identityRecorded = true }

        // 2. The others' attempts are over: record each as the tick records an ended attempt
        //    (`judge`, then `settle` and `record`), one transaction each.
        for m in rest {
            let ended = judge(id: m.id, attempt: m.attempts, shim: m.shim, waitStatus: nil)
            let outcome = try q.settle(id: m.id, attempt: m.attempts, ended.settlement)
            reportKeyEvents(q)
            record(id: m.id, attempt: m.attempts, ended, outcome, summary: &summary)
            if case .died = outcome, m.lockKey != nil { summary.locksReleased += 1 }
            if case .shimDied = ended.settlement { CrashPoint.hit("recovery-after-requeue") }
        }

        // 3. Release locks held by dead holders.
        summary.locksReleased += try q.releaseStaleLocks()

        // 4. Only now: orphans (an adopted shim takes its workspace slot back here).
        summary.orphansCleaned = try cleanOrphans(q, &summary)
        // 5. Workspace slots allocated to missions that do not run go to the cleaner; the
        //    cleaners of slots released above start at the first tick.
        _ = try recoverSlots(q)
        journalSlotChanges(q)
        checkpointsPrunedUpTo = 0 // every mission that ended long enough ago, at the first prune
        lastCheckpointPrune = nil

        recovered = true
        lastDataVersion = nil
        claimNeeded = true
        var fields = summary.journalFields
        fields["cgroup"] = .string(MissionCgroup.probe(stateDir))
        journal.append(.missionsRecovered, fields)
        if !summary.isEmpty {
            notify("missions-recovered-\(Clock.bootID)-\(ProcessIdentity.current.pid)-\(ProcessIdentity.current.startTicks)", summary.text)
        }
        return summary
    }

    /// The shim that may run the current attempt of a running mission: the recorded one (this
    /// boot), or, when none is recorded yet (the runner stopped between spawn and record), a
    /// shim of this attempt found in /proc by its argv. Whether it is alive is the caller's
    /// question (recovery opens a pidfd; `vigil doctor` asks /proc).
    static func shimCandidate(of m: Mission, among shims: [MissionProcesses.ShimProcess]) -> (shim: MissionShim, recorded: Bool)? {
        if let shim = m.shim { return shim.bootID == Clock.bootID ? (shim, true) : nil }
        guard let p = shims.first(where: { $0.mission == m.id && $0.attempt == m.attempts }) else { return nil }
        return (MissionShim(identity: p.identity, bootID: Clock.bootID), false)
    }

    func watch(_ m: Mission, shim: MissionShim, pidfd: PidFD, recorded: Bool) {
        let t = Tracked(id: m.id, attempt: m.attempts, shim: shim, identityRecorded: recorded)
        t.letDaemonsGo = m.letDaemonsGo
        t.pidfd = pidfd
        t.cancelRequested = m.cancelRequested
        t.policy = policy(of: m)
        t.stopCause = m.stopCause
        // The attempt's start on the boot clock, from its wall-clock start (as close as a
        // restarted runner can know it; never in the future).
        let now = Clock.boot()
        let ran = m.startedAt.map { max(0, Clock.wall().timeIntervalSince($0)) } ?? 0
        t.watch = AttemptWatch(startedAt: now - .seconds(ran), lastOutputAt: now)
        tracked[m.id] = t
    }

    /// The limits that apply to `m`: its own, else the configured defaults.
    func policy(of m: Mission) -> MissionPolicy {
        MissionPolicy(maxAttempts: m.maxAttempts, timeout: m.timeout ?? settings.timeout, silenceLimit: m.silenceLimit ?? settings.silenceLimit,
                      termGrace: termGrace)
    }

    func report(_ outcome: MissionQueue.ShimDeath?, id: Int64, attempt: Int, reason: String, summary: inout MissionRecoverySummary) {
        guard let outcome else { return }
        var fields: [String: JSONValue] = ["mission": .int(id), "attempt": .int(Int64(attempt)), "reason": .string(reason)]
        switch outcome {
        case .requeued, .requeuedUncounted:
            summary.requeued += 1
            fields["uncounted"] = .bool(outcome == .requeuedUncounted)
            journal.append(.missionRequeued, fields)
        case .failed(let text):
            summary.failed += 1
            fields["reason"] = .string(text)
            journal.append(.missionFailed, fields)
        case .cancelled:
            summary.cancelled += 1
            journal.append(.missionCancelled, fields)
        }
    }

    /// Shims no running attempt claims (with their attempt's processes), processes of missions
    /// that have not ended and that no live shim runs, scratch directories of missions that do
    /// not run; mission directories without a row are moved to quarantine/.
    /// A shim of the attempt after a pending mission's starts is adopted instead (reattached):
    /// its claim was taken back in step 2 because the shim was not visible yet (a spawn a killed
    /// runner never recorded); killing it would start the mission a second time.
    func cleanOrphans(_ q: MissionQueue, _ summary: inout MissionRecoverySummary) throws -> Int {
        var cleaned = 0
        for p in MissionRunner.orphanShims(of: stateDir, claimed: Set(tracked.values.compactMap { $0.shim?.identity })) {
            // Only for this very row (its directory's owner record): after a restored backup, a
            // shim of a lost row with the same id is not this mission's.
            if tracked[p.mission] == nil, let pending = try q.mission(p.mission), pending.state == .pending, pending.attempts == p.attempt - 1,
               case .ok(let owner) = StateFile.read(MissionPaths(stateDir: stateDir, id: p.mission).owner, kind: MissionOwner.kind, as: MissionOwner.self),
               owner.owns(pending), let fd = p.identity.openPidFD(),
               let m = try q.adopt(id: p.mission, attempt: p.attempt, shim: MissionShim(identity: p.identity, bootID: Clock.bootID)) {
                watch(m, shim: m.shim!, pidfd: fd, recorded: true)
                journal.append(.missionAdopted, ["mission": .int(m.id), "attempt": .int(Int64(m.attempts)), "shim_pid": .int(Int64(p.identity.pid))])
                summary.reattached += 1
                continue
            }
            MissionProcesses.killSession(of: p.identity)
            // Its attempt never reached its end (nothing was let go): what it started outside
            // its session goes too, unless a live shim runs that mission now.
            if tracked[p.mission] == nil {
                MissionProcesses.killMembers(of: stateDir, mission: p.mission, patience: .milliseconds(500), startedSince: p.identity.startTicks)
            }
            journal.append(.missionOrphanKilled, ["pid": .int(Int64(p.identity.pid)), "mission": .int(p.mission),
                                                     "attempt": .int(Int64(p.attempt)), "what": "shim session"])
            cleaned += 1
        }
        // Mission cgroups of missions that do not run (what a killed shim left: processes of an
        // attempt that never reached its end, or an empty cgroup). What was let go is never in
        // one (it was moved to the parent at the end).
        for (id, group) in MissionCgroup.all(of: stateDir) where tracked[id] == nil {
            let n = group.kill(patience: .milliseconds(500)).killed
            if n > 0 {
                journal.append(.missionOrphanKilled, ["mission": .int(id), "what": "cgroup", "processes": .int(Int64(n)), "cgroup": .string(group.cgroup.path)])
                cleaned += 1
            }
        }
        let claimed = Set(tracked.values.compactMap { $0.shim?.identity.pid })
        for p in try MissionRunner.orphanProcesses(of: stateDir, q, claimedSessions: claimed, watched: Set(tracked.keys)) {
            if p.identity.signal(.kill) {
                journal.append(.missionOrphanKilled, ["pid": .int(Int64(p.identity.pid)), "mission": .int(p.mission), "what": "process"])
                cleaned += 1
            }
        }
        let paths = try MissionRunner.orphanPaths(of: stateDir, q, running: Set(tracked.keys))
        for dir in paths.directories {
            // Never deleted: it holds the output and result of a mission this database does not
            // know (restored from an older backup?).
            guard let id = Int64(Path.lastComponent(dir)) else { continue }
            if quarantineDirectory(id, why: "no mission \(id) in the database (it was restored from an older backup, or the row was removed)") {
                cleaned += 1
            }
        }
        for dir in paths.scratch where (try? FileManager.default.removeItem(atPath: dir)) != nil {
            journal.append(.missionOrphanRemoved, ["path": .string(dir), "what": "scratch directory"])
            cleaned += 1
        }
        return cleaned
    }
}
