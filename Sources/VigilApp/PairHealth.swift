import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The pair as its small files tell it, read-only: the bridge's and the runner's PID files with
/// their heartbeats folded in, the bridge's verdict (`Probe.run`, classified by
/// `VigilCore.classify`), whether the runner runs and beats, and the heal state. No database,
/// no journal, nothing written or quarantined. What `vigil status`, `vigil probe` and the
/// metrics share (docs/operator-guide.md, "Probes and metrics").
struct PairHealth {
    var now: BootInstant
    var tunables: Tunables
    var bridge: ProcessRecord?
    var bridgeProblem: String?
    var runner: ProcessRecord?
    var runnerProblem: String?
    /// The runner's identity runs (this boot).
    var runnerAlive: Bool
    var probe: Probe
    var currentVersion: String?
    var heal: HealState
    var healProblem: String?

    /// - Parameter versionWhenRunnerDown: with no runner, find the program's version on disk
    ///   (`VersionSource`: may run the version command) to judge drift; `vigil probe` passes
    ///   false and judges no drift then (it is not ready anyway without a runner).
    static func read(_ dir: StateDirectory, tunables t: Tunables, versionWhenRunnerDown: Bool) -> PairHealth {
        let now = Clock.boot()
        let (bridge, bridgeProblem) = StateFiles.readLiveRecordQuietly(dir, .bridge)
        let (runner, runnerProblem) = StateFiles.readLiveRecordQuietly(dir, .runner)
        let (healFile, healProblem) = StatusCommand.readQuietly(dir.healState, kind: HealFile.kind, HealFile.self)
        let runnerAlive = runner.map { $0.identity.liveness() == .alive && $0.bootID == Clock.bootID } ?? false
        let current = runnerAlive ? runner?.currentVersion : versionWhenRunnerDown ? VersionSource(tunables: t).current() : nil
        // The bridge is judged with the running runner's own stale limit (its flags may differ
        // from vigil.json).
        let staleAfter = runnerAlive ? runner?.staleAfter ?? t.staleAfter : t.staleAfter
        let probe = Probe.run(record: bridge, starting: nil, currentVersion: current,
                              limits: ProbeLimits(staleAfter: staleAfter, rssLimit: t.rssLimit), now: now,
                              isBridge: { runsVigil($0, role: .bridge, dir: dir) })
        let heal = healFile.flatMap { $0.bootID == Clock.bootID ? $0.state : nil } ?? HealState()
        return PairHealth(now: now, tunables: t, bridge: bridge, bridgeProblem: bridgeProblem, runner: runner, runnerProblem: runnerProblem,
                          runnerAlive: runnerAlive, probe: probe, currentVersion: current, heal: heal, healProblem: healProblem)
    }

    /// How old the runner's heartbeat may be (`Runner.ownStaleAfter`), from the tunables the
    /// runner wrote in its record, else from the configured ones.
    var runnerStaleAfter: TimeSpan {
        Runner.ownStaleAfter(staleAfter: runner?.staleAfter ?? tunables.staleAfter, tick: runner?.tick ?? tunables.tick)
    }

    var runnerBeatAge: TimeSpan? { runner.map { now - $0.beat } }

    /// The runner runs and its heartbeat is fresh.
    var runnerBeating: Bool { runnerAlive && (runnerBeatAge.map { $0 < runnerStaleAfter } ?? false) }

    /// The bridge runs and beats (healthy, or drifted/bloated: alive and serving until the runner
    /// restarts it): what `vigil probe` calls ready and `vigil_bridge_up` counts as up.
    var bridgeUp: Bool { StandbyNeed.bridgeDelivers(probe.verdict) }

    struct Answer: Equatable {
        var ok: Bool
        var reason: String
    }

    private func seconds(_ s: TimeSpan) -> String { DecimalText.fixed(s.seconds, places: 1) + " s" }

    /// Why the runner is not beating, or nil when it is.
    private var runnerTrouble: String? {
        guard let runner else { return runnerProblem.map { "runner.json is corrupt (\($0))" } ?? "no runner (runner.json absent)" }
        guard runnerAlive else { return "runner pid \(runner.identity.pid) is not running" }
        guard runnerBeating else {
            return "runner pid \(runner.identity.pid) not beating (heartbeat \(runnerBeatAge.map(seconds) ?? "?") old, limit \(seconds(runnerStaleAfter)))"
        }
        return nil
    }

    /// Readiness: the bridge is up and the runner beats.
    var readiness: Answer {
        if let trouble = runnerTrouble { return Answer(ok: false, reason: "not ready: \(trouble)") }
        let runnerPid = runner.map { "\($0.identity.pid)" } ?? "?"
        let verdict = probe.verdict.rawValue
        guard bridgeUp else {
            var what = "bridge \(verdict)"
            if let b = bridge {
                what += " (pid \(b.identity.pid)"
                if probe.verdict == .hung { what += ", heartbeat \(seconds(now - b.beat)) old" }
                what += ")"
            } else if let p = bridgeProblem {
                what += " (bridge.json is corrupt: \(p))"
            }
            return Answer(ok: false, reason: "not ready: \(what); runner pid \(runnerPid) beating, heal tier \(heal.displayTier), circuit \(heal.circuit.rawValue)")
        }
        return Answer(ok: true, reason: "ready: bridge pid \(bridge.map { "\($0.identity.pid)" } ?? "?") \(verdict), runner pid \(runnerPid) beating")
    }

    /// Liveness: the runner beats and the circuit is not open. Half-open is the runner's one
    /// trial after the cool-off: it is acting, so it counts as live.
    var liveness: Answer {
        if let trouble = runnerTrouble { return Answer(ok: false, reason: "not live: \(trouble)") }
        let pid = runner.map { "\($0.identity.pid)" } ?? "?"
        if heal.circuit == .open {
            let why = heal.circuitReason.map { " (\($0.rawValue))" } ?? ""
            return Answer(ok: false, reason: "not live: circuit open\(why): the watchdog stopped acting on the bridge; `vigil heal reset` after fixing the cause")
        }
        return Answer(ok: true, reason: "live: runner pid \(pid) beating (heartbeat \(runnerBeatAge.map(seconds) ?? "?") old), circuit \(heal.circuit.rawValue)")
    }
}
