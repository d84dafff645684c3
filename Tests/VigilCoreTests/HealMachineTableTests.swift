import Foundation
import Testing
import VigilCore

/// Every verdict × every situation of the escalation (tier 0–3, a kill under way, a respawn in
/// its start grace, waiting for the lock, a respawn not yet proven stable, circuit open and
/// half-open) × lock free or held × the elapsed time just before, exactly at and just after
/// every window of the policy. The expected step is written from DESIGN.md's rules, not from
/// the implementation.
@Suite("Heal machine: one step from every situation")
struct HealMachineTableTests {
    enum Situation: String, CaseIterable, CustomTestStringConvertible {
        /// Healthy, nothing going on.
        case idle
        /// Restart marker written (drifted).
        case tier1
        /// SIGTERM sent (hung).
        case tier2
        /// SIGKILL sent, the process still alive.
        case tier3Killing
        /// Dead, waiting for its lock to be released before respawning.
        case tier3AwaitingLock
        /// Respawned, inside its start grace, no failures so far.
        case tier3Respawned
        /// Respawned after circuitLimit − 1 failures: one more opens the circuit.
        case tier3LastChance
        /// A respawned bridge became healthy but has not been healthy for stableAfter yet.
        case unproven
        /// The circuit just opened.
        case circuitOpen
        /// The half-open attempt just respawned the bridge.
        case halfOpen

        var testDescription: String { rawValue }
    }

    static let p = testPolicy

    /// Drives the machine into `situation`; the last probe is at `t0`.
    static func reach(_ situation: Situation) throws -> HealState {
        var d = Driver()
        let s = TimeSpan.seconds(1)
        d.now = t0 - .seconds(2_000)
        switch situation {
        case .idle:
            try d.probe(.healthy, at: t0)
        case .tier1:
            try d.probe(.healthy)
            try d.probe(.drifted, at: t0)
        case .tier2:
            try d.probe(.healthy)
            try d.probe(.hung, at: t0)
        case .tier3Killing:
            try d.probe(.healthy)
            try d.probe(.hung, at: t0 - (p.termGrace))
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
            while d.state.circuit != .open { try d.probe(.dead, after: s) }
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
        var description: String {
            "\(action) tier \(tier) \(circuit.rawValue) failures \(failedRespawns)"
                + (respawnFailed ? " respawnFailed" : "") + (circuitOpened ? " circuitOpened" : "")
                + (halfOpen ? " halfOpen" : "") + (reminder ? " reminder" : "") + (recovered ? " recovered" : "")
                + (circuitClosed ? " circuitClosed" : "")
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
            case .idle:
                return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: 0)
            case .unproven:
                // Healthy since the situation's instant: stable once e ≥ stableAfter.
                return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: e >= p.stableAfter ? 0 : 1)
            case .circuitOpen:
                return Expected(action: .none, tier: 0, circuit: .open, failedRespawns: limit, recovered: true)
            case .halfOpen:
                return Expected(action: .none, tier: 0, circuit: .halfOpen, failedRespawns: limit, recovered: true)
            case .tier3LastChance:
                return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: limit - 1, recovered: true)
            default:
                return Expected(action: .none, tier: 0, circuit: .closed, failedRespawns: 0, recovered: true)
            }
        }

        switch situation {
        case .idle:
            return fresh(failures: 0)
        case .unproven:
            // Died or hung before it proved stable: that respawn failed. Drifted or bloated is a
            // live, beating loop: not a failed respawn.
            if v == .drifted || v == .bloated { return fresh(failures: 1) }
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
                    circuitClosed: notes.contains(.circuitClosed))
                #expect(got == want, "lock \(lockFree ? "free" : "held"), \(e) after the last probe")

                // One action per step, and its note says what it was.
                let acted = notes.filter(\.isActed)
                if step.action == .none {
                    #expect(acted.isEmpty)
                } else {
                    #expect(acted == [.acted(tier: step.state.tier, verdict: verdict, action: step.action)])
                }
                // A recovery reports the whole incident.
                if let since = start.incidentSince, verdict == .healthy {
                    #expect(notes.first == .recovered(after: now - since, verdict: try #require(start.incidentVerdict),
                                                      tier: start.displayTier))
                }
                // Pure: the same inputs give the same step, from memory or from disk.
                #expect(HealMachine.step(obs, state: try roundTrip(start), now: now, policy: Self.p) == step)
            }
        }
    }

    @Test("Every situation is what its name says", arguments: Situation.allCases)
    func situations(situation: Situation) throws {
        let s = try Self.reach(situation)
        let limit = Self.p.circuitLimit
        switch situation {
        case .idle: #expect(s == { var x = HealState(); x.healthySince = t0; return x }())
        case .tier1: #expect(s.tier == 1 && s.tierSince == t0)
        case .tier2: #expect(s.tier == 2 && s.tierSince == t0)
        case .tier3Killing: #expect(s.tier == 3 && s.killedAt == t0 && s.respawnedAt == nil)
        case .tier3AwaitingLock: #expect(s.tier == 3 && s.killedAt == nil && s.respawnedAt == nil)
        case .tier3Respawned: #expect(s.tier == 3 && s.respawnedAt == t0 && s.failedRespawns == 0)
        case .tier3LastChance: #expect(s.tier == 3 && s.respawnedAt == t0 && s.failedRespawns == limit - 1)
        case .unproven: #expect(s.tier == 0 && s.healthySince == t0 && s.unprovenRespawnAt != nil && s.failedRespawns == 1)
        case .circuitOpen: #expect(s.circuit == .open && s.circuitOpenedAt == t0 && s.lastReminderAt == t0)
        case .halfOpen: #expect(s.circuit == .halfOpen && s.respawnedAt == t0 && s.failedRespawns == limit)
        }
    }
}
