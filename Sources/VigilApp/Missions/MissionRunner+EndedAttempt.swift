import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The one path that records an ended attempt, for the tick and for recovery.
extension MissionRunner {
    /// How an attempt ended, as `judge` read it from its files.
    struct EndedAttempt {
        var settlement: MissionQueue.Settlement
        /// The result file was corrupt: why (it is quarantined after the commit).
        var corrupt: String?
    }

    /// What ended attempt `attempt` of mission `id`: the one place that decides it, for the
    /// tick (its shim exited: `waitStatus` is set, 0 when it could not be reaped) and for
    /// start-up recovery (its shim is gone: nil). A result, a corrupt result, a shim that
    /// found another shim of the mission running (`ShimMain.busyExit`: the claim is taken back),
    /// or a shim that died without a result. For that last one, what the attempt left is
    /// killed here, before the commit can let the mission or its key be claimed again.
    func judge(id: Int64, attempt: Int, shim: MissionShim?, waitStatus: Int32?) -> EndedAttempt {
        let paths = MissionPaths(stateDir: stateDir, id: id)
        switch StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self) {
        case .ok(let r) where r.mission == id && r.attempt == attempt:
            return EndedAttempt(settlement: .finished(r))
        case .corrupt(let why):
            return EndedAttempt(settlement: .resultCorrupt(why: why), corrupt: why)
        case .ok, .absent:
            break
        }
        if let status = waitStatus, exitCode(fromWaitStatus: status) == ShimMain.busyExit {
            // Another shim of this mission (left by a runner that died before recording it)
            // holds the run lock: the mission is claimed again once that one has finished
            // and its result is found.
            return EndedAttempt(settlement: .revert(reason: "another shim of this mission was still running"))
        }
        if let status = waitStatus, exitCode(fromWaitStatus: status) == ShimMain.slotBusyExit {
            // Its workspace slot was in use (a worker, or a shim a killed runner never
            // recorded): nothing ran; it is claimed again when a slot is free.
            return EndedAttempt(settlement: .revert(reason: "its workspace slot was still in use"))
        }
        // No result: nothing was let go, so all of the attempt goes (what started after its
        // shim). Only for a shim known to have died in this boot: a claim whose shim was never
        // recorded may have a live one that recovery could not see yet, whose mission must not
        // be killed (it holds the run lock; its result is found later); a shim of an earlier
        // boot left nothing running.
        if let shim, shim.bootID == Clock.bootID {
            MissionProcesses.killSession(of: shim.identity)
            MissionCgroup.of(stateDir, mission: id)?.kill(patience: .milliseconds(500))
            MissionProcesses.killMembers(of: stateDir, mission: id, patience: .milliseconds(500), startedSince: shim.identity.startTicks)
        }
        // May its command have started? We saw its shim run, or it was recorded, or an
        // unrecorded one (a lost spawn) got as far as making scratch/, which it does just
        // before spawning the command (and which is removed after every attempt). Only "no"
        // lets an at-most-once mission run again (docs/missions.md, "Lifecycle").
        let scratchLeft = FileManager.default.fileExists(atPath: paths.scratch)
        let reason: String
        if let shim {
            reason = "its shim (\(shim.identity)) ended without recording an exit status"
        } else if scratchLeft || waitStatus != nil {
            reason = "its shim (never recorded: the runner stopped in between) ended without recording an exit status"
        } else {
            reason = "it was claimed but its shim never started (the runner stopped in between)"
        }
        return EndedAttempt(settlement: .shimDied(reason: reason, countAttempt: shim != nil || scratchLeft || waitStatus != nil))
    }

    /// A result's exit status and what its shim did with the mission's processes outside its
    /// session (`outside_killed`, `outside_let_go`, `outside_left`, when not 0), for
    /// `mission-finished`.
    static func addResult(_ r: MissionResult, to fields: inout [String: JSONValue]) {
        fields["exit_code"] = .int(Int64(r.exitCode))
        if let s = r.signal { fields["signal"] = .int(Int64(s)) }
        if let n = r.outsideKilled { fields["outside_killed"] = .int(Int64(n)) }
        if let n = r.outsideLetGo { fields["outside_let_go"] = .int(Int64(n)) }
        if let n = r.outsideLeft { fields["outside_left"] = .int(Int64(n)) }
    }

    /// After the commit of an ended attempt (tick and recovery alike): quarantine a corrupt
    /// result, journal, tell chat, clean up after a dead shim, and count it in `summary`.
    func record(id: Int64, attempt: Int, _ ended: EndedAttempt, _ outcome: MissionQueue.SettleOutcome,
                        summary: inout MissionRecoverySummary) {
        let settlement = ended.settlement
        var fields: [String: JSONValue] = ["mission": .int(id), "attempt": .int(Int64(attempt))]
        if case .finished(let r) = settlement { MissionRunner.addResult(r, to: &fields) }
        switch outcome {
        case .stale:
            return
        case .reverted:
            if case .revert(let reason) = settlement { fields["reason"] = .string(reason) }
            journal.append(.missionStartReverted, fields)
            claimNeeded = true // try again (e.g. the executable was being replaced)
        case .retry(let at, let reason):
            fields["reason"] = .string(reason)
            fields["retry_at"] = .string(Clock.iso(Date(timeIntervalSince1970: at)))
            journal.append(.missionRetryScheduled, fields)
            nextRetryWall = min(nextRetryWall ?? at, at)
            summary.finalized += 1
            announceEnd(id, attempt, settlement, outcome)
        case .died(let death):
            guard case .shimDied(let reason, _) = settlement else { return }
            report(death, id: id, attempt: attempt, reason: reason, summary: &summary)
            cleanAfterDeadShim(id)
            announceEnd(id, attempt, settlement, outcome)
        case .ended(let state, let reason):
            if let why = ended.corrupt {
                // The database first: if we are killed between the two, the row is final and
                // the leftover file harms nobody.
                files.quarantine(MissionPaths(stateDir: stateDir, id: id).result, reason: "result of mission \(id) attempt \(attempt): \(why)")
                summary.failed += 1
            } else {
                summary.finalized += 1
            }
            fields["state"] = .string(state.rawValue)
            if let reason { fields["reason"] = .string(reason) }
            journal.append(ended.corrupt == nil ? .missionFinished : .missionFailed, fields)
            announceEnd(id, attempt, settlement, outcome)
        }
    }
}
