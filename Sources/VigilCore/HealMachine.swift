/// The watchdog's escalation logic as a pure state machine: an observation, a state and a time
/// go in; one action, a new state and notes for the journal come out. Nothing here touches
/// the system, so every verdict × tier × boundary × circuit state can be tested with
/// made-up times (Tests/VigilCoreTests: HealMachineTableTests, HealMachineScenarioTests,
/// HealMachinePropertyTests and HealMachineDeadlineTests).
///
/// Tiers: 1 restart marker · 2 SIGCONT+SIGTERM · 3 SIGKILL then respawn · circuit open.
/// Besides the tiers the machine knows the pair's start (`runnerStarted`, `.start`) and its
/// stop (`stopped`), so neither is ever mistaken for an incident or a failed respawn.
/// See docs/architecture.md, "The escalation state machine", for the rules and the diagram.
public enum Circuit: String, Codable, Sendable {
    case closed
    case open
    case halfOpen = "half-open"
}

/// Why the circuit opened.
public enum CircuitReason: String, Codable, Sendable {
    /// `circuitLimit` respawns in a row failed (crash loop, flapping).
    case failedRespawns = "failed-respawns"
    /// SIGKILL did not end the bridge, twice: it is stuck in uninterruptible sleep (state D).
    case unkillable
}

/// The persisted heal state (heal.json). Times are boot-clock instants, valid for one boot.
/// Fields added after the first release are optional, so an older heal.json still decodes.
public struct HealState: Codable, Equatable, Sendable {
    /// 0 when nothing is being healed; otherwise the tier whose action was taken last.
    public var tier: Int = 0
    /// When the current tier's (last) action was taken.
    public var tierSince: BootInstant?
    /// When the current incident was first observed, and its first verdict. An incident stays
    /// open until it is over: healthy without a respawn to prove, or the respawned bridge
    /// healthy for `stableAfter`.
    public var incidentSince: BootInstant?
    public var incidentVerdict: Verdict?
    /// The highest tier (4: circuit open) the current incident reached.
    public var incidentTier: Int?
    /// Tier 3 bookkeeping: when SIGKILL went out, how many SIGKILLs this live bridge got, and
    /// when the replacement was started (cleared once it is seen healthy).
    public var killedAt: BootInstant?
    public var kills: Int?
    public var respawnedAt: BootInstant?
    /// The last respawn that has neither proven itself stable nor failed.
    public var unprovenRespawnAt: BootInstant?
    /// Consecutive failed respawns.
    public var failedRespawns: Int = 0
    /// Since when the bridge has been continuously healthy.
    public var healthySince: BootInstant?
    public var circuit: Circuit = .closed
    public var circuitOpenedAt: BootInstant?
    public var circuitReason: CircuitReason?
    public var lastReminderAt: BootInstant?
    /// Set by `runnerStarted`: the next probe is a new runner's first look at the bridge and
    /// decides whether this is a start of the pair.
    public var startCheck: BootInstant?
    /// The start check is a relaunched runner's (not the pair's first): a bridge found dead
    /// there (its PID file left by a crash while no runner watched) is an incident, not a start.
    public var startCheckIsRelaunch: Bool?
    /// When the first bridge of a start was spawned; cleared when it is healthy (announced
    /// as started) or when it did not come up (then an incident begins).
    public var startedAt: BootInstant?
    /// The bridge tier 2's SIGTERM went to (`HealObservation.bridge` at that step): asked to
    /// exit, it may beat once more on its way out (SIGCONT lets a stopped bridge run), and that
    /// beat is no recovery. Cleared at tier 0.
    public var terminatedBridge: String?

    public init() {}

    /// The tier as people read it: 4 while the circuit is open.
    public var displayTier: Int { circuit == .open ? 4 : tier }

    /// True while an incident is open (possibly healthy already, its respawn on probation).
    public var incidentOpen: Bool { incidentSince != nil || tier != 0 }

    /// True while a respawned bridge is healthy but has not yet proven stable.
    public var onProbation: Bool { unprovenRespawnAt != nil && respawnedAt == nil && healthySince != nil }
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
    /// SIGKILLs that did not end a live bridge (each followed by a full cooldown) before the
    /// circuit opens as `unkillable`.
    public var unkillableAfter: Int

    public init(cooldown: TimeSpan, termGrace: TimeSpan, startGrace: TimeSpan, circuitLimit: Int,
                circuitCooloff: TimeSpan, stableAfter: TimeSpan, reminderEvery: TimeSpan, unkillableAfter: Int = 2) {
        self.cooldown = cooldown
        self.termGrace = termGrace
        self.startGrace = startGrace
        self.circuitLimit = circuitLimit
        self.circuitCooloff = circuitCooloff
        self.stableAfter = stableAfter
        self.reminderEvery = reminderEvery
        self.unkillableAfter = max(1, unkillableAfter)
    }
}

public struct HealObservation: Equatable, Sendable {
    public var verdict: Verdict
    /// The bridge's singleton lock is free (no bridge holds it, dying or not).
    public var lockFree: Bool
    /// Which process the probe saw, as an opaque token (PID and start time); nil when none.
    /// The machine compares it only with the one it asked to exit (`terminatedBridge`).
    public var bridge: String?
    public init(verdict: Verdict, lockFree: Bool, bridge: String? = nil) {
        self.verdict = verdict
        self.lockFree = lockFree
        self.bridge = bridge
    }

    /// The probe saw the very process tier 2's SIGTERM went to in `state`.
    public func isTerminated(in state: HealState) -> Bool {
        state.tier == 2 && bridge != nil && bridge == state.terminatedBridge
    }
}

/// One action per probe.
public enum HealAction: String, Equatable, Sendable {
    case none
    /// The first bridge of a starting pair: start a new detached bridge (not a heal action).
    case start
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
    /// The first bridge of a starting pair is being started (comes with `.start`).
    case starting
    /// The first bridge of the start is healthy, `after` its spawn at `since`.
    case started(since: BootInstant, after: TimeSpan)
    /// A heal action was taken at `tier` for `verdict`.
    case acted(tier: Int, verdict: Verdict, action: HealAction)
    /// The incident that began at `since` with `verdict` is over: the bridge that stayed was
    /// first seen healthy `after` its beginning (the downtime); `tier` is the highest reached.
    case recovered(after: TimeSpan, verdict: Verdict, tier: Int, since: BootInstant)
    /// A respawned bridge died or hung on its own, or did not come up within its start grace.
    case respawnFailed(count: Int, verdict: Verdict)
    case circuitOpened(failures: Int, reason: CircuitReason = .failedRespawns)
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
    /// A new runner took over (after loading heal.json, before its first probe). With
    /// `pairStart` (a person launched the pair: the wrapper's first runner) an incident left
    /// open by a runner that died without stopping is abandoned, as by `stopped`.
    public static func runnerStarted(_ state: HealState, pairStart: Bool, now: BootInstant) -> HealState {
        var s = pairStart ? stopped(state) : state
        s.startCheck = now
        s.startCheckIsRelaunch = pairStart ? nil : true
        return s
    }

    /// The pair was stopped on purpose (`vigil stop`, SIGTERM or SIGINT of the runner): the
    /// open incident, the start and the respawn on probation are abandoned, neither recovered
    /// nor failed. Real failures already counted and an open circuit stay (an interrupted
    /// half-open attempt falls back to open).
    public static func stopped(_ state: HealState) -> HealState {
        var s = HealState()
        s.failedRespawns = state.failedRespawns
        s.circuit = state.circuit == .halfOpen ? .open : state.circuit
        s.circuitOpenedAt = state.circuitOpenedAt
        s.circuitReason = state.circuitReason
        s.lastReminderAt = state.lastReminderAt
        return s
    }

    /// The earliest instant after `now` at which `step` could decide differently for the same
    /// state and observation: before it, stepping again with unchanged inputs takes the same
    /// action, makes the same notes and the same state (only the instants it stamps and the
    /// durations it reports move with the clock). Every time-based rule of `step` is here:
    ///
    /// - the start grace of the first bridge of a start (`startedAt`) and of a respawned bridge
    ///   not yet seen up (`respawnedAt`): missing or hung inside it is "not yet";
    /// - `stableAfter` of a healthy bridge with something to prove (a respawn on probation,
    ///   failures to forgive, a circuit to close);
    /// - with the circuit open: its cool-off (half-open) and its next reminder;
    /// - otherwise the current tier's wait: tier 1's cooldown, tier 2's term grace, tier 3's
    ///   cooldown after a SIGKILL that has not taken yet.
    ///
    /// nil: nothing is due without a new observation. The runner sleeps until the earliest of
    /// this and its own deadlines (a beat going stale, the tick).
    public static func nextDeadline(_ s: HealState, policy p: HealPolicy, now: BootInstant) -> BootInstant? {
        var d: [BootInstant] = []
        if let started = s.startedAt { d.append(started + p.startGrace) }
        if let spawned = s.respawnedAt { d.append(spawned + p.startGrace) }
        if let h = s.healthySince, s.unprovenRespawnAt != nil || s.failedRespawns > 0 || s.circuit != .closed {
            d.append(h + p.stableAfter)
        }
        if s.circuit == .open {
            // An open circuit waits for nothing else (the tiers resume in the half-open attempt).
            // Past its cool-off the next unhealthy step goes half-open at once: no reminder then.
            if let opened = s.circuitOpenedAt {
                if opened + p.circuitCooloff > now {
                    d.append(opened + p.circuitCooloff)
                    d.append((s.lastReminderAt ?? opened) + p.reminderEvery)
                }
            } else if let last = s.lastReminderAt {
                d.append(last + p.reminderEvery)
            }
        } else {
            if let since = s.tierSince {
                switch s.tier {
                case 1: d.append(since + p.cooldown)
                case 2: d.append(since + p.termGrace)
                default: break
                }
            }
            if s.tier >= 3, let killed = s.killedAt { d.append(killed + p.cooldown) }
        }
        return d.filter { $0 > now }.min()
    }

    /// Decides the next step. Pure: same inputs, same output.
    public static func step(_ obs: HealObservation, state: HealState, now: BootInstant, policy: HealPolicy) -> HealStep {
        var step = decide(obs, state: state, now: now, policy: policy)
        if step.state.incidentSince != nil {
            step.state.incidentTier = max(step.state.incidentTier ?? 0, step.state.displayTier)
        } else {
            step.state.incidentTier = nil
        }
        return step
    }

    private static func decide(_ obs: HealObservation, state: HealState, now: BootInstant, policy: HealPolicy) -> HealStep {
        var s = state
        var notes: [HealNote] = []

        // A new runner's first look: no bridge, nothing to continue → this is a start.
        if s.startCheck != nil {
            let crashedUnwatched = obs.verdict == .dead && s.startCheckIsRelaunch == true
            let continuing = obs.verdict.processAlive || crashedUnwatched || s.incidentOpen || s.startedAt != nil || s.respawnedAt != nil
            s.startCheckIsRelaunch = nil
            if continuing {
                s.startCheck = nil
            } else if s.circuit == .open {
                // Failures counted before the stop stand: no start until the cool-off or a reset.
                s.startCheck = nil
                s.lastReminderAt = now
                notes.append(.circuitReminder(openFor: now - (s.circuitOpenedAt ?? now)))
            } else {
                // Never race a dying bridge of the last run: start once its lock is free.
                guard obs.lockFree else { return HealStep(action: .none, state: s, notes: notes) }
                s.startCheck = nil
                s.startedAt = now
                s.healthySince = nil
                return HealStep(action: .start, state: s, notes: [.starting])
            }
        }

        // A bridge that tier 2 asked to exit is healthy only by a beat on its way out (SIGCONT
        // lets a stopped bridge run before it acts on SIGTERM): no recovery. It is judged as at
        // tier 2: its exit goes on to tier 3's respawn, and alive past term grace it gets
        // SIGKILL (docs/architecture.md, "The escalation state machine").
        if obs.verdict == .healthy && !obs.isTerminated(in: s) { return healthy(&s, now: now, policy: policy, notes: notes) }

        // Unhealthy from here on.
        s.healthySince = nil
        if !obs.verdict.processAlive { s.kills = nil } // the kills took

        // The first bridge of a start gets its start grace; one that dies or does not come up
        // in time turns the start into an incident, never into a failed respawn.
        if let started = s.startedAt {
            if obs.verdict != .dead && now - started < policy.startGrace {
                return HealStep(action: .none, state: s, notes: notes)
            }
            s.startedAt = nil
        }

        if s.incidentSince == nil {
            s.incidentSince = now
            s.incidentVerdict = obs.verdict
        }

        // Did the last respawn fail? It did if its bridge died or hung on its own, or did not
        // come up within its start grace. Inside the start grace a bridge may not have written
        // its PID file or first beat yet: missing or hung then is "not yet" (only a dead one has
        // failed). A bridge that was up and then is missing removed its own PID file: it exited
        // cleanly because it was asked to (SIGTERM, `vigil stop`), which is no failure.
        if let spawned = s.respawnedAt ?? s.unprovenRespawnAt {
            let inStartGrace = s.respawnedAt != nil && now - spawned < policy.startGrace
            let failed: Bool
            switch obs.verdict {
            case .dead: failed = true
            case .hung: failed = !inStartGrace
            case .missing, .drifted, .bloated, .healthy: failed = s.respawnedAt != nil && !inStartGrace
            }
            if failed {
                s.failedRespawns += 1
                s.respawnedAt = nil
                s.unprovenRespawnAt = nil
                notes.append(.respawnFailed(count: s.failedRespawns, verdict: obs.verdict))
                if s.failedRespawns >= policy.circuitLimit && s.circuit != .open {
                    openCircuit(&s, .failedRespawns, now: now)
                    notes.append(.circuitOpened(failures: s.failedRespawns))
                    return HealStep(action: .none, state: s, notes: notes)
                }
            } else if s.respawnedAt != nil {
                // A fresh bridge still inside its start grace: give it time.
                return HealStep(action: .none, state: s, notes: notes)
            } else if obs.verdict == .missing {
                s.unprovenRespawnAt = nil // exited cleanly: neither proven nor failed
            }
        }

        if s.circuit == .open {
            let opened = s.circuitOpenedAt ?? now
            if now - opened >= policy.circuitCooloff {
                s.circuit = .halfOpen
                s.kills = nil
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
            // Tier 3 in progress: a kill that has not taken yet is repeated after the cooldown,
            // until `unkillableAfter` kills did not take (one in a half-open attempt): then the
            // bridge is stuck in uninterruptible sleep and only a person can help. A dead
            // bridge is respawned once its lock is free.
            if obs.verdict.processAlive, let killed = s.killedAt {
                if now - killed < policy.cooldown {
                    return HealStep(action: .none, state: s, notes: notes)
                }
                if (s.kills ?? 0) >= policy.unkillableAfter || s.circuit == .halfOpen {
                    openCircuit(&s, .unkillable, now: now)
                    notes.append(.circuitOpened(failures: s.failedRespawns, reason: .unkillable))
                    return HealStep(action: .none, state: s, notes: notes)
                }
            }
            return tier3(obs, &s, now: now, notes: notes)
        }
        return HealStep(action: .none, state: s, notes: notes)
    }

    private static func healthy(_ s: inout HealState, now: BootInstant, policy: HealPolicy, notes: [HealNote]) -> HealStep {
        var notes = notes
        if let started = s.startedAt {
            s.startedAt = nil
            notes.append(.started(since: started, after: now - started))
        }
        s.tier = 0
        s.tierSince = nil
        s.terminatedBridge = nil
        s.killedAt = nil
        s.kills = nil
        s.respawnedAt = nil // it came up; from now on it proves itself (unprovenRespawnAt)
        let healthySince = s.healthySince ?? now
        s.healthySince = healthySince
        let stable = now - healthySince >= policy.stableAfter
        // The incident is over when there is no respawn to prove, or the respawn proved stable:
        // a respawned bridge that beats once and dies is no recovery to announce.
        if let began = s.incidentSince, s.unprovenRespawnAt == nil || stable {
            notes.append(.recovered(after: healthySince - began, verdict: s.incidentVerdict ?? .missing,
                                    tier: max(s.incidentTier ?? 0, s.displayTier), since: began))
            s.incidentSince = nil
            s.incidentVerdict = nil
        }
        if stable {
            s.unprovenRespawnAt = nil
            s.failedRespawns = 0
            if s.circuit != .closed {
                s.circuit = .closed
                s.circuitOpenedAt = nil
                s.circuitReason = nil
                s.lastReminderAt = nil
                notes.append(.circuitClosed)
            }
        }
        return HealStep(action: .none, state: s, notes: notes)
    }

    private static func openCircuit(_ s: inout HealState, _ reason: CircuitReason, now: BootInstant) {
        s.circuit = .open
        s.circuitOpenedAt = now
        s.circuitReason = reason
        s.lastReminderAt = now
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
            s.terminatedBridge = obs.bridge
            // The exit this asks for is no failed respawn (a failure was judged by the verdict).
            s.unprovenRespawnAt = nil
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
            s.kills = (s.kills ?? 0) + 1
            s.unprovenRespawnAt = nil // a death the watchdog causes is no failed respawn
            return HealStep(action: .kill, state: s, notes: notes + [.acted(tier: 3, verdict: obs.verdict, action: .kill)])
        }
        // Never race the dying bridge: respawn only once its lock is free.
        guard obs.lockFree else { return HealStep(action: .none, state: s, notes: notes) }
        s.killedAt = nil
        s.kills = nil
        s.respawnedAt = now
        s.unprovenRespawnAt = now
        return HealStep(action: .respawn, state: s, notes: notes + [.acted(tier: 3, verdict: obs.verdict, action: .respawn)])
    }
}
