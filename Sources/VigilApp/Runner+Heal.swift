import Foundation
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// Probing the bridge, the heal machine's decision, and acting on it.
extension Runner {
    // MARK: - Probe and heal

    /// Probes, decides, acts. Returns true when anything was done or noted.
    @discardableResult
    func probeAndHeal(now: BootInstant) -> Bool {
        let t = config.tunables
        var record = records.load(ctx.files, .bridge)
        record?.foldIn(ctx.files.heartbeat(.bridge, quiet: false))
        lastRecord = record
        if let s = starting, record?.identity == s { starting = nil }
        let current = versions.current(now: now)
        if versions.problem != lastVersionProblem {
            lastVersionProblem = versions.problem
            if let p = versions.problem { ctx.journal.append("version-unknown", ["detail": .string(p)]) }
        }
        let probe = Probe.run(record: record, starting: starting, currentVersion: current,
                              limits: ProbeLimits(staleAfter: t.staleAfter, rssLimit: t.rssLimit), now: now,
                              isBridge: isBridge)
        watch(probe.identity, alive: probe.verdict.processAlive)
        lastVerdict = probe.verdict

        if ctx.stopRequested() != nil { return false }
        // No heal from what a directory that is not ours says (the loop stops at its next turn).
        if ctx.anchor.check() != nil { return false }
        let lockFree = probe.verdict.processAlive ? false : FileLock.isFree(ctx.dir.lock(.bridge))
        let step = HealMachine.step(HealObservation(verdict: probe.verdict, lockFree: lockFree), state: heal, now: now, policy: t.policy)
        heal = step.state
        // Write-ahead for the signalling tiers: the decision is in heal.json before the signal
        // goes out and before the journal says so, so a runner killed in between is continued
        // by the next one, never repeated (docs/architecture.md, crash points). A spawn is not
        // saved first: it must not wait for an fsync (kill → first beat), and the bridge lock
        // already keeps a second one from running.
        if step.action == .restartMarker || step.action == .terminate || step.action == .kill { saveHealState(now: now) }
        var after: ProcessIdentity? = nil
        var failure: String? = nil
        switch step.action {
        case .none: break
        case .restartMarker:
            do { try ctx.files.writeMarker(ctx.dir.restartMarker(.bridge), by: "runner \(ThisProcess.pid)", reason: probe.verdict.rawValue) } catch {
                failure = "cannot write the restart marker: \(error)"
            }
        case .terminate:
            failure = signalBridge(probe.identity, .terminate, .terminate)
        case .kill:
            failure = signalBridge(probe.identity, .killNow, .kill)
        case .start, .respawn:
            do { after = try spawnBridge() } catch { failure = "\(error)" }
        }
        for note in step.notes { report(note, probe: probe, after: after, failure: failure, now: now) }
        saveHealState(now: now)
        return step.action != .none || !step.notes.isEmpty
    }

    /// Takes `teardown` on the bridge `id` (SIGCONT first: a stopped process cannot act on
    /// SIGTERM). Nil when the kernel accepted `signal`; otherwise why it was not sent, so the
    /// journal and the chat say what was done, not what was meant.
    func signalBridge(_ id: ProcessIdentity?, _ teardown: Teardown, _ signal: Signal) -> String? {
        guard let id else { return "no bridge process to signal: \(signal) not sent" }
        guard let report = id.perform(teardown) else { return "the bridge (pid \(id.pid)) was gone before the signal: \(signal) not sent" }
        return report.sent.contains(signal) ? nil : "the bridge (pid \(id.pid)) exited before the signal: \(signal) not sent"
    }

    func isBridge(_ id: ProcessIdentity) -> Bool {
        if let known = confirmed[id] { return known }
        let yes = runsVigil(id, role: .bridge, dir: ctx.dir)
        if confirmed.count > 64 { confirmed.removeAll() }
        confirmed[id] = yes
        if !yes {
            ctx.journal.append("foreign-process", ["pid": .int(Int64(id.pid)), "detail": "bridge.json names a live process that is not a Vigil bridge of this state dir; treated as dead, never signalled"])
        }
        return yes
    }

    func spawnBridge() throws -> ProcessIdentity {
        if let loss = ctx.anchor.check() { throw CommandError("not starting a bridge: the state directory \(loss)") }
        var opts = Spawner.Options()
        opts.newSession = true
        opts.outputPath = ctx.dir.log(.bridge)
        // The bridge writes its identity and first beat before anything slow; a version
        // command's answer it gets from us (docs/architecture.md, "Bridge start").
        if let v = versions.stampForSpawn { opts.environment[VersionSource.handedStampVariable] = v }
        opts.environment[StateDirectoryAnchor.handedVariable] = ctx.anchor.token
        let argv = [Executable.path, "bridge", "--state-dir", ctx.dir.path] + config.tunables.flags
        let id = try Spawner.spawn(argv, opts)
        if let pidfd = id.openPidFD() { children.append(pidfd) }
        starting = id
        return id
    }

    func watch(_ identity: ProcessIdentity?, alive: Bool) {
        guard let identity, alive else { watched = nil; return }
        if watched?.identity != identity { watched = identity.openPidFD() }
    }

    func reapChildren() {
        children.removeAll { pidfd in
            guard pidfd.hasExited else { return false }
            pidfd.reapIfChild()
            return true
        }
    }

    /// The earliest instant after `now` at which a probe could judge differently or the heal
    /// machine could take its next step, besides the tick (docs/architecture.md, "Wake-ups"):
    /// the loop sleeps until then and probes when it is reached.
    ///
    /// - the last beat the probe saw + stale-after (a beating bridge turns hung exactly then);
    /// - the current tier's wait: tier 1's cooldown, tier 2's term grace, tier 3's kill cooldown
    ///   and a respawned bridge's start grace;
    /// - the stability window of a respawn not yet proven (failures reset, circuit closes);
    /// - an open circuit's cool-off (half-open) and its next reminder.
    func nextDeadline(now: BootInstant) -> BootInstant? {
        let p = config.tunables.policy
        var d: [BootInstant] = []
        if let r = lastRecord, let v = lastVerdict, v.processAlive, v != .hung {
            d.append(r.beat + config.tunables.staleAfter)
        }
        if let since = heal.tierSince {
            switch heal.tier {
            case 1: d.append(since + p.cooldown)
            case 2: d.append(since + p.termGrace)
            default: break
            }
        }
        if let r = heal.respawnedAt { d.append(r + p.startGrace) }
        // The start grace of a cold start and the end of a respawn's (or circuit's) probation.
        if let pending = heal.pendingDeadline(policy: p) { d.append(pending) }
        if let k = heal.killedAt { d.append(k + p.cooldown) }
        if heal.circuit == .open, let o = heal.circuitOpenedAt {
            d.append(o + p.circuitCooloff)
            d.append((heal.lastReminderAt ?? o) + p.reminderEvery)
        }
        return d.filter { $0 > now }.min()
    }
}
