/// The watchdog's escalation logic as a pure state machine: an observation, a state and a time
/// go in; one action, a new state and notes for the journal come out. Nothing here touches
/// the system, so every verdict × tier × boundary × circuit state can be tested with
/// made-up times (Tests/VigilCoreTests/HealMachineTests.swift).
///
/// Tiers: 1 restart marker · 2 SIGCONT+SIGTERM · 3 SIGKILL then respawn · circuit open.
/// See docs/architecture.md for the state diagram.
public enum Circuit: String, Codable, Sendable {
    case closed
    case open
    case halfOpen = "half-open"
}

/// The persisted heal state (heal.json). Times are boot-clock instants, valid for one boot.
public struct HealState: Codable, Equatable, Sendable {
    /// 0 when nothing is being healed; otherwise the tier whose action was taken last.
    public var tier: Int = 0
    /// When the current tier's (last) action was taken.
    public var tierSince: BootInstant?
    /// When the current incident was first observed, and its first verdict.
    public var incidentSince: BootInstant?
    public var incidentVerdict: Verdict?
    /// Tier 3 bookkeeping: when SIGKILL went out, and when the replacement was started.
    public var killedAt: BootInstant?
    public var respawnedAt: BootInstant?
    /// The last respawn that has not yet proven itself stable.
    public var unprovenRespawnAt: BootInstant?
    /// Consecutive failed respawns.
    public var failedRespawns: Int = 0
    /// Since when the bridge has been continuously healthy.
    public var healthySince: BootInstant?
    public var circuit: Circuit = .closed
    public var circuitOpenedAt: BootInstant?
    public var lastReminderAt: BootInstant?

    public init() {}

    /// The tier as people read it: 4 while the circuit is open.
    public var displayTier: Int { circuit == .open ? 4 : tier }
}

public struct HealPolicy: Equatable, Sendable {
    public var cooldown: TimeSpan
    public var termGrace: TimeSpan
    public var startGrace: TimeSpan
    public var circuitLimit: Int
    public var circuitCooloff: TimeSpan
    /// How long a respawned bridge must stay healthy before its respawn counts as a success.
    public var stableAfter: TimeSpan
    /// How often an open circuit is announced again.
    public var reminderEvery: TimeSpan

    public init(cooldown: TimeSpan, termGrace: TimeSpan, startGrace: TimeSpan, circuitLimit: Int,
                circuitCooloff: TimeSpan, stableAfter: TimeSpan, reminderEvery: TimeSpan) {
        self.cooldown = cooldown
        self.termGrace = termGrace
        self.startGrace = startGrace
        self.circuitLimit = circuitLimit
        self.circuitCooloff = circuitCooloff
        self.stableAfter = stableAfter
        self.reminderEvery = reminderEvery
    }
}

public struct HealObservation: Equatable, Sendable {
    public var verdict: Verdict
    /// The bridge's singleton lock is free (no bridge holds it, dying or not).
    public var lockFree: Bool
    public init(verdict: Verdict, lockFree: Bool) {
        self.verdict = verdict
        self.lockFree = lockFree
    }
}

/// One action per probe.
public enum HealAction: String, Equatable, Sendable {
    case none
    /// Tier 1: write the bridge's restart marker.
    case restartMarker = "restart-marker"
    /// Tier 2: SIGCONT then SIGTERM to the identified bridge.
    case terminate
    /// Tier 3: SIGKILL to the identified bridge.
    case kill
    /// Tier 3: start a new detached bridge.
    case respawn
}

/// What the journal (and chat) should hear about a step.
public enum HealNote: Equatable, Sendable {
    /// A heal action was taken at `tier` for `verdict`.
    case acted(tier: Int, verdict: Verdict, action: HealAction)
    /// Healthy again after an incident that began with `verdict`.
    case recovered(after: TimeSpan, verdict: Verdict, tier: Int)
    /// A respawned bridge did not become (or stay) healthy.
    case respawnFailed(count: Int, verdict: Verdict)
    case circuitOpened(failures: Int)
    case circuitReminder(openFor: TimeSpan)
    case circuitHalfOpen
    case circuitClosed
}

public struct HealStep: Equatable, Sendable {
    public var action: HealAction
    public var state: HealState
    public var notes: [HealNote]
}

public enum HealMachine {
    /// Decides the next step. Pure: same inputs, same output.
    public static func step(_ obs: HealObservation, state: HealState, now: BootInstant, policy: HealPolicy) -> HealStep {
        var s = state
        var notes: [HealNote] = []

        if obs.verdict == .healthy {
            if s.tier != 0 || s.incidentSince != nil {
                let since = s.incidentSince ?? s.tierSince ?? now
                notes.append(.recovered(after: now - since, verdict: s.incidentVerdict ?? .missing, tier: s.displayTier))
            }
            s.tier = 0
            s.tierSince = nil
            s.incidentSince = nil
            s.incidentVerdict = nil
            s.killedAt = nil
            s.respawnedAt = nil
            if s.healthySince == nil { s.healthySince = now }
            if let since = s.healthySince, now - since >= policy.stableAfter {
                s.unprovenRespawnAt = nil
                s.failedRespawns = 0
                if s.circuit != .closed {
                    s.circuit = .closed
                    s.circuitOpenedAt = nil
                    s.lastReminderAt = nil
                    notes.append(.circuitClosed)
                }
            }
            return HealStep(action: .none, state: s, notes: notes)
        }

        // Unhealthy from here on.
        s.healthySince = nil
        if s.incidentSince == nil {
            s.incidentSince = now
            s.incidentVerdict = obs.verdict
        }

        // Did the last respawn fail? It did if its bridge died, hung, or never became healthy.
        // Inside the start grace a bridge may not have written its PID file or first beat yet:
        // missing or hung then is "not yet", not a failure (only a dead one has failed).
        if let spawned = s.respawnedAt ?? s.unprovenRespawnAt {
            let inStartGrace = s.respawnedAt != nil && now - spawned < policy.startGrace
            let failed: Bool
            switch obs.verdict {
            case .dead: failed = true
            case .missing, .hung: failed = !inStartGrace
            case .drifted, .bloated, .healthy: failed = s.respawnedAt != nil && !inStartGrace
            }
            if failed {
                s.failedRespawns += 1
                s.respawnedAt = nil
                s.unprovenRespawnAt = nil
                notes.append(.respawnFailed(count: s.failedRespawns, verdict: obs.verdict))
                if s.failedRespawns >= policy.circuitLimit && s.circuit != .open {
                    s.circuit = .open
                    s.circuitOpenedAt = now
                    s.lastReminderAt = now
                    notes.append(.circuitOpened(failures: s.failedRespawns))
                    return HealStep(action: .none, state: s, notes: notes)
                }
            } else if s.respawnedAt != nil {
                // A fresh bridge still inside its start grace: give it time.
                return HealStep(action: .none, state: s, notes: notes)
            }
        }

        if s.circuit == .open {
            let opened = s.circuitOpenedAt ?? now
            if now - opened >= policy.circuitCooloff {
                s.circuit = .halfOpen
                notes.append(.circuitHalfOpen)
                return tier3(obs, &s, now: now, notes: notes)
            }
            let last = s.lastReminderAt ?? opened
            if now - last >= policy.reminderEvery {
                s.lastReminderAt = now
                notes.append(.circuitReminder(openFor: now - opened))
            }
            return HealStep(action: .none, state: s, notes: notes)
        }

        let required = obs.verdict.firstTier
        if s.tier < required {
            return act(tier: required, obs, &s, now: now, notes: notes)
        }
        let since = s.tierSince ?? now
        switch s.tier {
        case 1:
            if now - since >= policy.cooldown { return act(tier: 2, obs, &s, now: now, notes: notes) }
        case 2:
            // SIGTERM had its grace period: SIGKILL is tier 3's first step.
            if now - since >= policy.termGrace { return act(tier: 3, obs, &s, now: now, notes: notes) }
        default:
            // Tier 3 in progress: a kill that has not taken yet is repeated after the cooldown;
            // a dead bridge is respawned once its lock is free.
            if obs.verdict.processAlive {
                if let killed = s.killedAt, now - killed < policy.cooldown {
                    return HealStep(action: .none, state: s, notes: notes)
                }
            }
            return tier3(obs, &s, now: now, notes: notes)
        }
        return HealStep(action: .none, state: s, notes: notes)
    }

    private static func act(tier: Int, _ obs: HealObservation, _ s: inout HealState, now: BootInstant, notes: [HealNote]) -> HealStep {
        switch tier {
        case 1:
            s.tier = 1
            s.tierSince = now
            return HealStep(action: .restartMarker, state: s, notes: notes + [.acted(tier: 1, verdict: obs.verdict, action: .restartMarker)])
        case 2:
            s.tier = 2
            s.tierSince = now
            return HealStep(action: .terminate, state: s, notes: notes + [.acted(tier: 2, verdict: obs.verdict, action: .terminate)])
        default:
            return tier3(obs, &s, now: now, notes: notes)
        }
    }

    private static func tier3(_ obs: HealObservation, _ s: inout HealState, now: BootInstant, notes: [HealNote]) -> HealStep {
        if s.tier != 3 {
            s.tier = 3
            s.tierSince = now
        }
        if obs.verdict.processAlive {
            s.killedAt = now
            return HealStep(action: .kill, state: s, notes: notes + [.acted(tier: 3, verdict: obs.verdict, action: .kill)])
        }
        // Never race the dying bridge: respawn only once its lock is free.
        guard obs.lockFree else { return HealStep(action: .none, state: s, notes: notes) }
        s.killedAt = nil
        s.respawnedAt = now
        s.unprovenRespawnAt = now
        return HealStep(action: .respawn, state: s, notes: notes + [.acted(tier: 3, verdict: obs.verdict, action: .respawn)])
    }
}
