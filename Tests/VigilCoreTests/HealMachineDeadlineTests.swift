import Foundation
import Testing
import VigilCore

/// `HealMachine.nextDeadline` names every instant at which the machine's decision can change
/// with the clock alone: for random states, a step at any instant before it (same state, same
/// observation) decides what a step just after `now` decides; in the states the machine
/// reaches, some observation is decided differently at it (the deadline is not early for
/// nothing).
@Suite("Heal machine: its next deadline")
struct HealMachineDeadlineTests {
    static let policies = HealMachinePropertyTests.policies
    static let observations: [HealObservation] = Verdict.allCases.flatMap { v in
        [nil, "a", "b"].flatMap { (bridge: String?) in
            [HealObservation(verdict: v, lockFree: true, bridge: bridge), HealObservation(verdict: v, lockFree: false, bridge: bridge)]
        }
    }
    /// Stands for "the instant of the step" in a normalised decision.
    static let stamped = BootInstant(nanoseconds: -1)

    /// What a step decides, without what moves with the clock: the instants it stamps with `now`
    /// and the durations its notes report.
    struct Decision: Equatable, CustomStringConvertible {
        var action: HealAction
        var notes: [String]
        var state: HealState
        var description: String { "\(action) \(notes) \(state)" }
    }

    static func decision(_ obs: HealObservation, _ state: HealState, at t: BootInstant, _ policy: HealPolicy) -> Decision {
        let step = HealMachine.step(obs, state: state, now: t, policy: policy)
        var s = step.state
        func mark(_ x: inout BootInstant?) { if x == t { x = stamped } }
        mark(&s.tierSince); mark(&s.incidentSince); mark(&s.killedAt); mark(&s.respawnedAt)
        mark(&s.unprovenRespawnAt); mark(&s.healthySince); mark(&s.circuitOpenedAt)
        mark(&s.lastReminderAt); mark(&s.startCheck); mark(&s.startedAt)
        let notes = step.notes.map { note -> String in
            switch note {
            case .started(let since, _): return "started(\(since))"
            case .recovered(_, let verdict, let tier, let since): return "recovered(\(verdict), \(tier), \(since))"
            case .circuitReminder: return "circuitReminder"
            default: return "\(note)"
            }
        }
        return Decision(action: step.action, notes: notes, state: s)
    }

    /// A state the machine could be in at `now`: every instant at or before it, within a few
    /// windows; fields set or unset at random (some combinations the machine never makes: the
    /// deadline must hold for them too).
    static func randomState(now: BootInstant, policy: HealPolicy, using rng: inout SplitMix64) -> HealState {
        let windows = [policy.cooldown, policy.termGrace, policy.startGrace, policy.stableAfter,
                       policy.circuitCooloff, policy.reminderEvery]
        func instant() -> BootInstant? {
            guard Bool.random(using: &rng) else { return nil }
            if Int.random(in: 0..<4, using: &rng) == 0 {
                // Just before or after a window ends.
                let w = windows.randomElement(using: &rng)!
                return now - w + TimeSpan(nanoseconds: Int64.random(in: -2...2, using: &rng))
            }
            let span = (windows.max()! * 2).nanoseconds
            return now - TimeSpan(nanoseconds: Int64.random(in: 0...span, using: &rng))
        }
        var s = HealState()
        s.tier = Int.random(in: 0...3, using: &rng)
        s.tierSince = s.tier == 0 ? instant() : (instant() ?? now - policy.cooldown)
        s.incidentSince = instant()
        s.incidentVerdict = s.incidentSince == nil ? nil : Verdict.allCases.randomElement(using: &rng)
        s.killedAt = instant()
        s.kills = s.killedAt == nil ? nil : Int.random(in: 1...3, using: &rng)
        s.respawnedAt = instant()
        s.unprovenRespawnAt = s.respawnedAt ?? instant()
        s.failedRespawns = Int.random(in: 0...policy.circuitLimit, using: &rng)
        s.healthySince = instant()
        s.circuit = [Circuit.closed, .closed, .open, .halfOpen].randomElement(using: &rng)!
        if s.circuit != .closed {
            s.circuitOpenedAt = instant()
            s.circuitReason = [CircuitReason.failedRespawns, .unkillable].randomElement(using: &rng)
            s.lastReminderAt = instant()
        }
        if Int.random(in: 0..<6, using: &rng) == 0 {
            s.startCheck = instant() ?? now
            s.startCheckIsRelaunch = Bool.random(using: &rng) ? true : nil
        }
        s.startedAt = Int.random(in: 0..<3, using: &rng) == 0 ? instant() : nil
        s.incidentTier = s.incidentSince == nil ? nil : max(s.tier, Int.random(in: 0...4, using: &rng))
        s.terminatedBridge = [nil, "a"].randomElement(using: &rng)!
        return s
    }

    /// Steps at instants after `now` up to the deadline decide alike; with `tight`, some
    /// observation is decided differently at the deadline than a nanosecond before it.
    static func check(_ state: HealState, now: BootInstant, policy: HealPolicy, tight: Bool,
                      using rng: inout SplitMix64, _ what: String) {
        let deadline = HealMachine.nextDeadline(state, policy: policy, now: now)
        if let deadline { #expect(deadline > now, "\(what)") }
        // The first instant after `now`: the state's own instants are at or before `now`, so
        // none of them is mistaken for one the step stamped.
        let base = now + oneNanosecond
        let end = deadline ?? now + .seconds(5_000)
        guard end > base else { return }
        let later = [base + TimeSpan(nanoseconds: Int64.random(in: 0...max(0, (end - base).nanoseconds - 1), using: &rng)),
                     end - oneNanosecond].filter { $0 > base && $0 < end }
        for obs in observations {
            let first = decision(obs, state, at: base, policy)
            for t in later {
                #expect(decision(obs, state, at: t, policy) == first,
                        "\(what), \(obs): a step at \(t) decides otherwise than at \(base), before the deadline \(String(describing: deadline)):\n\(state)")
            }
        }
        guard tight, let deadline, deadline - oneNanosecond > base else { return }
        let changes = observations.contains { obs in
            decision(obs, state, at: deadline - oneNanosecond, policy) != decision(obs, state, at: deadline, policy)
        }
        #expect(changes, "\(what): nothing changes at the deadline \(deadline):\n\(state)")
    }

    @Test("Before the deadline, the clock alone changes nothing (any state)", arguments: 0..<3)
    func anyState(policyIndex: Int) {
        let policy = Self.policies[policyIndex]
        var rng = SplitMix64(seed: 0xDEAD_0000 &+ UInt64(policyIndex))
        for i in 0..<3000 {
            let now = t0 + .seconds(Double.random(in: 0...10_000, using: &rng))
            let state = Self.randomState(now: now, policy: policy, using: &rng)
            Self.check(state, now: now, policy: policy, tight: false, using: &rng, "policy \(policyIndex), case \(i)")
        }
    }

    /// The states the machine reaches (random probe sequences, as in the invariant tests, with
    /// runner restarts and stops between them): the deadline is exact there.
    @Test("In the states it reaches, the deadline is the next change", arguments: 0..<3, 0..<20)
    func reachedStates(policyIndex: Int, seed: Int) {
        let policy = Self.policies[policyIndex]
        let seed = UInt64(seed) &* 0x9E37_79B9 &+ UInt64(policyIndex)
        var rng = SplitMix64(seed: seed ^ 0x5A5A)
        var state = HealState()
        var now = t0
        for (i, (obs, dt)) in HealMachinePropertyTests.sequence(seed: seed, length: 200, policy: policy).enumerated() {
            now = now + dt
            switch Int.random(in: 0..<40, using: &rng) {
            case 0: state = HealMachine.runnerStarted(state, pairStart: Bool.random(using: &rng), now: now)
            case 1: state = HealMachine.stopped(state)
            default: break
            }
            state = HealMachine.step(obs, state: state, now: now, policy: policy).state
            Self.check(state, now: now, policy: policy, tight: true, using: &rng, "seed \(seed), probe \(i)")
        }
    }

    @Test("A few deadlines by hand")
    func examples() {
        let p = testPolicy
        var s = HealState()
        #expect(HealMachine.nextDeadline(s, policy: p, now: t0) == nil, "a healthy pair with nothing to prove waits for nothing")
        s.tier = 1
        s.tierSince = t0
        #expect(HealMachine.nextDeadline(s, policy: p, now: t0) == t0 + p.cooldown)
        s.tier = 2
        #expect(HealMachine.nextDeadline(s, policy: p, now: t0) == t0 + p.termGrace)
        s = HealState()
        s.healthySince = t0
        s.unprovenRespawnAt = t0 - .seconds(3)
        #expect(HealMachine.nextDeadline(s, policy: p, now: t0 + .seconds(1)) == t0 + p.stableAfter, "a respawn on probation")
        s = HealState()
        s.circuit = .open
        s.circuitOpenedAt = t0
        s.lastReminderAt = t0
        s.tier = 1
        s.tierSince = t0
        #expect(HealMachine.nextDeadline(s, policy: p, now: t0) == t0 + p.reminderEvery, "the reminder, not tier 1's cooldown")
        #expect(HealMachine.nextDeadline(s, policy: p, now: t0 + p.reminderEvery) == t0 + p.circuitCooloff,
                "a reminder due already is no deadline after now; the cool-off is")
    }
}
