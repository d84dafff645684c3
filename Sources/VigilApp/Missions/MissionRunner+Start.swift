import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// Starting a claimed mission: its directory, its shim.
extension MissionRunner {
    /// Starts the shim of a claimed mission (after the claim committed).
    func start(_ m: Mission) {
        CrashPoint.hit("after-claim")
        let t = Tracked(id: m.id, attempt: m.attempts, shim: nil, identityRecorded: false)
        t.letDaemonsGo = m.letDaemonsGo
        t.policy = policy(of: m)
        tracked[m.id] = t
        let paths = MissionPaths(stateDir: stateDir, id: m.id)
        do {
            try claimDirectory(m, paths)
            // An older attempt's result goes; this attempt's stays (a shim of it ran already,
            // started by a runner that died before recording it): the new shim sees it and
            // runs nothing, and the result is recorded.
            if case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self),
               r.mission == m.id, r.attempt == m.attempts {
            } else {
                FileSystem.unlink(paths.result)
            }
            var options = Spawner.Options()
            options.newSession = true
            options.outputPath = paths.output
            options.workingDirectory = "/"
            let identity = try Spawner.spawn(MissionProcesses.shimArguments(executable: shimExecutable, stateDir: stateDir, mission: m, settings: settings), options)
            t.shim = MissionShim(identity: identity, bootID: Clock.bootID)
            if let fd = identity.openPidFD() {
                t.pidfd = fd
            } else {
                // Already ended (a zombie child of ours): nothing to poll; record it next tick.
                Spawner.reap(identity.pid)
                t.exited = true
                t.needsTick = true
            }
            journal.append(.missionStarted, ["mission": .int(m.id), "attempt": .int(Int64(m.attempts)),
                                               "shim_pid": .int(Int64(identity.pid))])
        } catch {
            t.spawnFailure = "cannot start its shim: \(error)"
            t.needsTick = true
            journal.append(.missionStartFailed, ["mission": .int(m.id), "error": .string("\(error)")])
        }
        CrashPoint.hit("after-spawn")
    }

    /// Makes `m`'s directory, or checks that the one there is its own (its `owner` record names
    /// this row): a directory another row of the same id left (a database restored from an
    /// older backup hands out the ids again) is moved to quarantine/ first, so the mission
    /// never appends to that output or takes that result for its own. Throws (the start fails
    /// and is retried) when such a directory cannot be moved.
    func claimDirectory(_ m: Mission, _ paths: MissionPaths) throws {
        var why: String? = nil
        switch StateFile.read(paths.owner, kind: MissionOwner.kind, as: MissionOwner.self) {
        case .ok(let o) where o.owns(m):
            return
        case .ok(let o):
            why = "it was made for another mission \(o.mission) (created \(Clock.iso(Date(timeIntervalSince1970: o.created)))), not for this one (created \(Clock.iso(m.createdAt))): the database was restored from an older backup?"
        case .corrupt(let c):
            why = "its owner record is corrupt (\(c))"
        case .absent:
            AtomicFile.sweepTemps(in: paths.directory) // a runner killed while writing `owner`
            if !((try? FileManager.default.contentsOfDirectory(atPath: paths.directory)) ?? []).isEmpty {
                why = "it holds files but no owner record (left before mission \(m.id) existed, or by an older Vigil)"
            }
        }
        if let why, !quarantineDirectory(m.id, why: why) {
            throw CommandError("its directory \(paths.directory) was left by another mission and could not be moved to \(stateDir.quarantine)")
        }
        try stateDir.makeDirectory(paths.directory) // never re-creates a removed state dir
        try StateFile.write(MissionOwner(m), kind: MissionOwner.kind, to: paths.owner)
    }

    /// Sets `missions/ID/` aside for good: moved into quarantine/ (as `mission-ID.…`; never
    /// deleted), or removed when empty (nothing in it to keep), and journals it
    /// (`mission-dir-unclaimed`: `why`, `action`, `moved_to`, and the `result` it holds, if
    /// valid, so the journal keeps how that mission ended). Returns whether it is out of the way.
    @discardableResult
    func quarantineDirectory(_ id: Int64, why: String) -> Bool {
        let paths = MissionPaths(stateDir: stateDir, id: id)
        var fields: [String: JSONValue] = ["mission": .int(id), "path": .string(paths.directory), "why": .string(why)]
        if case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self), r.mission == id {
            var result: [String: JSONValue] = ["attempt": .int(Int64(r.attempt)), "finished": .string(r.finished)]
            MissionRunner.addResult(r, to: &result)
            fields["result"] = .object(result)
        }
        var gone = true
        if FileSystem.removeDirectory(paths.directory) {
            fields["action"] = "removed (it was empty)"
            try? AtomicFile.fsyncDirectory(stateDir.missions)
        } else if let target = files.moveToQuarantine(paths.directory, name: "mission-\(id)") {
            fields["action"] = "quarantined"
            fields["moved_to"] = .string(target)
        } else {
            fields["action"] = "kept (it could not be moved to quarantine/)"
            gone = false
        }
        journal.append(.missionDirUnclaimed, fields)
        return gone
    }

    /// What a dead shim could not clean: its scratch directory and a half-written result.
    func cleanAfterDeadShim(_ id: Int64) {
        let paths = MissionPaths(stateDir: stateDir, id: id)
        try? FileManager.default.removeItem(atPath: paths.scratch)
        AtomicFile.sweepTemps(in: paths.directory)
    }
}
