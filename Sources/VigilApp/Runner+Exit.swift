import Foundation
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// How a runner ends: restart (exit 42), the wrapper gone, the state directory lost, stop.
extension Runner {
    // MARK: - Exits

    /// Exits 42 for `reason` (the wrapper relaunches us at once), unless the wrapper that
    /// started us is gone: nobody would relaunch us, so we go on and say so, once per `key`
    /// (docs/operator-guide.md, "The wrapper gone"). Nil when we go on.
    func restart(reason: String, key: String) -> Int32? {
        guard wrapperIsGone(), let w = wrapper else { return exitForRestart(reason: reason) }
        guard restartsHeld.insert(key).inserted else { return nil }
        ctx.journal.append(.runnerRestartSkipped, [
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
    func wrapperIsGone() -> Bool {
        guard let w = wrapper else { return false }
        if !wrapperGone && w.liveness() == .gone {
            wrapperGone = true
            ctx.journal.append(.wrapperGone, [
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
    func abandon(_ loss: StateDirectoryAnchor.Loss) -> Int32 {
        let code = StateDirectoryAnchor.lostExitCode
        systemd?.stopping("the state directory \(loss)")
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

    /// SIGCONT+SIGTERM, SIGKILL after the term grace (`Teardown.graceful`). True when a
    /// SIGKILL had to be sent (and was).
    @discardableResult
    func endBridge(_ pidfd: PidFD) -> Bool {
        pidfd.perform(.graceful(grace: config.tunables.termGrace)).killed
    }

    func exitForRestart(reason: String) -> Int32 {
        saveHealState(now: Clock.boot())
        ctx.journal.append(.runnerRestart, ["reason": .string(reason), "exit": 42])
        systemd?.restarting(reason)
        hooks?.shutdown()
        versions.cancel()
        ctx.removeOwnPidFile()
        return 42
    }

    /// Stops the bridge gracefully (SIGCONT+SIGTERM, SIGKILL after the grace), then ourselves.
    /// Missions keep running (their shims are detached); the next runner reattaches them.
    func stopPair(reason: String) {
        ctx.journal.append(.runnerStopping, ["reason": .string(reason)])
        systemd?.stopping(reason)
        if let r = ctx.files.loadRecord(.bridge), runsVigil(r.identity, role: .bridge, dir: ctx.dir), let pidfd = r.identity.openPidFD(),
           endBridge(pidfd) {
            ctx.journal.append(.bridgeKilled, ["reason": "did not exit within the term grace", "pid": .int(Int64(r.identity.pid))])
        }
        starting?.perform(.kill())
        reapChildren()
        // A stop is not an incident: whatever was under way is abandoned, never failed.
        heal = HealMachine.stopped(heal)
        saveHealState(now: Clock.boot())
        hooks?.shutdown()
        versions.cancel()
        ctx.removeOwnPidFile()
        ctx.journal.append(.runnerStopped, ["reason": .string(reason)])
    }
}
