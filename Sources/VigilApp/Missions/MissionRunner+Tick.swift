import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The runner's tick: ended attempts, cancels and limits, claims (docs/missions.md, "Runner tick").
extension MissionRunner {
    // MARK: - Tick

    /// Records ended attempts, processes cancels, and claims and starts due missions up to
    /// `maxParallel` (respecting lock keys). Never waits for a child and never holds a
    /// transaction while anything runs: ended attempts, identities and claims share one
    /// transaction, the fresh shims' identities a second. Runs `recover()` first when it has
    /// not succeeded yet.
    public func tick(now: BootInstant) throws {
        processCancels(now: now)
        let q = try openQueue()
        if !recovered { try recover() }
        reapWorkspaceWorkers()
        if lastCheckpointPrune.map({ now - $0 >= .seconds(3600) }) ?? true {
            lastCheckpointPrune = now
            pruneCheckpoints(q)
        }

        // Ended shims and failed starts: decide what happened (no database yet).
        var plan: [(t: Tracked, ended: EndedAttempt)] = []
        for t in tracked.values.sorted(by: { $0.id < $1.id }) {
            t.needsTick = false
            if let failure = t.spawnFailure {
                plan.append((t, EndedAttempt(settlement: .revert(reason: failure))))
                continue
            }
            if !t.exited, let fd = t.pidfd, fd.hasExited {
                t.waitStatus = fd.reapIfChild()
                t.exited = true
            }
            guard t.exited else { continue }
            plan.append((t, judge(id: t.id, attempt: t.attempt, shim: t.shim, waitStatus: t.waitStatus ?? 0)))
        }

        // Changes by other processes: new missions, cancels.
        let version = try q.dataVersion()
        if version != lastDataVersion {
            for m in try q.running() {
                if let t = tracked[m.id], t.attempt == m.attempts { t.cancelRequested = m.cancelRequested }
            }
            lastDataVersion = version
            claimNeeded = true
        }

        if let r = nextRetryWall, Clock.wall().timeIntervalSince1970 >= r { claimNeeded = true }

        // One transaction: settle, record identities left from an earlier failure, claim.
        let unrecorded = tracked.values.filter { !$0.identityRecorded && $0.shim != nil && !$0.exited }
        let free = maxParallel - (tracked.count - plan.count)
        let claimLimit = (claimNeeded || !plan.isEmpty) && free > 0 ? free : 0
        if !plan.isEmpty || !unrecorded.isEmpty || claimLimit > 0 {
            let (outcomes, claimed) = try q.settleAndClaim(
                plan.map { ($0.t.id, $0.t.attempt, $0.ended.settlement) },
                recordShims: unrecorded.map { ($0.id, $0.attempt, $0.shim!) },
                claimLimit: claimLimit)
            for t in unrecorded { t.identityRecorded = true }
            reportKeyEvents(q)
            if claimLimit > 0 {
                claimNeeded = false
                // The next moment a claim may find more: a retry due, a paused key's trial.
                nextRetryWall = [try? q.nextRetry(), try? q.nextBreakerTrial()].compactMap { $0 }.min()
            }
            var summary = MissionRecoverySummary() // counted for recovery only
            for (item, outcome) in zip(plan, outcomes) {
                tracked[item.t.id] = nil
                record(id: item.t.id, attempt: item.t.attempt, item.ended, outcome, summary: &summary)
            }
            for m in claimed { start(m) }
            let fresh = claimed.compactMap { tracked[$0.id] }.filter { $0.shim != nil && !$0.identityRecorded }
            if !fresh.isEmpty {
                try q.recordShims(fresh.map { ($0.id, $0.attempt, $0.shim!) })
                for t in fresh { t.identityRecorded = true }
            }
        }
        tendWorkspaces(q, now: now)

        processCancels(now: now)
    }

    /// Cancels: SIGTERM to the mission's groups, SIGKILL after the grace (again every grace
    /// while the shim lives, for a child that appeared late). Needs no database, so it runs
    /// before the tick's first database call too: a locked database cannot stall a cancel.
    func processCancels(now: BootInstant) {
        for t in tracked.values where t.cancelRequested && !t.exited {
            guard let shim = t.shim else { continue }
            let teardown = MissionRunner.cancelTeardown(grace: termGrace)
            let taken = t.killSentAt != nil ? 2 : t.termSentAt != nil ? 1 : 0
            guard let step = teardown.due(taken: taken, lastAt: t.killSentAt ?? t.termSentAt, now: now) else { continue }
            let signal = teardown.steps[step].signals[0]
            let n = MissionRunner.signalMission(t.id, shim: shim.identity, signal, stateDir: stateDir, letDaemonsGo: t.letDaemonsGo)
            if step == 0 {
                t.termSentAt = now
                journal.append(.missionCancel, ["mission": .int(t.id), "signal": .string(signal.description), "groups": .int(Int64(n)),
                                                  "grace_ms": .int(Int64(termGrace.milliseconds))])
            } else {
                if t.killSentAt == nil || n > 0 {
                    journal.append(.missionCancel, ["mission": .int(t.id), "signal": .string(signal.description), "groups": .int(Int64(n))])
                }
                t.killSentAt = now
            }
        }
        processLimits(now: now)
    }

    /// `--timeout` and `--silence-limit` (docs/missions.md, "Timeouts and silence"): the cause
    /// goes into the row first (so the reason survives a runner restart), then SIGTERM to every
    /// process of the mission, SIGKILL after the grace and again every grace while it lives.
    func processLimits(now: BootInstant) {
        for t in tracked.values where !t.cancelRequested && !t.exited {
            guard let shim = t.shim, t.stopCause != nil || t.policy.timeout != nil || t.policy.silenceLimit != nil else { continue }
            if t.policy.silenceLimit != nil {
                let path = MissionPaths(stateDir: stateDir, id: t.id).output
                let mark = FileStatus.at(path).map { (Int64($0.size), $0.inode) }
                if let mark, let old = t.outputMark, old != mark { t.watch.lastOutputAt = now }
                t.outputMark = mark
            }
            let (w, action) = MissionLifecycle.watch(t.watch, cancelRequested: t.stopCause != nil, policy: t.policy, now: now)
            t.watch = w
            guard case .signal(let sig)? = action else { continue }
            if sig == MissionLifecycle.sigterm, t.stopCause == nil, let cause = w.stopping, cause != .cancel {
                let limit = (cause == .timeout ? t.policy.timeout : t.policy.silenceLimit) ?? .zero
                do {
                    try queue?.requestStop(id: t.id, attempt: t.attempt, cause: cause, limit: limit)
                } catch {
                    journal.append(.missionStopUnrecorded, ["mission": .int(t.id), "cause": .string(cause.rawValue), "error": .string("\(error)")])
                }
                t.stopCause = cause
                journal.append(cause == .timeout ? .missionTimeout : .missionSilent,
                               ["mission": .int(t.id), "attempt": .int(Int64(t.attempt)), "limit_ms": .int(Int64(limit.milliseconds)),
                                "grace_ms": .int(Int64(termGrace.milliseconds))])
            }
            let n = MissionRunner.signalMission(t.id, shim: shim.identity, Signal(rawValue: sig), stateDir: stateDir, letDaemonsGo: t.letDaemonsGo)
            if sig == MissionLifecycle.sigkill && n > 0 {
                journal.append(.missionStopKill, ["mission": .int(t.id), "signal": "SIGKILL", "processes": .int(Int64(n))])
            }
        }
    }

    /// Removes the checkpoints of missions that ended more than `CheckpointStore.retention` ago
    /// (each journaled `mission-checkpoints-removed`). Incremental: only missions that ended
    /// since the last prune's cutoff are looked at.
    func pruneCheckpoints(_ q: MissionQueue) {
        let cutoff = Clock.wall().timeIntervalSince1970 - CheckpointStore.retention.seconds
        guard cutoff > checkpointsPrunedUpTo, let ids = try? q.endedBetween(after: checkpointsPrunedUpTo, before: cutoff) else { return }
        for id in ids where CheckpointStore(stateDir: stateDir, mission: id).removeAll() {
            journal.append(.missionCheckpointsRemoved, ["mission": .int(id), "retention_s": .int(Int64(CheckpointStore.retention.seconds))])
        }
        checkpointsPrunedUpTo = cutoff
    }

    /// A cancel: SIGTERM, then SIGKILL after `grace` and again every `grace` while the shim
    /// lives (taken one step per tick through `Teardown.due`).
    static func cancelTeardown(grace: TimeSpan) -> Teardown {
        Teardown([.send([.terminate], allowedDuration: grace), .kill(allowedDuration: grace)])
    }

    /// Sends `signal` to every process of a running mission, each once: those in its cgroup
    /// when it has one (everything the command started is born there), else the process
    /// groups of its shim's session and the processes carrying its tag (started since its
    /// shim); with `letDaemonsGo`, only the groups of its session. Returns how many
    /// processes (cgroup) or groups and processes (otherwise) were signalled.
    static func signalMission(_ id: Int64, shim: ProcessIdentity, _ signal: Signal, stateDir: StateDirectory, letDaemonsGo: Bool) -> Int {
        // --let-daemons-go: only the session; what left it is the mission's to keep.
        if letDaemonsGo { return MissionProcesses.signalSession(of: shim, signal, sparingShim: true) }
        if let group = MissionCgroup.of(stateDir, mission: id), group.cgroup.isPopulated {
            return group.signal(signal)
        }
        return MissionProcesses.signalSession(of: shim, signal, sparingShim: true)
            + MissionProcesses.signalMembers(of: stateDir, mission: id, signal, outside: shim.pid, startedSince: shim.startTicks)
    }
}
