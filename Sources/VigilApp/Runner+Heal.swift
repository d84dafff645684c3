import FoundationEssentials
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
        var record = records.load(ctx.files)
        record?.foldIn(ctx.files.heartbeat(at: bridgeBeat, quiet: false))
        lastRecord = record
        if let s = starting, record?.identity == s { starting = nil }
        let current = versions.current(now: now)
        if versions.problem != lastVersionProblem {
            lastVersionProblem = versions.problem
            if let p = versions.problem { ctx.journal.append(.versionUnknown, ["detail": .string(p)]) }
        }
        let probe = Probe.run(record: record, starting: starting, currentVersion: current,
                              limits: ProbeLimits(staleAfter: t.staleAfter, rssLimit: t.rssLimit), now: now,
                              isBridge: isBridge)
        watch(probe.identity, alive: probe.verdict.processAlive)
        lastVerdict = probe.verdict

        // No heal while a stop is asked for, and none from what a directory that is not ours
        // says (the loop stops at its next turn). A live bridge's step is decided first: when it
        // does nothing and nothing is left to write, neither check can change what happens, and
        // the loop made both at the top of this turn.
        func mayHeal() -> Bool { ctx.stopRequested() == nil && ctx.anchor.check() == nil }
        let alive = probe.verdict.processAlive
        if !alive && !mayHeal() { return false }
        let lockFree = alive ? false : FileLock.isFree(ctx.dir.lock(.bridge))
        // The machine is told which process it saw, so that a beat of the bridge tier 2 asked
        // to exit (on its way out) is no recovery.
        let obs = HealObservation(verdict: probe.verdict, lockFree: lockFree, bridge: alive ? probe.identity.map(bridgeToken) : nil)
        let step = HealMachine.step(obs, state: heal, now: now, policy: t.policy)
        if alive {
            let idle = step.action == .none && step.notes.isEmpty && step.state == heal && heal == savedHeal
                && incident == savedIncident && pendingNotices.isEmpty
            if idle { return false }
            if !mayHeal() { return false }
        }
        heal = step.state
        // Write-ahead for the signalling tiers: the decision is in heal.json before the signal
        // goes out and before the journal says so, so a runner killed in between is continued
        // by the next one, never repeated (docs/architecture.md, crash points). A spawn is not
        // saved first: it must not wait for an fsync (kill → first beat), and the bridge lock
        // already keeps a second one from running.
        if step.action == .restartMarker || step.action == .terminate || step.action == .kill { saveHealState(now: now) }
        let done = perform(step.action, probe: probe)
        for note in step.notes { report(note, probe: probe, done: done, now: now) }
        saveHealState(now: now)
        flushNotices()
        return step.action != .none || !step.notes.isEmpty
    }

    /// What performing a heal action did, as the journal and chat are told it: only what was
    /// actually done (a signal that could not be sent is reported as not sent).
    struct Performed {
        /// The bridge a start or respawn spawned.
        var spawned: ProcessIdentity?
        /// Why the action was not done (nil: done, or nothing to do).
        var failure: String?
    }

    /// Carries out one action of the heal machine and says what happened.
    func perform(_ action: HealAction, probe: Probe) -> Performed {
        var done = Performed()
        switch action {
        case .none: break
        case .restartMarker:
            do { try ctx.files.writeMarker(ctx.dir.restartMarker(.bridge), by: "runner \(ThisProcess.pid)", reason: probe.verdict.rawValue) } catch {
                done.failure = "cannot write the restart marker: \(error)"
            }
        case .terminate:
            done.failure = signalBridge(probe.identity, .terminate, .terminate)
        case .kill:
            done.failure = signalBridge(probe.identity, .killNow, .kill)
        case .start, .respawn:
            do { done.spawned = try spawnBridge() } catch { done.failure = "\(error)" }
        }
        return done
    }

    /// Takes `teardown` on the bridge `id` (SIGCONT first: a stopped process cannot act on
    /// SIGTERM). Nil when the kernel accepted `signal`; otherwise why it was not sent, so the
    /// journal and the chat say what was done, not what was meant.
    func signalBridge(_ id: ProcessIdentity?, _ teardown: Teardown, _ signal: Signal) -> String? {
        guard let id else { return "no bridge process to signal: \(signal) not sent" }
        guard let report = id.perform(teardown) else { return "the bridge (pid \(id.pid)) was gone before the signal: \(signal) not sent" }
        return report.sent.contains(signal) ? nil : "the bridge (pid \(id.pid)) exited before the signal: \(signal) not sent"
    }

    /// `id.token`, made once per bridge (the observation carries it on every probe).
    func bridgeToken(_ id: ProcessIdentity) -> String {
        if let (known, token) = lastBridgeToken, known == id { return token }
        let token = id.token
        lastBridgeToken = (id, token)
        return token
    }

    func isBridge(_ id: ProcessIdentity) -> Bool {
        if let known = confirmed[id] { return known }
        let yes = runsVigil(id, role: .bridge, dir: ctx.dir)
        if confirmed.count > 64 { confirmed.removeAll() }
        confirmed[id] = yes
        if !yes {
            ctx.journal.append(.foreignProcess, ["pid": .int(Int64(id.pid)), "detail": "bridge.json names a live process that is not a Vigil bridge of this state dir; treated as dead, never signalled"])
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
        guard let identity, alive else {
            // No PID file, but the bridge we watched is still exiting (it removes its PID file
            // before it lets go of its lock: tier 2's SIGTERM, `vigil stop`): keep its pidfd, so
            // its exit, which frees the lock for the respawn, wakes the loop at once instead of
            // at the next tick (docs/architecture.md, "Wake-ups").
            if identity == nil, let w = watched, !w.hasExited { return }
            watched = nil
            return
        }
        if watched?.identity != identity { watched = identity.openPidFD() }
    }

    func reapChildren() {
        children.removeAll { pidfd in
            guard pidfd.hasExited else { return false }
            pidfd.reapIfChild()
            return true
        }
    }

    /// The earliest instant (from `now` on) at which a probe could judge differently or the heal
    /// machine could take its next step, besides the tick (docs/architecture.md, "Wake-ups"):
    /// the loop sleeps until then and probes when it is reached. The machine's own deadlines
    /// come from `HealMachine.nextDeadline` (every window it applies); the runner adds the one
    /// of the probe: the last beat it saw + stale-after (a beating bridge turns hung exactly then).
    func nextDeadline(now: BootInstant) -> BootInstant? {
        var d: [BootInstant] = []
        if let machine = HealMachine.nextDeadline(heal, policy: config.tunables.policy, now: now), machine > now { d.append(machine) }
        if let r = lastRecord, let v = lastVerdict, v.processAlive, v != .hung {
            // Already passed when the turn that probed ran long (a notice waiting on a database
            // a stopped bridge holds locked): probe again at once. That probe says hung (a beat
            // that old is stale for `classify`) or sees a newer beat, so this cannot repeat; left
            // out, the hang waited for the next tick.
            d.append(max(r.beat + config.tunables.staleAfter, now))
        }
        return d.min()
    }
}
