import Foundation
import Testing
import VigilCore

/// Windows chosen pairwise different, so a test fails if the machine uses the wrong one.
let testPolicy = HealPolicy(cooldown: .seconds(10), termGrace: .seconds(4), startGrace: .seconds(7), circuitLimit: 3,
                        circuitCooloff: .seconds(600), stableAfter: .seconds(30), reminderEvery: .seconds(120))

/// An arbitrary boot instant far from zero.
let t0 = BootInstant(nanoseconds: 5_000 * 1_000_000_000)
let oneNanosecond = TimeSpan(nanoseconds: 1)

let unhealthyVerdicts: [Verdict] = Verdict.allCases.filter { $0 != .healthy }
let aliveUnhealthy: [Verdict] = [.drifted, .bloated, .hung]
let goneVerdicts: [Verdict] = [.dead, .missing]

/// The state as the runner persists it (heal.json is JSON) and a new runner reads it back.
func roundTrip(_ state: HealState) throws -> HealState {
    try JSONDecoder().decode(HealState.self, from: JSONEncoder().encode(state))
}

/// Drives the machine the way the runner does: one step per probe. With `persist`, the state
/// goes through JSON before every step, as if the runner had been killed and restarted
/// between any two probes.
struct Driver {
    var policy: HealPolicy = testPolicy
    var persist = false
    var state = HealState()
    var now = t0
    var steps: [HealStep] = []

    init(policy: HealPolicy = testPolicy, persist: Bool = false) {
        self.policy = policy
        self.persist = persist
    }

    var actions: [HealAction] { steps.map(\.action) }
    var notes: [HealNote] { steps.flatMap(\.notes) }
    var lastNotes: [HealNote] { steps.last?.notes ?? [] }

    /// Advances the clock by `dt`, then probes.
    @discardableResult
    mutating func probe(_ verdict: Verdict, lockFree: Bool = true, bridge: String? = nil, after dt: TimeSpan = .zero,
                        sourceLocation: SourceLocation = #_sourceLocation) throws -> HealAction {
        now = now + dt
        let input = persist ? try roundTrip(state) : state
        if persist { #expect(input == state, "state must survive a JSON round trip", sourceLocation: sourceLocation) }
        let step = HealMachine.step(HealObservation(verdict: verdict, lockFree: lockFree, bridge: bridge), state: input, now: now, policy: policy)
        state = step.state
        steps.append(step)
        return step.action
    }

    /// Probes at `instant` (not before the last probe).
    @discardableResult
    mutating func probe(_ verdict: Verdict, lockFree: Bool = true, bridge: String? = nil, at instant: BootInstant) throws -> HealAction {
        let dt = instant - now
        return try probe(verdict, lockFree: lockFree, bridge: bridge, after: dt)
    }

    /// A new runner takes over (as after loading heal.json), `dt` after the last probe.
    mutating func runnerStarts(pairStart: Bool = true, after dt: TimeSpan = .zero) throws {
        now = now + dt
        state = HealMachine.runnerStarted(persist ? try roundTrip(state) : state, pairStart: pairStart, now: now)
    }

    /// The pair is stopped on purpose (`vigil stop`, SIGTERM of the runner).
    mutating func stops(after dt: TimeSpan = .zero) throws {
        now = now + dt
        state = HealMachine.stopped(persist ? try roundTrip(state) : state)
    }

    /// Runs `step` until `done` holds, at most `limit` times: past that the test fails (an
    /// issue, then `NeverHeld` thrown) instead of looping forever.
    mutating func repeatUntil(_ what: String, atMost limit: Int = 10_000, sourceLocation: SourceLocation = #_sourceLocation,
                              _ done: (Driver) -> Bool, _ step: (inout Driver) throws -> Void) throws {
        var n = 0
        while !done(self) {
            guard n < limit else {
                Issue.record("\(what): not after \(limit) steps", sourceLocation: sourceLocation)
                throw NeverHeld(what: what, limit: limit)
            }
            try step(&self)
            n += 1
        }
    }

    /// Probes `count` times, `every` apart, and returns the actions.
    @discardableResult
    mutating func probe(_ verdict: Verdict, lockFree: Bool = true, bridge: String? = nil, times count: Int, every: TimeSpan) throws -> [HealAction] {
        var out: [HealAction] = []
        for _ in 0..<count { out.append(try probe(verdict, lockFree: lockFree, bridge: bridge, after: every)) }
        return out
    }
}

extension HealNote {
    var isActed: Bool { if case .acted = self { return true }; return false }
    var isRecovered: Bool { if case .recovered = self { return true }; return false }
    var isRespawnFailed: Bool { if case .respawnFailed = self { return true }; return false }
    var isCircuitOpened: Bool { if case .circuitOpened = self { return true }; return false }
    var isReminder: Bool { if case .circuitReminder = self { return true }; return false }
    var isStarted: Bool { if case .started = self { return true }; return false }
    var isUnkillable: Bool { if case .circuitOpened(_, .unkillable) = self { return true }; return false }
    /// Any note that is told in chat as part of an incident (not the start).
    var isIncidentNote: Bool { isActed || isRecovered || isRespawnFailed || isCircuitOpened }
}

/// A small deterministic generator (SplitMix64), so every random run can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What `Driver.repeatUntil` throws when its condition never held.
struct NeverHeld: Error, CustomStringConvertible {
    var what: String
    var limit: Int
    var description: String { "\(what): not after \(limit) steps" }
}
