import Foundation
import Testing
import VigilCore

/// Every verdict × every situation of the escalation (a new runner's start check, the first
/// bridge of a start in its start grace, tier 0–3, a kill under way, a second kill that did not
/// take, a respawn in its start grace, waiting for the lock, a respawn on probation, circuit open
/// and half-open) × lock free or held × the elapsed time just before, exactly at and just after
/// every window of the policy. The expected step is written from the rules in docs/architecture.md ("The escalation state machine"), not from
/// the implementation.
@Suite("Heal machine: one step from every situation")
struct HealMachineTableTests {
    enum Situation: String, CaseIterable, CustomTestStringConvertible {
        /// Healthy, nothing going on.
        case idle
        /// A new runner took over a quiet state: its first probe is the start check.
        case startCheck
        /// The first bridge of a start was spawned, inside its start grace.
        case starting
        /// Restart marker written (drifted).
        case tier1
        /// SIGTERM sent (hung).
        case tier2
        /// SIGKILL sent, the process still alive.
        case tier3Killing
        /// A second SIGKILL sent after the first did not take (the process still alive).
        case tier3KilledTwice
        /// Dead, waiting for its lock to be released before respawning.
        case tier3AwaitingLock
        /// Respawned, inside its start grace, no failures so far.
        case tier3Respawned
        /// Respawned after circuitLimit − 1 failures: one more opens the circuit.
        case tier3LastChance
        /// A respawned bridge became healthy but has not been healthy for stableAfter yet: on
        /// probation, its incident still open.
        case unproven
        /// The circuit just opened.
        case circuitOpen
        /// The half-open attempt just respawned the bridge.
        case halfOpen

        var testDescription: String { rawValue }
    }

    static let p = testPolicy
    /// The process tier 2's SIGTERM went to in `.tier2` (the table's observations name none).
    static let terminated = "pid 7"

    /// Drives the machine into `situation`; the last probe is at `t0`.
    static func reach(_ situation: Situation) throws -> HealState {
        var d = Driver()
        let s = TimeSpan.seconds(1)
        d.now = t0 - .seconds(2_000)
        switch situation {
        case .idle:
            try d.probe(.healthy, at: t0)
        case .startCheck:
            try d.probe(.healthy, at: t0)
            try d.runnerStarts()
        case .starting:
            try d.runnerStarts(pairStart: false)
            try d.probe(.missing, at: t0)
        case .tier1:
            try d.probe(.healthy)
            try d.probe(.drifted, at: t0)
        case .tier2:
            try d.probe(.healthy)
            try d.probe(.hung, bridge: terminated, at: t0)
        case .tier3Killing:
            try d.probe(.healthy)
            try d.probe(.hung, at: t0 - (p.termGrace))
            try d.probe(.hung, at: t0)
        case .tier3KilledTwice:
            try d.probe(.healthy)
            try d.probe(.hung, at: t0 - (p.termGrace + p.cooldown))
            try d.probe(.hung, at: t0 - p.cooldown)
            try d.probe(.hung, at: t0)
        case .tier3AwaitingLock:
            try d.probe(.healthy)
            try d.probe(.dead, lockFree: false, at: t0)
        case .tier3Respawned:
            try d.probe(.healthy)
            try d.probe(.dead, at: t0)
        case .tier3LastChance:
            try d.probe(.healthy)
            try d.probe(.dead, at: t0 - (s * Double(p.circuitLimit - 1)))
            while d.now < t0 { try d.probe(.dead, after: s) }
        case .unproven:
            try d.probe(.healthy)
            try d.probe(.dead, at: t0 - (s * 2))
            try d.probe(.dead, after: s) // one failure, so a reset can be seen
            try d.probe(.healthy, after: s)
        case .circuitOpen:
            try d.probe(.healthy)
            try d.probe(.dead, at: t0 - (s * Double(p.circuitLimit)))
            while d.now < t0 { try d.probe(.dead, after: s) }
        case .halfOpen:
            try d.probe(.healthy)
            try d.probe(.dead, at: t0 - (p.circuitCooloff + s * Double(p.circuitLimit)))
            try d.repeatUntil("the circuit opens", atMost: 1000, { $0.state.circuit == .open }) { try $0.probe(.dead, after: s) }
            try d.probe(.dead, at: t0)
        }
        #expect(d.now == t0)
        return d.state
    }

    struct Expected: Equatable, CustomStringConvertible {
        var action: HealAction
        var tier: Int
        var circuit: Circuit
        var failedRespawns: Int
        var respawnFailed = false
        var circuitOpened = false
        var halfOpen = false
        var reminder = false
        var recovered = false
        var circuitClosed = false
        var unkillable = false
        var started = false
        var description: String {
            "\(action) tier \(tier) \(circuit.rawValue) failures \(failedRespawns)"
                + (respawnFailed ? " respawnFailed" : "") + (circuitOpened ? " circuitOpened" : "")
                + (halfOpen ? " halfOpen" : "") + (reminder ? " reminder" : "") + (recovered ? " recovered" : "")
                + (circuitClosed ? " circuitClosed" : "") + (unkillable ? " unkillable" : "") + (started ? " started" : "")
        }
    }

    /// The rules, one situation at a time. `e` is the time since the situation's last probe.
    static func expected(_ situation: Situation, _ v: Verdict, lockFree: Bool, elapsed e: TimeSpan) -> Expected {
        let limit = p.circuitLimit
        let alive = v.processAlive
        let respawnOrWait: HealAction = lockFree ? .respawn : .none
        /// The first answer to an incident, from tier 0.
        func fresh(failures: Int) -> Expected {
            switch v {
            case .drifted, .bloated: return Expected(action: .restartMarker, tier: 1, circuit: .closed, failedRespawns: failures)
            case .hung: return Expected(action: .terminate, tier: 2, circuit: .closed, failedRespawns: failures)
            default: return Expected(action: respawnOrWait, tier: 3, circuit: .closed, failedRespawns: failures)
            }
        }
        /// A respawn inside its start grace (made at the situation's instant), `failures` so far.
        func respawned(failures: Int, circuit: Circuit) -> Expected {
            let graceOver = e >= p.startGrace
            let failed = v == .dead || graceOver
            if !failed { return Expected(action: .none, tier: 3, circuit: circuit, failedRespawns: failures) }
            if failures + 1 >= limit {
                return Expected(action: .none, tier: 3, circuit: .open, failedRespawns: failures + 1,
                                respawnFailed: true, circuitOpened: true)
            }
            return Expected(action: alive ? .kill : respawnOrWait, tier: 3, circuit: circuit, failedRespawns: failures + 1,
                            respawnFailed: true)
        }

        if v == .healthy {
            switch situation {
            case .idle, .startCheck:
                return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: 0)
            case .starting:
                // The start worked: told as a start, not as a recovery.
                return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: 0, started: true)
            case .unproven:
                // Healthy since the situation's instant: stable once e ≥ stableAfter, and only then
                // is the incident over.
                let stable = e >= p.stableAfter
                return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: stable ? 0 : 1, recovered: stable)
            case .circuitOpen:
                return Expected(action: .none, tier: 0, circuit: .open, failedRespawns: limit, recovered: true)
            case .halfOpen, .tier3Respawned, .tier3LastChance:
                // A respawn that just came up is on probation: no recovery yet.
                let failures = situation == .halfOpen ? limit : situation == .tier3LastChance ? limit - 1 : 0
                return Expected(action: .none, tier: 0, circuit: situation == .halfOpen ? .halfOpen : .closed, failedRespawns: failures)
            default:
                return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: 0, recovered: true)
            }
        }

        switch situation {
        case .idle:
            return fresh(failures: 0)
        case .startCheck:
            // No bridge process and nothing to continue: a start, not a heal.
            if !alive { return Expected(action: lockFree ? .start : .none, tier: 0, circuit: .closed, failedRespawns: 0) }
            return fresh(failures: 0)
        case .starting:
            // The start's bridge gets its start grace; dead, or not up in time: an incident from
            // its first tier, never a failed respawn.
            if v != .dead && e < p.startGrace { return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: 0) }
            return fresh(failures: 0)
        case .unproven:
            // Died or hung before it proved stable: that respawn failed. Drifted or bloated is a
            // live, beating loop, and missing a clean exit (it removed its own PID file): neither
            // is a failed respawn.
            if v == .drifted || v == .bloated || v == .missing { return fresh(failures: 1) }
            var x = fresh(failures: 2)
            x.respawnFailed = true
            return x
        case .tier1:
            if v == .hung { return Expected(action: .terminate, tier: 2, circuit: .closed, failedRespawns: 0) }
            if !alive { return Expected(action: respawnOrWait, tier: 3, circuit: .closed, failedRespawns: 0) }
            return e >= p.cooldown
                ? Expected(action: .terminate, tier: 2, circuit: .closed, failedRespawns: 0)
                : Expected(action: .none, tier: 1, circuit: .closed, failedRespawns: 0)
        case .tier2:
            if !alive { return Expected(action: respawnOrWait, tier: 3, circuit: .closed, failedRespawns: 0) }
            return e >= p.termGrace
                ? Expected(action: .kill, tier: 3, circuit: .closed, failedRespawns: 0)
                : Expected(action: .none, tier: 2, circuit: .closed, failedRespawns: 0)
        case .tier3Killing:
            if !alive { return Expected(action: respawnOrWait, tier: 3, circuit: .closed, failedRespawns: 0) }
            return Expected(action: e >= p.cooldown ? .kill : .none, tier: 3, circuit: .closed, failedRespawns: 0)
        case .tier3KilledTwice:
            if !alive { return Expected(action: respawnOrWait, tier: 3, circuit: .closed, failedRespawns: 0) }
            // Two kills did not take: stuck in uninterruptible sleep; stop killing, open the circuit.
            if e >= p.cooldown {
                return Expected(action: .none, tier: 3, circuit: .open, failedRespawns: 0, circuitOpened: true, unkillable: true)
            }
            return Expected(action: .none, tier: 3, circuit: .closed, failedRespawns: 0)
        case .tier3AwaitingLock:
            // Something alive appeared where the dead bridge was: it is not ours, kill it.
            return Expected(action: alive ? .kill : respawnOrWait, tier: 3, circuit: .closed, failedRespawns: 0)
        case .tier3Respawned:
            return respawned(failures: 0, circuit: .closed)
        case .tier3LastChance:
            return respawned(failures: limit - 1, circuit: .closed)
        case .halfOpen:
            return respawned(failures: limit, circuit: .halfOpen)
        case .circuitOpen:
            if e >= p.circuitCooloff {
                return Expected(action: alive ? .kill : respawnOrWait, tier: 3, circuit: .halfOpen, failedRespawns: limit,
                                halfOpen: true)
            }
            return Expected(action: .none, tier: 3, circuit: .open, failedRespawns: limit, reminder: e >= p.reminderEvery)
        }
    }

    /// Just before, exactly at and just after every window, plus zero and "much later".
    static let offsets: [TimeSpan] = {
        let windows = [p.cooldown, p.termGrace, p.startGrace, p.stableAfter, p.circuitCooloff, p.reminderEvery]
        var out: [TimeSpan] = [.zero, oneNanosecond, .seconds(100_000)]
        for w in windows { out += [w - oneNanosecond, w, w + oneNanosecond] }
        return out.sorted()
    }()

    @Test("One step", arguments: Situation.allCases, Verdict.allCases)
    func oneStep(situation: Situation, verdict: Verdict) throws {
        let start = try Self.reach(situation)
        for lockFree in [true, false] {
            for e in Self.offsets {
                let now = t0 + e
                let obs = HealObservation(verdict: verdict, lockFree: lockFree)
                let step = HealMachine.step(obs, state: start, now: now, policy: Self.p)
                let want = Self.expected(situation, verdict, lockFree: lockFree, elapsed: e)
                let notes = step.notes
                let got = Expected(
                    action: step.action, tier: step.state.tier, circuit: step.state.circuit,
                    failedRespawns: step.state.failedRespawns,
                    respawnFailed: notes.contains { $0.isRespawnFailed },
                    circuitOpened: notes.contains { $0.isCircuitOpened },
                    halfOpen: notes.contains(.circuitHalfOpen),
                    reminder: notes.contains { $0.isReminder },
                    recovered: notes.contains { $0.isRecovered },
                    circuitClosed: notes.contains(.circuitClosed),
                    unkillable: notes.contains { $0.isUnkillable },
                    started: notes.contains { $0.isStarted })
                #expect(got == want, "lock \(lockFree ? "free" : "held"), \(e) after the last probe")

                // One action per step, and its note says what it was.
                let acted = notes.filter(\.isActed)
                switch step.action {
                case .none:
                    #expect(acted.isEmpty && !notes.contains(.starting))
                case .start:
                    #expect(acted.isEmpty && notes == [.starting])
                default:
                    #expect(acted == [.acted(tier: step.state.tier, verdict: verdict, action: step.action)])
                }
                // A recovery reports the whole incident: from its first observation to the first
                // healthy probe of the bridge that stayed, at the highest tier it reached.
                if let since = start.incidentSince, verdict == .healthy, want.recovered {
                    #expect(notes.first == .recovered(after: (start.healthySince ?? now) - since, verdict: try #require(start.incidentVerdict),
                                                      tier: max(start.incidentTier ?? 0, step.state.displayTier), since: since))
                }
                // A start is never an incident.
                if situation == .startCheck || situation == .starting {
                    #expect(!notes.contains { $0.isRespawnFailed || $0.isRecovered })
                }
                // Pure: the same inputs give the same step, from memory or from disk.
                #expect(HealMachine.step(obs, state: try roundTrip(start), now: now, policy: Self.p) == step)
            }
        }
    }

    /// The bridge tier 2 asked to exit, seen healthy (it beat on its way out): judged as at tier 2,
    /// never a recovery. In every other situation, and for any other process, the name changes
    /// nothing.
    @Test("One step with the bridge named", arguments: Situation.allCases, Verdict.allCases)
    func oneStepNamed(situation: Situation, verdict: Verdict) throws {
        let start = try Self.reach(situation)
        for lockFree in [true, false] {
            for e in Self.offsets {
                let now = t0 + e
                let anonymous = HealMachine.step(HealObservation(verdict: verdict, lockFree: lockFree), state: start, now: now, policy: Self.p)
                for name in [Self.terminated, "pid 8"] {
                    let step = HealMachine.step(HealObservation(verdict: verdict, lockFree: lockFree, bridge: name), state: start, now: now, policy: Self.p)
                    if situation == .tier2 && verdict == .healthy && name == Self.terminated {
                        let over = e >= Self.p.termGrace
                        #expect(step.action == (over ? .kill : .none) && step.state.tier == (over ? 3 : 2), "\(e) after SIGTERM")
                        #expect(step.notes == (over ? [.acted(tier: 3, verdict: .healthy, action: .kill)] : []), "\(e) after SIGTERM")
                        #expect(step.state.incidentSince == start.incidentSince && step.state.healthySince == nil)
                        // The anonymous observation is the old rule: healthy, recovered at once.
                        #expect(anonymous.notes.contains { $0.isRecovered } && anonymous.state.tier == 0)
                    } else {
                        var named = step.state, plain = anonymous.state
                        named.terminatedBridge = nil
                        plain.terminatedBridge = nil
                        #expect(step.action == anonymous.action && step.notes == anonymous.notes && named == plain,
                                "\(name), lock \(lockFree ? "free" : "held"), \(e) after the last probe")
                        // Tier 2 remembers whom it asked to exit.
                        if step.action == .terminate { #expect(step.state.terminatedBridge == name) }
                    }
                }
            }
        }
    }

    @Test("Every situation is what its name says", arguments: Situation.allCases)
    func situations(situation: Situation) throws {
        let s = try Self.reach(situation)
        let limit = Self.p.circuitLimit
        switch situation {
        case .idle: #expect(s == { var x = HealState(); x.healthySince = t0; return x }())
        case .startCheck: #expect(s.startCheck == t0 && !s.incidentOpen)
        case .starting: #expect(s.startedAt == t0 && s.startCheck == nil && !s.incidentOpen && s.respawnedAt == nil)
        case .tier1: #expect(s.tier == 1 && s.tierSince == t0)
        case .tier2: #expect(s.tier == 2 && s.tierSince == t0 && s.terminatedBridge == Self.terminated)
        case .tier3Killing: #expect(s.tier == 3 && s.killedAt == t0 && s.respawnedAt == nil && s.kills == 1)
        case .tier3KilledTwice: #expect(s.tier == 3 && s.killedAt == t0 && s.kills == 2 && s.circuit == .closed)
        case .tier3AwaitingLock: #expect(s.tier == 3 && s.killedAt == nil && s.respawnedAt == nil)
        case .tier3Respawned: #expect(s.tier == 3 && s.respawnedAt == t0 && s.failedRespawns == 0)
        case .tier3LastChance: #expect(s.tier == 3 && s.respawnedAt == t0 && s.failedRespawns == limit - 1)
        case .unproven: #expect(s.tier == 0 && s.healthySince == t0 && s.onProbation && s.incidentOpen && s.failedRespawns == 1)
        case .circuitOpen: #expect(s.circuit == .open && s.circuitOpenedAt == t0 && s.lastReminderAt == t0)
        case .halfOpen: #expect(s.circuit == .halfOpen && s.respawnedAt == t0 && s.failedRespawns == limit)
        }
    }
}
