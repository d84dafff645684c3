import FoundationEssentials
// shape stays as it is while it moves to a target of its own; nothing else here calls it.
import VigilCore
import VigilStore
import VigilSystem

/// The bridge: long-running, talks to chat. Stamps identity, version and heartbeat into
/// `bridge.json` from its main loop; re-execs the program on disk when its restart marker is
/// newer than its start; exits cleanly on SIGTERM or `vigil stop`; watches the runner.
///
/// Nothing in the loop blocks for long: it waits in `poll` on inotify (markers), the signal
/// pipe and the chat service's descriptors, with a timeout up to the next heartbeat.
final class Bridge {
    let config: Configuration
    let ctx: ProcessContext
    let lock: FileLock
    let arguments: [String]
    var hooks: BridgeHooks?
    private var runnerDown = false
    private var nextRunnerCheck = BootInstant.zero

    init(invocation: Invocation, config: Configuration) throws {
        self.config = config
        let dir = invocation.stateDir
        lock = try takeSingletonLock(.bridge, dir: dir, attempts: 25, hint: "stop it first (`vigil stop`) or use another --state-dir")
        // Only a runner's spawn hands a stamp; a re-exec (drift) must run the command itself.
        let handed = ProcessInfo.processInfo.environment[VersionSource.handedStampVariable]
        ThisProcess.setEnvironment(VersionSource.handedStampVariable, nil)
        let version = VersionSource(tunables: config.tunables, scratchDir: dir.path).stamp(handed: handed)
        ctx = try ProcessContext(role: .bridge, dir: dir, version: version, journalRotation: config.tunables.journalRotation)
        arguments = invocation.fullArguments
    }

    func run() throws {
        let t = config.tunables
        let reexecFrom = ProcessInfo.processInfo.environment["VIGIL_REEXEC_FROM"]
        ThisProcess.setEnvironment("VIGIL_REEXEC_FROM", nil)
        var faults = FaultInjection.bridge(ctx.dir, journal: ctx.journal)
        faults?.beforeFirstBeat()
        ctx.beat()
        ctx.journal.append(reexecFrom == nil ? .bridgeStarted : .bridgeReexecDone, [
            "pid": .int(Int64(ThisProcess.pid)), "version": .string(ctx.record.version),
            "previous_version": reexecFrom.map { .string($0) } ?? .null,
        ])
        faults?.started()
        hooks = try BridgeHooks.make(bridge: self)

        var nextBeat = Clock.boot() + t.heartbeatInterval
        var codePages = CodePages.Schedule()
        while true {
            codePages.releaseIfDue(now: Clock.boot())
            // Before anything reads or writes: is the state directory still ours? (The runner
            // sees it too and does not heal us: it stops as well.)
            if let loss = ctx.anchor.check() {
                ctx.reportLostStateDirectory(loss, consequence: "the bridge exits \(StateDirectoryAnchor.lostExitCode), writing nothing more there (the runner stops too)")
                throw ExitCode(StateDirectoryAnchor.lostExitCode)
            }
            // A signal to stop before the beat: a bridge stopped (SIGSTOP) past its beat and
            // continued by the runner's tier 2 has SIGTERM pending, and must not beat on its way
            // out (the runner would see a fresh heartbeat of a process that is ending:
            // docs/architecture.md, "The escalation state machine").
            for sig in ctx.signals.drainSignals() where sig == .terminate || sig == .interrupt || sig == .hangup {
                if faults?.ignoresTerm == true && sig == .terminate { continue }
                stop(reason: "signal \(sig.rawValue)")
                return
            }
            var now = Clock.boot()
            if now >= nextBeat {
                ctx.beat(now: now)
                nextBeat = now + t.heartbeatInterval
            }
            let changed = ctx.drainChanges()
            faults?.turn(changed: changed, now: now)
            if let m = ctx.pendingRestartMarker() {
                try? AtomicFile.remove(ctx.dir.restartMarker(.bridge))
                ctx.journal.append(.bridgeReexec, ["reason": .string(m.reason), "by": .string(m.by), "version": .string(ctx.record.version)])
                hooks?.shutdown(deadline: Clock.boot() + .milliseconds(200))
                let target = Rollback.reexecTarget(ctx.dir) // the kept copy while a rollback is in effect
                let err = reexec(path: target.path, arguments: arguments, environment: target.environment.merging(["VIGIL_REEXEC_FROM": ctx.record.version, StateDirectoryAnchor.handedVariable: ctx.anchor.token]) { $1 })
                ctx.journal.append(.bridgeReexecFailed, ["error": .string("\(err)")])
            }
            if let m = ctx.stopRequested(), m.applies(toProcessStartedAt: ctx.started) {
                stop(reason: "vigil stop (\(m.by))")
                return
            }
            if now >= nextRunnerCheck {
                watchRunner(now: now)
                nextRunnerCheck = now + t.heartbeatInterval
            }
            hooks?.pump(now: now)

            now = Clock.boot()
            var wake = nextBeat
            if let w = hooks?.nextWake, w < wake { wake = w }
            var fds = [ctx.signals.readFD]
            fds += hooks?.wakeDescriptors ?? []
            ctx.waitForTurn(fds, until: wake, relevant: Bridge.isRelevant)
        }
    }

    /// State-directory names whose change should end the bridge's wait: its markers
    /// (`bridge.restart`, `stop`), the directory's own removal (no name), anything unknown; not
    /// the heartbeats and records of either process, temp files, the journal or the database
    /// (it beats, and looks at the runner, on its own schedule).
    static func isRelevant(_ name: String) -> Bool {
        !(name.hasPrefix(".") || name == "runner.json" || name == "runner.beat" || name == "bridge.json" || name == "bridge.beat"
          || name == "heal.json" || name == "metrics.json" || name.hasPrefix("journal") || name.hasPrefix("vigil.db") || name.hasSuffix(".log"))
    }

    private func stop(reason: String) {
        hooks?.shutdown(deadline: Clock.boot() + config.tunables.termGrace * 0.5)
        ctx.removeOwnPidFile()
        ctx.journal.append(.bridgeStopped, ["reason": .string(reason), "pid": .int(Int64(ThisProcess.pid))])
        lock.release()
    }

    /// The watchdog is itself watched: a runner that is missing, dead or not beating is
    /// journaled (and announced) once per incident.
    private func watchRunner(now: BootInstant) {
        let t = config.tunables
        let limit = max(t.staleAfter, t.tick * 3)
        var problem: String? = nil
        if let r = ctx.files.loadLiveRecord(.runner) {
            if r.identity.liveness() == .gone { problem = "dead (pid \(r.identity.pid))" }
            else if now - r.beat > limit { problem = "not beating for \(now - r.beat) (pid \(r.identity.pid))" }
        } else if ctx.stopRequested() == nil {
            problem = "not running"
        }
        // A runner that looks gone may be a state directory that is gone: then nothing is
        // told (the notice would open a database in whatever is at the path now); the loop
        // stops at its next turn.
        if problem != nil && ctx.anchor.check() != nil { return }
        if let problem, !runnerDown {
            runnerDown = true
            ctx.journal.append(.runnerDown, ["detail": .string(problem)])
            hooks?.notify(key: "runner-down-\(now.nanoseconds)", text: "Vigil: the runner is \(problem); missions and healing are paused until it is back.")
        } else if problem == nil && runnerDown {
            runnerDown = false
            ctx.journal.append(.runnerBack, [:])
            hooks?.notify(key: "runner-back-\(now.nanoseconds)", text: "Vigil: the runner is back.")
        }
    }

}

enum BridgeCommand {
    static let command = Command(
        name: "bridge",
        summary: "run the bridge (chat side) in the foreground",
        help: """
        usage: vigil bridge [--state-dir DIR] [TUNABLES]

        Runs the bridge in the foreground: heartbeats into bridge.json, re-execs itself when its
        restart marker appears, delivers the outbox to chat and turns chat commands into
        missions. Normally started (detached) by the runner's watchdog. Accepts the runner's
        tunables (see `vigil runner --help`); exits 3 when another bridge holds the state dir,
        4 when its state directory was removed or replaced under it.
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: Tunables.flagNames)
            guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0])") }
            let config = try Configuration.load(stateDir: inv.stateDir, arguments: args)
            CodePages.oneHeap()
            try Bridge(invocation: inv, config: config).run()
        })
}
