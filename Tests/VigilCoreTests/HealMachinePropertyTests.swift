import Foundation
import Testing
import VigilCore

/// Random probe sequences (seeded, so a failure names its seed and replays) checked against the
/// rules that must hold whatever the bridge does.
@Suite("Heal machine: invariants over random probe sequences")
struct HealMachinePropertyTests {
    /// Policies with different proportions between the windows (a tick may be longer than some).
    static let policies: [HealPolicy] = [
        testPolicy,
        HealPolicy(cooldown: .seconds(2), termGrace: .seconds(2), startGrace: .seconds(2), circuitLimit: 1,
                   circuitCooloff: .seconds(20), stableAfter: .seconds(5), reminderEvery: .seconds(3)),
        HealPolicy(cooldown: .milliseconds(300), termGrace: .seconds(5), startGrace: .milliseconds(500), circuitLimit: 5,
                   circuitCooloff: .seconds(60), stableAfter: .seconds(1), reminderEvery: .seconds(100)),
    ]

    /// A bridge that behaves plausibly badly: verdicts come in runs, the lock is mostly free,
    /// probes are a tick apart with occasional long gaps (a runner that was down).
    static func sequence(seed: UInt64, length: Int, policy: HealPolicy) -> [(HealObservation, TimeSpan)] {
        var rng = SplitMix64(seed: seed)
        let windows = [policy.cooldown, policy.termGrace, policy.startGrace, policy.stableAfter,
                       policy.circuitCooloff, policy.reminderEvery]
        var verdict = Verdict.healthy
        var out: [(HealObservation, TimeSpan)] = []
        for _ in 0..<length {
            if Int.random(in: 0..<4, using: &rng) == 0 { verdict = Verdict.allCases.randomElement(using: &rng)! }
            let lockFree = Int.random(in: 0..<5, using: &rng) != 0
            let dt: TimeSpan
            switch Int.random(in: 0..<10, using: &rng) {
            case 0: dt = .zero
            case 1: dt = windows.randomElement(using: &rng)! + TimeSpan(nanoseconds: Int64.random(in: -1...1, using: &rng))
            case 2: dt = .seconds(Double.random(in: 0...700, using: &rng))
            default: dt = .milliseconds(Double([50, 100, 250, 1000].randomElement(using: &rng)!))
            }
            out.append((HealObservation(verdict: verdict, lockFree: lockFree), max(.zero, dt)))
        }
        return out
    }

    @Test("Invariants hold", arguments: 0..<3, 0..<40)
    func invariants(policyIndex: Int, seed: Int) throws {
        let policy = Self.policies[policyIndex]
        let seed = UInt64(seed) &* 0x1234_5678_9ABC_DEF1 &+ UInt64(policyIndex)
        var state = HealState()
        var now = t0
        var respawnsSinceReset = 0
        var lastReminder: BootInstant?
        for (i, (obs, dt)) in Self.sequence(seed: seed, length: 400, policy: policy).enumerated() {
            now = now + dt
            let before = state
            let step = HealMachine.step(obs, state: before, now: now, policy: policy)
            let after = step.state
            let ctx = "seed \(seed), probe \(i): \(obs.verdict) lock \(obs.lockFree ? "free" : "held") at \(now)"
            let where_ = Comment(rawValue: ctx)

            // Pure and persistable.
            #expect(HealMachine.step(obs, state: before, now: now, policy: policy) == step, where_)
            #expect(try roundTrip(after) == after, where_)

            // At most one action, and exactly one note saying so.
            let acted = step.notes.filter(\.isActed)
            #expect(acted.count == (step.action == .none ? 0 : 1), where_)
            if case .acted(let tier, let verdict, let action)? = acted.first {
                #expect(action == step.action && verdict == obs.verdict && tier == after.tier, where_)
            }

            // Actions fit the observation.
            switch step.action {
            case .none: break
            case .respawn:
                #expect(!obs.verdict.processAlive, "\(ctx): never respawn beside a live bridge")
                #expect(obs.lockFree, "\(ctx): never respawn while the lock is held")
            case .kill, .terminate:
                #expect(obs.verdict.processAlive, "\(ctx): only a live process is signalled")
            case .restartMarker:
                #expect(obs.verdict == .drifted || obs.verdict == .bloated, "\(ctx): a marker only for a live loop")
            }
            if obs.verdict == .healthy {
                #expect(step.action == .none && after.tier == 0 && after.incidentSince == nil, where_)
            }

            // Tiers only go up during an incident; down only to 0, on healthy.
            if obs.verdict != .healthy {
                #expect(after.tier >= before.tier, where_)
                #expect(after.tier >= obs.verdict.firstTier || after.circuit == .open, where_)
            }
            #expect((0...3).contains(after.tier), where_)
            if after.tier > 0 { #expect(after.incidentSince != nil, where_) }

            // An open circuit is quiet, except for the half-open attempt after the cool-off.
            if before.circuit == .open && step.action != .none {
                let opened = try #require(before.circuitOpenedAt)
                #expect(now - opened >= policy.circuitCooloff, where_)
                #expect(after.circuit == .halfOpen && step.notes.contains(.circuitHalfOpen), where_)
            }
            if after.circuit == .open { #expect(step.action == .none, where_) }

            // Circuit transitions come with their notes.
            if before.circuit != .open && after.circuit == .open {
                #expect(step.notes.contains(.circuitOpened(failures: after.failedRespawns)), where_)
                #expect(after.failedRespawns >= policy.circuitLimit, where_)
            }
            if before.circuit != .closed && after.circuit == .closed {
                #expect(step.notes.contains(.circuitClosed) && obs.verdict == .healthy, where_)
            }
            if before.circuit == .closed { #expect(after.circuit != .halfOpen, where_) }
            #expect(step.notes.filter(\.isCircuitOpened).count <= 1, where_)

            // Failure counting: one per step at most, with its note; reset only by stable health.
            let delta = after.failedRespawns - before.failedRespawns
            if delta > 0 {
                #expect(delta == 1 && step.notes.contains(.respawnFailed(count: after.failedRespawns, verdict: obs.verdict)), where_)
            } else if delta < 0 {
                #expect(after.failedRespawns == 0 && obs.verdict == .healthy, where_)
                let since = try #require(after.healthySince)
                #expect(now - since >= policy.stableAfter, where_)
            } else {
                #expect(!step.notes.contains { $0.isRespawnFailed }, where_)
            }
            if after.circuit == .closed { #expect(after.failedRespawns < policy.circuitLimit, where_) }

            // While the circuit is closed, no more than circuitLimit respawns without a stable bridge.
            if obs.verdict == .healthy, let since = after.healthySince, now - since >= policy.stableAfter {
                respawnsSinceReset = 0
            }
            if step.action == .respawn && before.circuit == .closed {
                respawnsSinceReset += 1
                #expect(respawnsSinceReset <= policy.circuitLimit, where_)
            }

            // Reminders are spaced by reminderEvery.
            for note in step.notes where note.isReminder {
                if let last = lastReminder { #expect(now - last >= policy.reminderEvery, where_) }
                lastReminder = now
            }
            if step.notes.contains(where: { $0.isCircuitOpened }) { lastReminder = now }

            // A recovery reports the incident from its first observation.
            for note in step.notes {
                if case .recovered(let took, let verdict, let tier) = note {
                    #expect(took == now - (before.incidentSince ?? now), where_)
                    #expect(verdict == before.incidentVerdict, where_)
                    #expect(tier == before.displayTier, where_)
                }
            }
            state = after
        }
    }

    @Test("Crash loops open the circuit after exactly circuitLimit respawns, whatever the probe rhythm",
          arguments: 0..<60)
    func crashLoopAnyRhythm(seed: Int) throws {
        var rng = SplitMix64(seed: UInt64(seed) &+ 77)
        var policy = testPolicy
        policy.circuitLimit = Int.random(in: 1...6, using: &rng)
        var d = Driver(policy: policy)
        try d.probe(.healthy)
        // Dies at every start; sometimes the PID file is never written, sometimes the dying
        // bridge holds its lock for a moment. Probes come at random, well inside the cool-off.
        while d.state.circuit != .open {
            let v: Verdict = Bool.random(using: &rng) ? .dead : .missing
            try d.probe(v, lockFree: Int.random(in: 0..<3, using: &rng) != 0,
                        after: .milliseconds(Double(Int.random(in: 1...3000, using: &rng))))
            #expect(d.steps.count < 10_000)
        }
        #expect(d.actions.filter { $0 == .respawn }.count == policy.circuitLimit, "seed \(seed)")
        #expect(d.now - t0 < policy.circuitCooloff)
    }
}
