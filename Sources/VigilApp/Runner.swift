import Foundation
import Glibc
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// The runner: always fresh (the wrapper relaunches it after every exit). Every tick it writes
/// its heartbeat, probes the bridge, lets the pure `HealMachine` decide one action, performs
/// it, persists the heal state, journals and announces; and it runs missions.
///
/// It never sleeps through a tick: it waits in `poll` on the bridge's pidfd (a death wakes it
/// at once), inotify on the state directory (a new heartbeat, a marker), the signal pipe, and
/// a timeout at the next deadline (tick, heartbeat staleness, tier cooldown, start grace).
final class Runner {
    let config: Configuration
    let ctx: ProcessContext
    let lock: FileLock
    let versions: VersionSource
    let clearStop: Bool
    let runningVersion: String
    /// Keeps the last good program; runs rolled back (docs/operator-guide.md, "Rollback of a broken update").
    let rollback: Rollback
    var hooks: RunnerHooks?

    private(set) var heal = HealState()
    private var savedHeal: HealState?
    /// Bridges we spawned: reaped when they exit (never `waitpid(-1)`).
    private var children: [PidFD] = []
    /// A bridge we spawned that has not written its PID file yet.
    private var starting: ProcessIdentity?
    /// pidfd of the bridge the PID file names, polled so its death wakes us at once.
    private var watched: PidFD?
    private var lastVerdict: Verdict?
    private var lastVersionProblem: String?
    private var lastHealWriteProblem: BootInstant?
    /// CPU time of recent quiet probes (no action taken), for the probe-cost figure.
    private var probeCosts: [TimeSpan] = []
    private var lastRecord: ProcessRecord?
    private let records = RecordCache()
    private var lastRecordWrite = BootInstant.zero
    /// Identities confirmed (or refuted) to be a bridge of this state dir, by /proc cmdline.
    private var confirmed: [ProcessIdentity: Bool] = [:]
    /// The bridge a probe found in our state directory (read before a loop turn's check of the
    /// directory passed): the one bridge besides our own children that a runner whose state
    /// directory is lost may stop.
    private var trustedBridge: ProcessIdentity?

    /// The environment variable in which scripts/vigil-run names itself (`PID:START_TICKS`) to
    /// the runner it starts; removed at once, so bridges and missions do not inherit it.
    static let wrapperVariable = "VIGIL_WRAPPER"
    /// The wrapper that relaunches us after exit 42; nil when we were started some other way
    /// (by hand, by another supervisor): then exit 42 is that starter's business, as always.
    let wrapper: ProcessIdentity?
    private var wrapperGone = false
    /// Restarts (exit 42) not made because the wrapper is gone, each journaled once.
    private var restartsHeld: Set<String> = []

    init(invocation: Invocation, config: Configuration, clearStop: Bool) throws {
        self.config = config
        self.clearStop = clearStop
        wrapper = ProcessInfo.processInfo.environment[Runner.wrapperVariable].flatMap { ProcessIdentity(token: $0) }
        unsetenv(Runner.wrapperVariable)
        let dir = invocation.stateDir
        lock = try takeSingletonLock(.runner, dir: dir, attempts: 10, hint: "use `vigil restart runner` or `vigil stop`")
        versions = VersionSource(tunables: config.tunables, scratchDir: dir.path)
        runningVersion = Executable.runningIdentity
        let context = try ProcessContext(role: .runner, dir: dir, version: runningVersion, journalRotation: config.tunables.journalRotation)
        ctx = context
        rollback = Rollback(ctx: context, stableAfter: config.tunables.policy.stableAfter)
        context.record.wrapper = wrapper
        if case .file(let f) = versions.kind { try? ctx.inotify.watch(directory: (f as NSString).deletingLastPathComponent) }
        try? ctx.inotify.watch(directory: (Executable.path as NSString).deletingLastPathComponent)
    }

    /// Runs until stopped (returns 0) or until a restart is due (returns 42).
    func run() throws -> Int32 {
        let t = config.tunables
        if FaultInjection.runner(ctx.dir) == "exit-at-start" {
            ctx.journal.append("fault-injected", ["fault": "exit-at-start", "runtime": false])
            exit(1)
        }
        if clearStop { try? AtomicFile.remove(ctx.dir.stopMarker) }
        loadHealState()
        ctx.beat()
        ctx.journal.append("runner-started", [
            "pid": .int(Int64(getpid())), "version": .string(runningVersion), "tier": .int(Int64(heal.displayTier)),
            "circuit": .string(heal.circuit.rawValue),
        ])
        hooks = try RunnerHooks.make(runner: self)
        if let reason = rollback.begin(hooks: hooks), let code = restart(reason: reason, key: reason) { return code }

        var nextTick = Clock.boot()
        // The instants the last loop turn woke up for besides the tick (docs/architecture.md,
        // "Wake-ups"): reaching one is a reason to probe (or to run the hooks) in itself, so a
        // verdict that changes at a deadline is acted on then, not at the next tick.
        var verdictDue: BootInstant? = nil
        var hooksDue: BootInstant? = nil
        while true {
            // Before anything reads or writes: is the state directory still ours?
            if let loss = ctx.anchor.check() { return abandon(loss) }
            if let id = lastRecord?.identity { trustedBridge = id }
            var now = Clock.boot()
            let events = ctx.inotify.drain().filter { Runner.isRelevant($0.name) }
            var probeDue = now >= nextTick || !events.isEmpty || (watched?.hasExited ?? false)
                || verdictDue.map { now >= $0 } ?? false

            for sig in ctx.signals.drain() where sig == SIGTERM || sig == SIGINT || sig == SIGHUP {
                stopPair(reason: "signal \(sig)")
                return 0
            }
            if let m = ctx.stopRequested() {
                stopPair(reason: "vigil stop (\(m.by))")
                return 0
            }
            if let m = ctx.pendingRestartMarker() {
                try? AtomicFile.remove(ctx.dir.restartMarker(.runner))
                if let code = restart(reason: "restart marker (\(m.by): \(m.reason))", key: "marker-\(Clock.boot().nanoseconds)") { return code }
            }
            if let onDisk = Executable.fileIdentity(Executable.path), onDisk != runningVersion,
               let code = restart(reason: "own program on disk changed", key: "program-\(onDisk)") { return code }
            if let reason = rollback.restartReason(), let code = restart(reason: reason, key: reason) { return code }
            if let reset = ctx.files.loadMarker(ctx.dir.healReset) {
                try? AtomicFile.remove(ctx.dir.healReset)
                if reset.bootID == Clock.bootID { resetHeal(by: reset.by) }
                probeDue = true
            }
            reapChildren()

            if probeDue {
                let cpu0 = Clock.threadCPU()
                let acted = probeAndHeal(now: now)
                hooks?.observe(verdict: lastVerdict, circuit: heal.circuit)
                if !acted {
                    if probeCosts.count >= 64 { probeCosts.removeFirst() }
                    probeCosts.append(Clock.threadCPU() - cpu0)
                }
            }
            if now >= nextTick {
                let current = versions.current(now: now)
                if ctx.record.lastVerdict != lastVerdict || ctx.record.currentVersion != current || now - lastRecordWrite > .seconds(30) {
                    ctx.record.lastVerdict = lastVerdict
                    ctx.record.currentVersion = current
                    ctx.record.probeCPUMicros = probeCosts.isEmpty ? nil : probeCosts.sorted()[probeCosts.count / 2].seconds * 1e6
                    ctx.recordDirty = true
                    lastRecordWrite = now
                }
                ctx.beat(now: now)
                nextTick = now + t.tick
                _ = wrapperIsGone()
                hooks?.tick(now: now)
                rollback.tick(now: now, verdict: lastVerdict, bridge: lastRecord)
            } else if !events.isEmpty || hooksDue.map({ now >= $0 }) ?? false {
                hooks?.tick(now: now)
            }

            now = Clock.boot()
            verdictDue = nextDeadline(now: now)
            hooksDue = hooks?.nextDeadline
            let wake = min(nextTick, verdictDue ?? nextTick, hooksDue ?? nextTick)
            var fds = [ctx.inotify.fd, ctx.signals.readFD]
            if let w = watched { fds.append(w.fd) }
            fds += children.map(\.fd)
            fds += hooks?.wakeDescriptors ?? []
            _ = pollReadable(fds, timeoutMilliseconds: (wake - now).pollMilliseconds)
        }
    }

    /// State-directory names whose change should wake a probe (not our own heartbeat, temp
    /// files, the journal or the database).
    static func isRelevant(_ name: String) -> Bool {
        !(name.hasPrefix(".") || name == "runner.json" || name == "runner.beat" || name.hasPrefix("journal") || name.hasPrefix("vigil.db")
          || name.hasSuffix(".log"))
    }

    // MARK: - Probe and heal

    /// Probes, decides, acts. Returns true when anything was done or noted.
    @discardableResult
    private func probeAndHeal(now: BootInstant) -> Bool {
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
            do { try ctx.files.writeMarker(ctx.dir.restartMarker(.bridge), by: "runner \(getpid())", reason: probe.verdict.rawValue) } catch {
                failure = "cannot write the restart marker: \(error)"
            }
        case .terminate:
            if let pidfd = probe.identity?.openPidFD() {
                pidfd.signal(SIGCONT) // a stopped process cannot act on SIGTERM
                pidfd.signal(SIGTERM)
            }
        case .kill:
            if let pidfd = probe.identity?.openPidFD() {
                pidfd.signal(SIGCONT)
                pidfd.signal(SIGKILL)
            }
        case .start, .respawn:
            do { after = try spawnBridge() } catch { failure = "\(error)" }
        }
        for note in step.notes { report(note, probe: probe, after: after, failure: failure, now: now) }
        saveHealState(now: now)
        return step.action != .none || !step.notes.isEmpty
    }

    private func isBridge(_ id: ProcessIdentity) -> Bool {
        if let known = confirmed[id] { return known }
        let yes = runsVigil(id, role: .bridge, dir: ctx.dir)
        if confirmed.count > 64 { confirmed.removeAll() }
        confirmed[id] = yes
        if !yes {
            ctx.journal.append("foreign-process", ["pid": .int(Int64(id.pid)), "detail": "bridge.json names a live process that is not a Vigil bridge of this state dir; treated as dead, never signalled"])
        }
        return yes
    }

    private func spawnBridge() throws -> ProcessIdentity {
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

    private func watch(_ identity: ProcessIdentity?, alive: Bool) {
        guard let identity, alive else { watched = nil; return }
        if watched?.identity != identity { watched = identity.openPidFD() }
    }

    private func reapChildren() {
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
    private func nextDeadline(now: BootInstant) -> BootInstant? {
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

    // MARK: - Reporting

    private func report(_ note: HealNote, probe: Probe, after: ProcessIdentity?, failure: String?, now: BootInstant) {
        func idJSON(_ id: ProcessIdentity?) -> JSONValue {
            guard let id else { return .null }
            return ["pid": .int(Int64(id.pid)), "start_ticks": .int(Int64(id.startTicks))]
        }
        let incident: JSONValue = heal.incidentSince.map { .double(((now - $0).milliseconds * 10).rounded() / 10) } ?? .null
        let key = "heal-\(now.nanoseconds)"
        let pidText = probe.identity.map { "pid \($0.pid)" } ?? "no pid"
        let limit = config.tunables.circuitLimit
        switch note {
        case .starting:
            // The bridge journals its own `bridge-started`; the runner speaks only when it could
            // not start one.
            if let failure {
                ctx.journal.append("bridge-start-failed", ["error": .string(failure)])
                hooks?.notify(key: "\(key)-start-failed", text: "Vigil: could not start the bridge: \(failure).")
            }
        case .started(let since, let took):
            let version = probe.record?.version ?? versions.current(now: now) ?? runningVersion
            hooks?.notify(key: "vigil-started-\(since.nanoseconds)",
                          text: String(format: "Vigil started (version %@): the bridge (%@) is up after %.2f s.", version, pidText, took.seconds))
        case .acted(let tier, let verdict, let action):
            var fields: [String: JSONValue] = [
                "tier": .int(Int64(tier)), "verdict": .string(verdict.rawValue), "action": .string(action.rawValue),
                "bridge_before": idJSON(probe.identity), "bridge_after": idJSON(after), "incident_ms": incident,
                "circuit": .string(heal.circuit.rawValue), "failed_respawns": .int(Int64(heal.failedRespawns)),
            ]
            if let failure { fields["error"] = .string(failure) }
            ctx.journal.append("heal", fields)
            let what: String
            switch action {
            case .restartMarker: what = "asked it to restart itself (restart marker)"
            case .terminate: what = "sent SIGTERM"
            case .kill: what = "sent SIGKILL"
            case .start, .respawn: what = after.map { "started a new bridge (pid \($0.pid))" } ?? "could not start a new bridge: \(failure ?? "unknown error")"
            case .none: what = "waited"
            }
            hooks?.notify(key: "\(key)-t\(tier)", text: "Vigil: bridge \(verdict.rawValue) (\(pidText)); tier \(tier): \(what).")
        case .recovered(let down, let verdict, let tier, let since):
            let healthyAt = since + down
            ctx.journal.append("recovered", [
                "verdict": .string(verdict.rawValue), "tier": .int(Int64(tier)), "after_ms": .double((down.milliseconds * 10).rounded() / 10),
                "bridge": idJSON(probe.identity), "healthy_boot": .int(healthyAt.nanoseconds),
                "stable_ms": .double(((now - healthyAt).milliseconds * 10).rounded() / 10),
            ])
            let proven = now - healthyAt > .zero ? String(format: "; stable for %.1f s", (now - healthyAt).seconds) : ""
            hooks?.notify(key: "incident-\(since.nanoseconds)-recovered",
                          text: String(format: "Vigil: bridge healthy again after %.2f s (was %@, tier %d%@).", down.seconds, verdict.rawValue, tier, proven))
        case .respawnFailed(let count, let verdict):
            ctx.journal.append("respawn-failed", ["count": .int(Int64(count)), "verdict": .string(verdict.rawValue), "limit": .int(Int64(limit)),
                                                  "bridge": idJSON(probe.identity)])
            let next = count >= limit ? "the circuit opens" : "trying again"
            hooks?.notify(key: "\(key)-failed", text: "Vigil: the respawned bridge is \(verdict.rawValue) (\(pidText)): failed respawn \(count) of \(limit); \(next).")
        case .circuitOpened(let failures, let reason):
            var fields: [String: JSONValue] = [
                "tier": 4, "verdict": .string(probe.verdict.rawValue), "failures": .int(Int64(failures)),
                "retry_in_s": .double(config.tunables.circuitCooloff.seconds), "reason": .string(reason.rawValue),
            ]
            let text: String
            switch reason {
            case .failedRespawns:
                text = "Vigil ALERT: the bridge failed \(failures) respawns in a row; the watchdog stopped acting (circuit open). It retries once in \(config.tunables.circuitCooloff), or now with `vigil heal reset` (or /heal reset in this chat: the runner answers it while the bridge is down)."
            case .unkillable:
                let state = probe.identity.flatMap { ProcStat.read(pid: $0.pid) }.map { String($0.state) } ?? "?"
                fields["detail"] = "bridge stuck in uninterruptible sleep — needs a person"
                fields["process_state"] = .string(state)
                fields["bridge"] = idJSON(probe.identity)
                text = "Vigil ALERT: bridge stuck in uninterruptible sleep — needs a person: \(pidText) survived \(config.tunables.policy.unkillableAfter) SIGKILLs (process state \(state)). The watchdog stopped acting (circuit open); find what it waits on (`cat /proc/PID/stack`, a hung mount), then `vigil heal reset`."
            }
            ctx.journal.append("circuit-open", fields)
            hooks?.notify(key: "\(key)-circuit", text: text)
        case .circuitReminder(let openFor):
            ctx.journal.append("circuit-reminder", ["tier": 4, "verdict": .string(probe.verdict.rawValue), "open_s": .double(openFor.seconds),
                                                    "reason": heal.circuitReason.map { .string($0.rawValue) } ?? .null])
            hooks?.notify(key: "\(key)-reminder", text: "Vigil reminder: the circuit is still open (for \(openFor)); the bridge is \(probe.verdict.rawValue).")
        case .circuitHalfOpen:
            ctx.journal.append("circuit-half-open", ["tier": 4, "verdict": .string(probe.verdict.rawValue)])
        case .circuitClosed:
            ctx.journal.append("circuit-closed", [:])
            hooks?.notify(key: "\(key)-closed", text: "Vigil: circuit closed; the bridge has been stable.")
        }
    }

    private func resetHeal(by: String) {
        let was = heal
        heal = HealState()
        ctx.journal.append("heal-reset", ["by": .string(by), "tier_was": .int(Int64(was.displayTier)), "circuit_was": .string(was.circuit.rawValue)])
        hooks?.notify(key: "heal-reset-\(Clock.boot().nanoseconds)", text: "Vigil: heal state reset by \(by) (was tier \(was.displayTier), circuit \(was.circuit.rawValue)).")
    }

    // MARK: - Heal state persistence

    /// Loads heal.json and tells the machine a new runner took over: its first probe decides
    /// whether this is a start of the pair (docs/architecture.md, "A start is not an incident").
    private func loadHealState() {
        defer { heal = HealMachine.runnerStarted(heal, pairStart: clearStop, now: Clock.boot()) }
        guard let file = ctx.files.load(ctx.dir.healState, kind: HealFile.kind, as: HealFile.self) else { return }
        if file.bootID == Clock.bootID {
            heal = file.state
            savedHeal = heal
        } else {
            ctx.journal.append("heal-state-discarded", ["reason": "written before the last reboot"])
        }
    }

    /// Persists the heal state when it changed. A failed write is journaled (at a low rate) and
    /// the runner goes on from its memory: it never repeats a tier because it could not save.
    private func saveHealState(now: BootInstant) {
        guard heal != savedHeal else { return }
        do {
            try ctx.files.save(HealFile(bootID: Clock.bootID, state: heal), kind: HealFile.kind, to: ctx.dir.healState)
            savedHeal = heal
            if lastHealWriteProblem != nil {
                lastHealWriteProblem = nil
                ctx.journal.append("state-write-recovered", ["file": "heal.json"])
            }
        } catch {
            if lastHealWriteProblem.map({ now - $0 > .seconds(60) }) ?? true {
                lastHealWriteProblem = now
                ctx.journal.append("state-write-failed", ["file": "heal.json", "error": .string("\(error)")])
            }
        }
    }

    // MARK: - Exits

    /// Exits 42 for `reason` (the wrapper relaunches us at once), unless the wrapper that
    /// started us is gone: nobody would relaunch us, so we go on and say so, once per `key`
    /// (docs/operator-guide.md, "The wrapper gone"). Nil when we go on.
    private func restart(reason: String, key: String) -> Int32? {
        guard wrapperIsGone(), let w = wrapper else { return exitForRestart(reason: reason) }
        guard restartsHeld.insert(key).inserted else { return nil }
        ctx.journal.append("runner-restart-skipped", [
            "reason": .string(reason), "wrapper_pid": .int(Int64(w.pid)),
            "detail": "the wrapper is gone: nothing would relaunch the runner after exit 42, so it keeps running",
        ])
        printErr("vigil runner: not restarting for \(reason): the wrapper (scripts/vigil-run, pid \(w.pid)) that would relaunch this runner is gone, so it keeps running. Start the pair again to pick this up: `vigil stop`, then scripts/vigil-run.\n")
        hooks?.notify(key: "runner-restart-skipped-\(Clock.boot().nanoseconds)",
                      text: "Vigil: the runner did not restart for \(reason): its wrapper (vigil-run, pid \(w.pid)) is gone, so nothing would relaunch it. It keeps running; start the pair again (`vigil stop`, then vigil-run) to pick the change up.")
        return nil
    }

    /// True once the wrapper that started us is gone (checked every tick: one /proc read);
    /// journaled and told once. False when no wrapper started us.
    private func wrapperIsGone() -> Bool {
        guard let w = wrapper else { return false }
        if !wrapperGone && w.liveness() == .gone {
            wrapperGone = true
            ctx.journal.append("wrapper-gone", [
                "wrapper_pid": .int(Int64(w.pid)), "wrapper_start_ticks": .int(Int64(w.startTicks)),
                "detail": "scripts/vigil-run is gone (killed?): the runner keeps running, but restart markers and a new program wait until the pair is started again",
            ])
            printErr("vigil runner: the wrapper (scripts/vigil-run, pid \(w.pid)) is gone: this runner keeps watching the bridge and running missions, but nothing would relaunch it, so it will not exit for a restart marker or a new program. Start the pair again: `vigil stop`, then scripts/vigil-run.\n")
            hooks?.notify(key: "wrapper-gone-\(w.token)",
                          text: "Vigil: the wrapper (vigil-run, pid \(w.pid)) is gone. The runner keeps watching the bridge, but nothing would relaunch it: restart markers and updates wait until the pair is started again (`vigil stop`, then vigil-run).")
        }
        return wrapperGone
    }

    /// The state directory was removed or replaced under us (docs/operator-guide.md, "The
    /// state directory removed or replaced"): stop acting at once — nothing more is written
    /// through its path, nothing spawned, nothing signalled but our own bridge — say so, stop
    /// our bridge, and exit 4, after which the wrapper does not relaunch.
    private func abandon(_ loss: StateDirectoryAnchor.Loss) -> Int32 {
        let code = StateDirectoryAnchor.lostExitCode
        ctx.reportLostStateDirectory(loss, consequence: """
            stopping its bridge and exiting \(code), writing nothing more there; scripts/vigil-run does not relaunch it. \
            Put the directory back, or start the pair again on purpose (see docs/operator-guide.md, "The state directory \
            removed or replaced")
            """)
        var seen = Set<ProcessIdentity>()
        for id in [trustedBridge, starting].compactMap({ $0 }) + children.map(\.identity) where seen.insert(id).inserted {
            let ours = children.contains { $0.identity == id }
            guard ours || runsVigil(id, role: .bridge, dir: ctx.dir), let pidfd = id.openPidFD() else { continue }
            endBridge(pidfd)
        }
        reapChildren()
        versions.cancel()
        return code
    }

    /// SIGCONT+SIGTERM, SIGKILL after the term grace. True when it had to be killed.
    @discardableResult
    private func endBridge(_ pidfd: PidFD) -> Bool {
        pidfd.signal(SIGCONT)
        pidfd.signal(SIGTERM)
        if pidfd.waitForExit(timeoutMilliseconds: config.tunables.termGrace.pollMilliseconds) { return false }
        pidfd.signal(SIGKILL)
        _ = pidfd.waitForExit(timeoutMilliseconds: 2000)
        return true
    }

    private func exitForRestart(reason: String) -> Int32 {
        saveHealState(now: Clock.boot())
        ctx.journal.append("runner-restart", ["reason": .string(reason), "exit": 42])
        hooks?.shutdown()
        versions.cancel()
        ctx.removeOwnPidFile()
        return 42
    }

    /// Stops the bridge gracefully (SIGCONT+SIGTERM, SIGKILL after the grace), then ourselves.
    /// Missions keep running (their shims are detached); the next runner reattaches them.
    private func stopPair(reason: String) {
        ctx.journal.append("runner-stopping", ["reason": .string(reason)])
        if let r = ctx.files.loadRecord(.bridge), runsVigil(r.identity, role: .bridge, dir: ctx.dir), let pidfd = r.identity.openPidFD(),
           endBridge(pidfd) {
            ctx.journal.append("bridge-killed", ["reason": "did not exit within the term grace", "pid": .int(Int64(r.identity.pid))])
        }
        if let s = starting, let pidfd = s.openPidFD() {
            pidfd.signal(SIGKILL)
            _ = pidfd.waitForExit(timeoutMilliseconds: 2000)
        }
        reapChildren()
        // A stop is not an incident: whatever was under way is abandoned, never failed.
        heal = HealMachine.stopped(heal)
        saveHealState(now: Clock.boot())
        hooks?.shutdown()
        versions.cancel()
        ctx.removeOwnPidFile()
        ctx.journal.append("runner-stopped", ["reason": .string(reason)])
    }
}

extension StateFiles {
    /// The PID file without the corrupt-file policy (for computing deadlines; the probe
    /// quarantines).
    func loadRecordQuietly(_ role: StateDirectory.Role) -> ProcessRecord? {
        if case .ok(let r) = StateFile.read(dir.pidFile(role), kind: ProcessRecord.kind, as: ProcessRecord.self) { return r }
        return nil
    }
}

enum RunnerCommand {
    static let command = Command(
        name: "runner",
        summary: "run the runner (watchdog + missions); normally via scripts/vigil-run",
        help: """
        usage: vigil runner [--state-dir DIR] [TUNABLES] [--clear-stop]

        Runs the runner in the foreground: every tick it probes the bridge and heals it in
        escalating tiers, and it runs missions. Exits 42 when it should be relaunched (its
        restart marker, or its program on disk changed), 0 when stopped (`vigil stop`,
        SIGTERM, SIGINT), 4 when its state directory was removed or replaced under it (it
        stops the bridge first; the wrapper does not relaunch). Normally started by
        scripts/vigil-run, which relaunches it; a runner whose wrapper is gone does not exit 42
        (it journals runner-restart-skipped and goes on).

        Tunables (flags, or the same keys in DIR/vigil.json; durations as 0.2, 200ms, 2s, 5m):
          --tick D                runner loop period (probe cadence)            1s
          --heartbeat-interval D  bridge heartbeat period                       1s
          --stale-after D         heartbeat age that makes a live bridge hung   20s
          --cooldown D            time a tier gets to heal before the next      10s
          --term-grace D          SIGTERM → SIGKILL wait                        5s
          --start-grace D         time a respawned bridge gets to beat          10s
          --circuit-limit N       failed respawns in a row that open the circuit 3
          --circuit-cooloff D     open → half-open retry                        10m
          --stable-after D        healthy time that proves a respawn            3 × cooldown
          --circuit-reminder D    how often an open circuit is announced again  1h
          --rss-limit SIZE        RSS that makes the bridge bloated (512MB)     off
          --max-parallel N        missions run at once                          1
          --mission-output-cap SIZE output kept per mission (the newest bytes)  64MiB
          --journal-max-bytes SIZE journal size that rotates it (journal.jsonl.1…) 16MiB
          --journal-keep N        rotated journal files kept (1 to 20)          3
          "mission-env": [NAME…]  (vigil.json only) variables passed on to missions
          --version-file PATH     the version is this file's contents
          --version-command CMD   the version is this command's output (argv split on spaces)
          --clear-stop            forget an earlier `vigil stop` (the wrapper passes it once)
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: Tunables.flagNames, booleans: ["clear-stop"])
            guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0])") }
            let config = try Configuration.load(stateDir: inv.stateDir, arguments: args)
            do { _ = try ChatConfig.load(configFile: inv.stateDir.config) } catch {
                throw CommandError("\(error)", code: 2)
            }
            let code = try Runner(invocation: inv, config: config, clearStop: args.has("clear-stop")).run()
            if code != 0 { throw ExitCode(code) }
        })
}
