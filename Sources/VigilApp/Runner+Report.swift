import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// What a heal note becomes in the journal and in chat.
extension Runner {
    // MARK: - Reporting

    func report(_ note: HealNote, probe: Probe, done: Performed, now: BootInstant) {
        let after = done.spawned, failure = done.failure
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
                ctx.journal.append(.bridgeStartFailed, ["error": .string(failure)])
                hooks?.notify(key: "\(key)-start-failed", text: "Vigil: could not start the bridge: \(failure).")
            }
        case .started(let since, let took):
            let version = probe.record?.version ?? versions.current(now: now) ?? runningVersion
            hooks?.notify(key: "vigil-started-\(since.nanoseconds)",
                          text: "Vigil started (version \(version)): the bridge (\(pidText)) is up after \(DecimalText.fixed(took.seconds, places: 2)) s.")
        case .acted(let tier, let verdict, let action):
            var fields: [String: JSONValue] = [
                "tier": .int(Int64(tier)), "verdict": .string(verdict.rawValue), "action": .string(action.rawValue),
                "bridge_before": idJSON(probe.identity), "bridge_after": idJSON(after), "incident_ms": incident,
                "circuit": .string(heal.circuit.rawValue), "failed_respawns": .int(Int64(heal.failedRespawns)),
            ]
            if let failure { fields["error"] = .string(failure) }
            ctx.journal.append(.heal, fields)
            let what: String
            switch action {
            case .restartMarker: what = failure ?? "asked it to restart itself (restart marker)"
            // What the system call did: "sent" only when the kernel took the signal.
            case .terminate: what = failure ?? "sent SIGTERM"
            case .kill: what = failure ?? "sent SIGKILL"
            case .start, .respawn: what = after.map { "started a new bridge (pid \($0.pid))" } ?? "could not start a new bridge: \(failure ?? "unknown error")"
            case .none: what = "waited"
            }
            hooks?.notify(key: "\(key)-t\(tier)", text: "Vigil: bridge \(verdict.rawValue) (\(pidText)); tier \(tier): \(what).")
        case .recovered(let down, let verdict, let tier, let since):
            let healthyAt = since + down
            ctx.journal.append(.recovered, [
                "verdict": .string(verdict.rawValue), "tier": .int(Int64(tier)), "after_ms": .double((down.milliseconds * 10).rounded() / 10),
                "bridge": idJSON(probe.identity), "healthy_boot": .int(healthyAt.nanoseconds),
                "stable_ms": .double(((now - healthyAt).milliseconds * 10).rounded() / 10),
            ])
            let proven = now - healthyAt > .zero ? "; stable for \(DecimalText.fixed((now - healthyAt).seconds, places: 1)) s" : ""
            hooks?.notify(key: "incident-\(since.nanoseconds)-recovered",
                          text: "Vigil: bridge healthy again after \(DecimalText.fixed(down.seconds, places: 2)) s (was \(verdict.rawValue), tier \(tier)\(proven)).")
        case .respawnFailed(let count, let verdict):
            ctx.journal.append(.respawnFailed, ["count": .int(Int64(count)), "verdict": .string(verdict.rawValue), "limit": .int(Int64(limit)),
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
            ctx.journal.append(.circuitOpen, fields)
            hooks?.notify(key: "\(key)-circuit", text: text)
        case .circuitReminder(let openFor):
            ctx.journal.append(.circuitReminder, ["tier": 4, "verdict": .string(probe.verdict.rawValue), "open_s": .double(openFor.seconds),
                                                    "reason": heal.circuitReason.map { .string($0.rawValue) } ?? .null])
            hooks?.notify(key: "\(key)-reminder", text: "Vigil reminder: the circuit is still open (for \(openFor)); the bridge is \(probe.verdict.rawValue).")
        case .circuitHalfOpen:
            ctx.journal.append(.circuitHalfOpen, ["tier": 4, "verdict": .string(probe.verdict.rawValue)])
        case .circuitClosed:
            ctx.journal.append(.circuitClosed, [:])
            hooks?.notify(key: "\(key)-closed", text: "Vigil: circuit closed; the bridge has been stable.")
        }
    }

    func resetHeal(by: String) {
        let was = heal
        heal = HealState()
        ctx.journal.append(.healReset, ["by": .string(by), "tier_was": .int(Int64(was.displayTier)), "circuit_was": .string(was.circuit.rawValue)])
        hooks?.notify(key: "heal-reset-\(Clock.boot().nanoseconds)", text: "Vigil: heal state reset by \(by) (was tier \(was.displayTier), circuit \(was.circuit.rawValue)).")
    }
}
