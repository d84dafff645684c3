import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// What a mission's end and a key's breaker tell chat.
extension MissionRunner {
    /// The chat message for an attempt that ended its mission (nil when it did not: requeued,
    /// reverted, stale, or cancelled because its shim died).
    static func endNotice(id: Int64, attempt: Int, settlement: MissionQueue.Settlement,
                          outcome: MissionQueue.SettleOutcome, queuedBy: String? = nil) -> (key: String, text: String)? {
        let key = "mission-\(id)-\(attempt)-end"
        // Who asked for it, when a chat user did (the notice is for them).
        let by = queuedBy.flatMap { $0.hasPrefix("chat ") ? " (queued by \($0.dropFirst(5)))" : nil } ?? ""
        switch outcome {
        case .ended(let state, let reason):
            var text = "Mission \(id)\(by) \(state == .done ? "done" : state.rawValue)"
            if case .finished(let r) = settlement { text += " (exit \(r.exitCode))" }
            if let reason { text += ": \(reason)" }
            return (key, text + ".")
        case .died(.failed(let reason)):
            return (key, "Mission \(id)\(by) failed: \(reason)")
        case .retry(let at, let reason):
            let wait = max(0, at - Clock.wall().timeIntervalSince1970)
            return (key, "Mission \(id)\(by) \(reason), in \(TimeSpan.seconds(wait.rounded()))." )
        default:
            return nil
        }
    }

    /// The rows of an end notice: plain text for every adapter; for the adapter of the chat
    /// message that queued the mission (`ref`), a reply to that message in its thread that
    /// mentions its sender, with HTML (docs/chat.md, "Mission notices").
    static func endItems(_ n: (key: String, text: String), adapters: [String], ref: ChatRef?,
                         clean: (String) -> String) -> [OutboxItem] {
        let body = clean(n.text)
        return adapters.map { adapter in
            guard ChatNotice.hasRelations(adapter) else { return OutboxItem(key: n.key, adapter: adapter, body: body) }
            guard let ref, ref.adapter == adapter else {
                return OutboxItem(key: n.key, adapter: adapter, body: body, html: ChatHTML.render(body))
            }
            // The sender's id in the text as a mention link (the plain body names them already).
            let shown = ChatHTML.escape(ref.sender)
            var html = ChatHTML.render(body)
            if let r = html.firstRange(of: shown) { html.replaceSubrange(r, with: ChatHTML.mention(ref.sender)) } else { html = ChatHTML.mention(ref.sender) + ": " + html }
            return OutboxItem(key: n.key, adapter: adapter, body: body, html: html, meta: ref.meta(mention: true))
        }
    }

    /// The chat message for a key whose breaker paused or closed (docs/missions.md, "A breaker
    /// per key"); its outbox key is unique per event.
    static func keyNotice(_ key: String, _ told: KeyBreaker.Told, coolOff: TimeSpan) -> (key: String, text: String) {
        let stamp = Int64(Clock.wall().timeIntervalSince1970 * 1000)
        switch told {
        case .paused(let failures):
            return ("key-\(key)-paused-\(stamp)", "Lock key \(key) is paused: \(failures) missions on it failed in a row, so the missions waiting for it do not start. One is tried again in \(coolOff); `vigil mission resume-key \(key)` resumes it now.")
        case .closed:
            return ("key-\(key)-closed-\(stamp)", "Lock key \(key) works again: missions on it start as usual.")
        }
    }

    /// Journals (and, without the outbox, notifies) what the key breakers did in the last commit.
    func reportKeyEvents(_ q: MissionQueue) {
        for (key, told) in q.takeKeyEvents() {
            switch told {
            case .paused(let failures):
                journal.append(.missionKeyPaused, ["key": .string(key), "failures": .int(Int64(failures)),
                                                      "cooloff_ms": .int(Int64(settings.keyBreaker.coolOff.milliseconds))])
            case .closed:
                journal.append(.missionKeyResumed, ["key": .string(key), "by": "a mission that succeeded"])
            }
            if endNoticesInOutbox == nil {
                let n = MissionRunner.keyNotice(key, told, coolOff: settings.keyBreaker.coolOff)
                notify(n.key, n.text)
            }
        }
    }

    func announceEnd(_ id: Int64, _ attempt: Int, _ settlement: MissionQueue.Settlement, _ outcome: MissionQueue.SettleOutcome) {
        if let n = MissionRunner.endNotice(id: id, attempt: attempt, settlement: settlement, outcome: outcome) { notify(n.key, n.text) }
    }
}
