import FoundationEssentials
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

    var heal = HealState()
    var savedHeal: HealState?
    /// The incident's chat message (saved with the heal state) and what the last save wrote.
    var incident: IncidentReport?
    var savedIncident: IncidentReport?
    /// Messages of this probe's notes, queued once the heal state (and the incident's lines)
    /// are saved: a runner killed in between repeats the step and the same keys.
    var pendingNotices: [ChatNotice] = []
    /// Bridges we spawned: reaped when they exit (never `waitpid(-1)`).
    var children: [PidFD] = []
    /// A bridge we spawned that has not written its PID file yet.
    var starting: ProcessIdentity?
    /// pidfd of the bridge the PID file names, polled so its death wakes us at once.
    var watched: PidFD?
    var lastVerdict: Verdict?
    var lastVersionProblem: String?
    var lastHealWriteProblem: BootInstant?
    /// CPU time of recent quiet probes (no action taken), for the probe-cost figure.
    var probeCosts: [TimeSpan] = []
    var lastRecord: ProcessRecord?
    /// `bridge.json`, decoded again only when it changed.
    let records: RecordCache
    /// `bridge.beat`'s path, read on every probe.
    let bridgeBeat: String
    var lastBridgeToken: (ProcessIdentity, String)?
    /// The program on disk, looked at every loop turn (exit 42 when it is not the running one).
    var ownProgram = Executable.IdentityCache()
    var lastRecordWrite = BootInstant.zero
    /// Identities confirmed (or refuted) to be a bridge of this state dir, by /proc cmdline.
    var confirmed: [ProcessIdentity: Bool] = [:]
    /// The bridge a probe found in our state directory (read before a loop turn's check of the
    /// directory passed): the one bridge besides our own children that a runner whose state
    /// directory is lost may stop.
    var trustedBridge: ProcessIdentity?

    /// The environment variable in which scripts/vigil-run names itself (`PID:START_TICKS`) to
    /// the runner it starts; removed at once, so bridges and missions do not inherit it.
    static let wrapperVariable = "VIGIL_WRAPPER"
    /// The wrapper that relaunches us after exit 42; nil when we were started some other way
    /// (by hand, by another supervisor): then exit 42 is that starter's business, as always.
    let wrapper: ProcessIdentity?
    var wrapperGone = false
    /// Restarts (exit 42) not made because the wrapper is gone, each journaled once.
    var restartsHeld: Set<String> = []
    /// systemd's notifications (READY, WATCHDOG, STATUS, STOPPING) when `NOTIFY_SOCKET` is set.
    var systemd: RunnerSystemd?

    init(invocation: Invocation, config: Configuration, clearStop: Bool) throws {
        self.config = config
        self.clearStop = clearStop
        wrapper = ProcessInfo.processInfo.environment[Runner.wrapperVariable].flatMap { ProcessIdentity(token: $0) }
        ThisProcess.setEnvironment(Runner.wrapperVariable, nil)
        var invalidSocket: String?
        let notifyRequest = RunnerSystemd.Request.take(invalid: &invalidSocket)
        let dir = invocation.stateDir
        records = RecordCache(dir, .bridge)
        bridgeBeat = dir.beatFile(.bridge)
        lock = try takeSingletonLock(.runner, dir: dir, attempts: 10, hint: "use `vigil restart runner` or `vigil stop`")
        versions = VersionSource(tunables: config.tunables, scratchDir: dir.path)
        runningVersion = Executable.runningIdentity
        let context = try ProcessContext(role: .runner, dir: dir, version: runningVersion, journalRotation: config.tunables.journalRotation)
        ctx = context
        rollback = Rollback(ctx: context, stableAfter: config.tunables.policy.stableAfter)
        context.record.wrapper = wrapper
        context.record.staleAfter = config.tunables.staleAfter
        context.record.tick = config.tunables.tick
        systemd = notifyRequest.map { RunnerSystemd($0, journal: context.journal) }
        if let invalidSocket {
            context.journal.append(.systemdNotifyFailed, ["socket": .string(invalidSocket), "error": "NOTIFY_SOCKET is neither an absolute path nor @name: nothing is sent"])
        }
        if case .file(let f) = versions.kind { try? ctx.inotify.watch(directory: Path.parent(f)) }
        try? ctx.inotify.watch(directory: Path.parent(Executable.path))
    }

    /// Runs until stopped (returns 0) or until a restart is due (returns 42).
    func run() throws -> Int32 {
        let t = config.tunables
        FaultInjection.runnerStarting(ctx.dir, journal: ctx.journal)
        if clearStop { try? AtomicFile.remove(ctx.dir.stopMarker) }
        loadHealState()
        ctx.beat()
        ctx.journal.append(.runnerStarted, [
            "pid": .int(Int64(ThisProcess.pid)), "version": .string(runningVersion), "tier": .int(Int64(heal.displayTier)),
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
        var codePages = CodePages.Schedule()
        var lastProbe: BootInstant? = nil
        while true {
            // Before anything reads or writes: is the state directory still ours?
            if let loss = ctx.anchor.check() { return abandon(loss) }
            codePages.releaseIfDue(now: Clock.boot())
            if let id = lastRecord?.identity { trustedBridge = id }
            var now = Clock.boot()
            let events = ctx.drainChanges().filter { Runner.isRelevant($0.name) }
            // At least one probe a tick. While the bridge is healthy and no incident is open, the
            // tick's own is left out when one ran within the last tick (for the bridge's
            // heartbeat, which wakes us once a beat): an idle pair probed twice a second
            // (docs/architecture.md, "Wake-ups"). During an incident every tick probes.
            let quiet = lastVerdict == .healthy && !heal.incidentOpen && starting == nil && lastProbe.map { now - $0 < t.tick } ?? false
            var probeDue = (now >= nextTick && !quiet) || !events.isEmpty
                || (watched?.hasExited ?? false) || verdictDue.map { now >= $0 } ?? false

            for sig in ctx.signals.drainSignals() where sig == .terminate || sig == .interrupt || sig == .hangup {
                stopPair(reason: "signal \(sig.rawValue)")
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
            if let onDisk = ownProgram.identity(Executable.path), onDisk != runningVersion,
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
                lastProbe = now
                let acted = probeAndHeal(now: now)
                hooks?.observe(verdict: lastVerdict, circuit: heal.circuit)
                if !acted {
                    if probeCosts.count >= 64 { probeCosts.removeFirst() }
                    probeCosts.append(Clock.threadCPU() - cpu0)
                } else {
                    // What a heal step ran is not what idle runs ("Memory" in docs/architecture.md).
                    CodePages.noteWork(now)
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
            systemd?.turn(now: now, verdict: lastVerdict, heal: heal, missionsRunning: hooks?.missions?.running)

            now = Clock.boot()
            verdictDue = nextDeadline(now: now)
            hooksDue = hooks?.nextDeadline
            let wake = min(nextTick, verdictDue ?? nextTick, hooksDue ?? nextTick, systemd?.nextDeadline ?? nextTick)
            var fds = [ctx.signals.readFD]
            if let w = watched { fds.append(w.fd) }
            fds += children.map(\.fd)
            fds += hooks?.wakeDescriptors ?? []
            ctx.waitForTurn(fds, until: wake, relevant: Runner.isRelevant)
        }
    }

    /// How old the runner's own heartbeat may get before `vigil probe --liveness` and
    /// `vigil_runner_up` call it stale: it beats once a tick, and a tick may run long while it
    /// acts (spawns, journal fsyncs, mission starts), so the bound is the same `stale-after` the
    /// runner grants the bridge, and never less than 3 ticks (docs/operator-guide.md, "Probes
    /// and metrics").
    static func ownStaleAfter(staleAfter: TimeSpan, tick: TimeSpan) -> TimeSpan { max(staleAfter, tick * 3) }

    /// State-directory names whose change should wake a probe (not our own heartbeat, temp
    /// files, the journal or the database).
    static func isRelevant(_ name: String) -> Bool {
        !(name.hasPrefix(".") || name == "runner.json" || name == "runner.beat" || name == "metrics.json" || name.hasPrefix("journal") || name.hasPrefix("vigil.db")
          || name.hasSuffix(".log"))
    }
}
