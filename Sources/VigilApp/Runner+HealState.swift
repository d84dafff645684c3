import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// heal.json: the heal state across runners.
extension Runner {
    // MARK: - Heal state persistence

    /// Loads heal.json and tells the machine a new runner took over: its first probe decides
    /// whether this is a start of the pair (docs/architecture.md, "A start is not an incident").
    func loadHealState() {
        defer { heal = HealMachine.runnerStarted(heal, pairStart: clearStop, now: Clock.boot()) }
        guard let file = ctx.files.load(ctx.dir.healState, kind: HealFile.kind, as: HealFile.self) else { return }
        if file.bootID == Clock.bootID {
            heal = file.state
            savedHeal = heal
            incident = file.incident
            savedIncident = incident
            // The last runner may have died between saving the incident's state and queuing
            // it: queue it again (idempotent by key: a no-op when it was queued).
            if let r = incident, r.version > 0 { pendingNotices.append(matrixNotice(r)) }
        } else {
            ctx.journal.append(.healStateDiscarded, ["reason": "written before the last reboot"])
        }
    }

    /// Persists the heal state when it changed. A failed write is journaled (at a low rate) and
    /// the runner goes on from its memory: it never repeats a tier because it could not save.
    func saveHealState(now: BootInstant) {
        guard heal != savedHeal || incident != savedIncident else { return }
        do {
            try ctx.files.save(HealFile(bootID: Clock.bootID, state: heal, incident: incident), kind: HealFile.kind, to: ctx.dir.healState)
            savedHeal = heal
            savedIncident = incident
            if lastHealWriteProblem != nil {
                lastHealWriteProblem = nil
                ctx.journal.append(.stateWriteRecovered, ["file": "heal.json"])
            }
        } catch {
            if lastHealWriteProblem.map({ now - $0 > .seconds(60) }) ?? true {
                lastHealWriteProblem = now
                ctx.journal.append(.stateWriteFailed, ["file": "heal.json", "error": .string("\(error)")])
            }
        }
    }
}
