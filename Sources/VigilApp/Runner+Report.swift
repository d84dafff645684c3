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
        let incidentMS: JSONValue = heal.incidentSince.map { .double(((now - $0).milliseconds * 10).rounded() / 10) } ?? .null
        let key = "heal-\(now.nanoseconds)"
        let pidText = probe.identity.map { "pid \($0.pid)" } ?? "no pid"
        let limit = config.tunables.circuitLimit
        switch note {
        case .starting:
            // The bridge journals its own `bridge-started`; the runner speaks only when it could
            // not start one.
            if let failure {
                ctx.journal.append(.bridgeStartFailed, ["error": .string(failure)])
                say(ChatNotice(key: "\(key)-start-failed", text: "Vigil: could not start the bridge: \(failure)."))
            }
        case .started(let since, let took):
            let version = probe.record?.version ?? versions.current(now: now) ?? runningVersion
            say(ChatNotice(key: "vigil-started-\(since.nanoseconds)",
                           text: "Vigil started (version \(version)): the bridge (\(pidText)) is up after \(DecimalText.fixed(took.seconds, places: 2)) s."))
        case .acted(let tier, let verdict, let action):
            var fields: [String: JSONValue] = [
                "tier": .int(Int64(tier)), "verdict": .string(verdict.rawValue), "action": .string(action.rawValue),
                "bridge_before": idJSON(probe.identity), "bridge_after": idJSON(after), "incident_ms": incidentMS,
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
            let asFound = verdict == heal.incidentVerdict ? "" : " (bridge \(verdict.rawValue))"
            incidentStep(since: heal.incidentSince, probe: probe, now: now,
                         line: ChatNotice(key: "\(key)-t\(tier)", text: "Vigil: bridge \(verdict.rawValue) (\(pidText)); tier \(tier): \(what)."),
                         add: "tier \(tier)\(asFound): \(what)")
        case .recovered(let down, let verdict, let tier, let since):
            let healthyAt = since + down
            ctx.journal.append(.recovered, [
                "verdict": .string(verdict.rawValue), "tier": .int(Int64(tier)), "after_ms": .double((down.milliseconds * 10).rounded() / 10),
                "bridge": idJSON(probe.identity), "healthy_boot": .int(healthyAt.nanoseconds),
                "stable_ms": .double(((now - healthyAt).milliseconds * 10).rounded() / 10),
            ])
            let proven = now - healthyAt > .zero ? "; stable for \(DecimalText.fixed((now - healthyAt).seconds, places: 1)) s" : ""
            incidentStep(since: since, probe: probe, now: now,
                         line: ChatNotice(key: "incident-\(since.nanoseconds)-recovered",
                                          text: "Vigil: bridge healthy again after \(DecimalText.fixed(down.seconds, places: 2)) s (was \(verdict.rawValue), tier \(tier)\(proven))."),
                         add: nil, status: "✅ healed after \(DecimalText.fixed(down.seconds, places: 2)) s (was \(verdict.rawValue), tier \(tier)\(proven))",
                         closing: true, verdict: verdict)
        case .respawnFailed(let count, let verdict):
            ctx.journal.append(.respawnFailed, ["count": .int(Int64(count)), "verdict": .string(verdict.rawValue), "limit": .int(Int64(limit)),
                                                  "bridge": idJSON(probe.identity)])
            let next = count >= limit ? "the circuit opens" : "trying again"
            incidentStep(since: heal.incidentSince, probe: probe, now: now,
                         line: ChatNotice(key: "\(key)-failed", text: "Vigil: the respawned bridge is \(verdict.rawValue) (\(pidText)): failed respawn \(count) of \(limit); \(next)."),
                         add: "the respawned bridge is \(verdict.rawValue) (\(pidText)): failed respawn \(count) of \(limit); \(next)")
        case .circuitOpened(let failures, let reason):
            var fields: [String: JSONValue] = [
                "tier": 4, "verdict": .string(probe.verdict.rawValue), "failures": .int(Int64(failures)),
                "retry_in_s": .double(config.tunables.circuitCooloff.seconds), "reason": .string(reason.rawValue),
            ]
            let text: String, short: String
            switch reason {
            case .failedRespawns:
                short = "circuit open: \(failures) failed respawns in a row"
                text = "Vigil ALERT: the bridge failed \(failures) respawns in a row; the watchdog stopped acting (circuit open). It retries once in \(config.tunables.circuitCooloff), or now with `vigil heal reset` (or /heal reset in this chat: the runner answers it while the bridge is down)."
            case .unkillable:
                let state = probe.identity.flatMap { ProcStat.read(pid: $0.pid) }.map { String($0.state) } ?? "?"
                fields["detail"] = "bridge stuck in uninterruptible sleep — needs a person"
                fields["process_state"] = .string(state)
                fields["bridge"] = idJSON(probe.identity)
                short = "circuit open: \(pidText) stuck in uninterruptible sleep (state \(state)), survived \(config.tunables.policy.unkillableAfter) SIGKILLs"
                text = "Vigil ALERT: bridge stuck in uninterruptible sleep — needs a person: \(pidText) survived \(config.tunables.policy.unkillableAfter) SIGKILLs (process state \(state)). The watchdog stopped acting (circuit open); find what it waits on (`cat /proc/PID/stack`, a hung mount), then `vigil heal reset`."
            }
            ctx.journal.append(.circuitOpen, fields)
            // The incident's message says so too, and a NEW message (an edit wakes no one)
            // mentions the operators.
            incidentStep(since: heal.incidentSince, probe: probe, now: now, line: nil, add: short,
                         status: "🚨 CIRCUIT OPEN: the watchdog stopped acting; `vigil heal reset` or /heal reset")
            alert(key: "\(key)-circuit", text: text)
        case .circuitReminder(let openFor):
            ctx.journal.append(.circuitReminder, ["tier": 4, "verdict": .string(probe.verdict.rawValue), "open_s": .double(openFor.seconds),
                                                    "reason": heal.circuitReason.map { .string($0.rawValue) } ?? .null])
            // A reminder is a new message everywhere (it is meant to be seen); the incident's
            // message shows the same state.
            say(ChatNotice(key: "\(key)-reminder", text: "Vigil reminder: the circuit is still open (for \(openFor)); the bridge is \(probe.verdict.rawValue)."))
            if let since = heal.incidentSince, incident?.key == IncidentReport.key(since: since), incident?.closed == false {
                incidentStep(since: since, probe: probe, now: now, line: nil, add: nil,
                             status: "🚨 CIRCUIT OPEN (for \(openFor)); the bridge is \(probe.verdict.rawValue); `vigil heal reset` or /heal reset")
            }
        case .circuitHalfOpen:
            ctx.journal.append(.circuitHalfOpen, ["tier": 4, "verdict": .string(probe.verdict.rawValue)])
            // Console and webhook are told nothing here, as before; the incident's message
            // shows the retry.
            if let since = heal.incidentSince, incident?.key == IncidentReport.key(since: since), incident?.closed == false {
                incidentStep(since: since, probe: probe, now: now, line: nil, add: "circuit half-open after the cool-off: one more try",
                             status: "healing (half-open)")
            }
        case .circuitClosed:
            ctx.journal.append(.circuitClosed, [:])
            let line = ChatNotice(key: "\(key)-closed", text: "Vigil: circuit closed; the bridge has been stable.")
            if incident != nil {
                incidentStep(since: nil, probe: probe, now: now, line: line, add: "circuit closed; the bridge has been stable")
            } else {
                say(line)
            }
        }
    }

    func resetHeal(by: String) {
        let was = heal
        heal = HealState()
        ctx.journal.append(.healReset, ["by": .string(by), "tier_was": .int(Int64(was.displayTier)), "circuit_was": .string(was.circuit.rawValue)])
        let line = ChatNotice(key: "heal-reset-\(Clock.boot().nanoseconds)", text: "Vigil: heal state reset by \(by) (was tier \(was.displayTier), circuit \(was.circuit.rawValue)).")
        if let since = was.incidentSince, var r = incident, r.key == IncidentReport.key(since: since), !r.closed {
            r.add("heal state reset by \(by) (was tier \(was.displayTier), circuit \(was.circuit.rawValue))",
                  status: "reset by \(by): the watchdog starts over", closing: true)
            incident = r
            saveHealState(now: Clock.boot())
            say(ChatNotice(key: line.key, text: line.text, adapters: lineAdapters))
            say(matrixNotice(r))
        } else {
            say(line)
        }
        flushNotices()
    }

    // MARK: - Chat: one message per incident (docs/chat.md, "One message per incident")

    /// Adapters that get an incident's events as separate lines, as before (they cannot edit):
    /// every configured one but Matrix.
    var lineAdapters: Set<String> {
        Set((hooks?.notifier.config.adapters ?? []).filter { !ChatNotice.hasRelations($0) })
    }

    /// Queued after the heal state is saved (`flushNotices`).
    func say(_ notice: ChatNotice) { pendingNotices.append(notice) }

    func flushNotices() {
        let queued = pendingNotices
        pendingNotices = []
        for n in queued { hooks?.notify(n) }
    }

    /// The incident's current state as the Matrix row: the first message, or an edit of it.
    func matrixNotice(_ r: IncidentReport) -> ChatNotice {
        ChatNotice(key: r.currentKey, text: r.plain, html: r.html, priority: .notice, meta: OutboxMeta(replaces: r.replaces),
                   adapters: ["matrix"])
    }

    /// One event of the incident that began at `since` (nil: the last incident, for a late
    /// line such as the circuit closing): `line` (today's message) goes to console and webhook;
    /// Matrix gets the incident's message with `add` (and `status`) applied, first as a new
    /// message, then as edits of it. Without an incident to attach to, `line` goes everywhere.
    func incidentStep(since: BootInstant?, probe: Probe, now: BootInstant, line: ChatNotice?, add: String?, status: String? = nil,
                      closing: Bool = false, verdict found: Verdict? = nil) {
        if let since {
            let key = IncidentReport.key(since: since)
            if incident?.key != key {
                let began = Clock.wall().addingTimeInterval(-(now - since).seconds)
                let verdict = found ?? heal.incidentVerdict ?? probe.verdict
                let pid = probe.identity.map { "pid \($0.pid)" } ?? "no pid"
                incident = IncidentReport(key: key, title: "Vigil incident \(IncidentReport.clockTime(Clock.iso(began))): bridge \(verdict.rawValue) (\(pid))")
            }
        }
        guard var r = incident else {
            if let line { say(line) }
            return
        }
        if let line { say(ChatNotice(key: line.key, text: line.text, priority: line.priority, adapters: lineAdapters)) }
        r.add(add, status: status, closing: closing)
        incident = r
        say(matrixNotice(r))
    }

    /// The circuit-open alert: a new message at priority alert everywhere; on Matrix it
    /// mentions the operators (`chat.matrix.mention`, default the allow list) by id in the
    /// text and in `m.mentions`, so their clients notify them.
    func alert(key: String, text: String) {
        let operators = hooks?.notifier.config.matrix?.operators ?? []
        say(ChatNotice(key: key, text: text, priority: .alert, adapters: lineAdapters))
        let pills = operators.map { ChatHTML.mention($0) }
        let body = operators.isEmpty ? text : text + "\n" + operators.joined(separator: " ")
        let rest = text.hasPrefix("Vigil ALERT:") ? String(text.dropFirst("Vigil ALERT:".count)) : " " + text
        let html = "<p><b>🚨 Vigil ALERT:</b>\(HTMLText.escape(rest))</p>" + (pills.isEmpty ? "" : "<p>\(pills.joined(separator: " "))</p>")
        say(ChatNotice(key: key, text: body, html: html, priority: .alert,
                       meta: OutboxMeta(mentions: operators.isEmpty ? nil : operators), adapters: ["matrix"]))
    }
}
