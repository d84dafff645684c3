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
        // Which process the probe sees: now and then another one (a respawn, or someone's), so
        // the bridge tier 2 asked to exit is sometimes the one seen healthy and sometimes not.
        var bridge = 1
        var out: [(HealObservation, TimeSpan)] = []
        for _ in 0..<length {
            if Int.random(in: 0..<4, using: &rng) == 0 { verdict = Verdict.allCases.randomElement(using: &rng)! }
            if Int.random(in: 0..<6, using: &rng) == 0 { bridge += 1 }
            let lockFree = Int.random(in: 0..<5, using: &rng) != 0
            let dt: TimeSpan
            switch Int.random(in: 0..<10, using: &rng) {
            case 0: dt = .zero
            case 1: dt = windows.randomElement(using: &rng)! + TimeSpan(nanoseconds: Int64.random(in: -1...1, using: &rng))
            case 2: dt = .seconds(Double.random(in: 0...700, using: &rng))
            default: dt = .milliseconds(Double([50, 100, 250, 1000].randomElement(using: &rng)!))
            }
            let seen: String? = verdict == .missing ? nil : "bridge \(bridge)"
            out.append((HealObservation(verdict: verdict, lockFree: lockFree, bridge: seen), max(.zero, dt)))
        }
        return out
    }

    @Test("Invariants hold", arguments: 0..<3, 0..<40)
    func invariants(policyIndex: Int, seed: Int) throws {
        let policy = Self.policies[policyIndex]
        let seed = UInt64(seed) &* 0x1234_5678_9ABC_DEF1 &+ UInt64(policyIndex)
        var rng = SplitMix64(seed: seed ^ 0xA5A5)
        var state = HealState()
        var now = t0
        var respawnsWithoutUp = 0
        var lastReminder: BootInstant?
        for (i, (obs, dt)) in Self.sequence(seed: seed, length: 400, policy: policy).enumerated() {
            now = now + dt
            // Now and then the runner is restarted (sometimes by a person: a pair start), or the
            // pair is stopped. Neither transition counts, forgives or opens anything.
            switch Int.random(in: 0..<40, using: &rng) {
            case 0:
                let was = state
                let pairStart = Bool.random(using: &rng)
                state = HealMachine.runnerStarted(state, pairStart: pairStart, now: now)
                if pairStart { respawnsWithoutUp = 0 } // abandoned, like a stop
                #expect(state.failedRespawns == was.failedRespawns && state.startCheck == now, "seed \(seed), probe \(i)")
                #expect((state.circuit == .open) == (was.circuit != .closed) || state.circuit == was.circuit, "seed \(seed), probe \(i)")
            case 1:
                let was = state
                state = HealMachine.stopped(state)
                #expect(state.failedRespawns == was.failedRespawns, "seed \(seed), probe \(i)")
                #expect(!state.incidentOpen && state.startedAt == nil && state.respawnedAt == nil && state.unprovenRespawnAt == nil)
                #expect(state.circuit == (was.circuit == .closed ? .closed : .open))
                respawnsWithoutUp = 0
            default: break
            }
            let before = state
            let step = HealMachine.step(obs, state: before, now: now, policy: policy)
            let after = step.state
            let ctx = "seed \(seed), probe \(i): \(obs.verdict) lock \(obs.lockFree ? "free" : "held") at \(now)"
            let where_ = Comment(rawValue: ctx)

            // Pure and persistable.
            #expect(HealMachine.step(obs, state: before, now: now, policy: policy) == step, where_)
            #expect(try roundTrip(after) == after, where_)

            // At most one action, and exactly one note saying so (a start is no heal action).
            let acted = step.notes.filter(\.isActed)
            #expect(acted.count == (step.action == .none || step.action == .start ? 0 : 1), where_)
            #expect(step.notes.contains(.starting) == (step.action == .start), where_)
            if case .acted(let tier, let verdict, let action)? = acted.first {
                #expect(action == step.action && verdict == obs.verdict && tier == after.tier, where_)
            }

            // Actions fit the observation.
            switch step.action {
            case .none: break
            case .respawn, .start:
                #expect(!obs.verdict.processAlive, "\(ctx): never start beside a live bridge")
                #expect(obs.lockFree, "\(ctx): never start while the lock is held")
            case .kill, .terminate:
                #expect(obs.verdict.processAlive, "\(ctx): only a live process is signalled")
            case .restartMarker:
                #expect(obs.verdict == .drifted || obs.verdict == .bloated, "\(ctx): a marker only for a live loop")
            }

            // A start only at a new runner's first look, with nothing to continue; never an incident.
            if step.action == .start {
                #expect(before.startCheck != nil && !before.incidentOpen && before.circuit != .open, where_)
                #expect(before.startedAt == nil && before.respawnedAt == nil, "\(ctx): one start at a time")
                #expect(!after.incidentOpen && after.startedAt == now, where_)
            }
            if step.notes.contains(where: \.isStarted) {
                #expect(before.startedAt != nil && obs.verdict == .healthy, where_)
            }
            if before.startedAt != nil && !step.notes.contains(where: \.isStarted) {
                #expect(!step.notes.contains { $0.isRespawnFailed }, "\(ctx): a start never fails as a respawn")
            }

            // The bridge tier 2 asked to exit, seen healthy (a beat on its way out): no recovery,
            // nothing forgiven; it is waited for as at tier 2, SIGKILL once term grace is over.
            let terminatedHealthy = obs.verdict == .healthy && obs.isTerminated(in: before)
            if terminatedHealthy {
                #expect(!step.notes.contains { $0.isRecovered || $0.isStarted || $0 == .circuitClosed }, "\(ctx): recovered on the beat of a bridge asked to exit")
                #expect(after.tier >= 2 && after.healthySince == nil && after.incidentSince != nil, where_)
                #expect(step.action == .none || step.action == .kill, "\(ctx): \(step.action) from \(before)")
                if step.action == .kill { #expect(now - (before.tierSince ?? now) >= policy.termGrace || before.circuit != .closed, where_) }
            } else if obs.verdict == .healthy {
                #expect(step.action == .none && after.tier == 0, where_)
                // The incident stays open only while a respawn is on probation.
                if after.incidentSince != nil {
                    let since = try #require(after.healthySince)
                    #expect(after.unprovenRespawnAt != nil && now - since < policy.stableAfter, where_)
                }
            }

            // Tiers only go up during an unhealthy stretch; down only to 0, on healthy. A start in
            // its grace, or a start check waiting for the lock, is tier 0.
            if obs.verdict != .healthy || terminatedHealthy {
                #expect(after.tier >= before.tier, where_)
                #expect(after.tier >= obs.verdict.firstTier || after.circuit == .open || after.startedAt != nil || after.startCheck != nil, where_)
            }
            #expect((0...3).contains(after.tier), where_)
            if after.tier > 0 { #expect(after.incidentSince != nil, where_) }
            if after.incidentSince != nil { #expect((after.incidentTier ?? -1) >= after.displayTier, where_) }

            // An open circuit is quiet, except for the half-open attempt after the cool-off.
            if before.circuit == .open && step.action != .none {
                let opened = try #require(before.circuitOpenedAt)
                #expect(now - opened >= policy.circuitCooloff, where_)
                #expect(after.circuit == .halfOpen && step.notes.contains(.circuitHalfOpen), where_)
            }
            if after.circuit == .open { #expect(step.action == .none, where_) }

            // Circuit transitions come with their notes, for one of the two reasons.
            if before.circuit != .open && after.circuit == .open {
                let reason = try #require(after.circuitReason)
                #expect(step.notes.contains(.circuitOpened(failures: after.failedRespawns, reason: reason)), where_)
                switch reason {
                case .failedRespawns:
                    #expect(after.failedRespawns >= policy.circuitLimit, where_)
                case .unkillable:
                    // Only after kills that did not take, each given a full cooldown.
                    let killed = try #require(before.killedAt)
                    #expect(obs.verdict.processAlive && now - killed >= policy.cooldown, where_)
                    #expect((before.kills ?? 0) >= policy.unkillableAfter || before.circuit == .halfOpen, where_)
                }
            }
            if before.circuit != .closed && after.circuit == .closed {
                #expect(step.notes.contains(.circuitClosed) && obs.verdict == .healthy, where_)
            }
            if before.circuit == .closed { #expect(after.circuit != .halfOpen, where_) }
            #expect(step.notes.filter(\.isCircuitOpened).count <= 1, where_)
            // Never more kills of one live bridge than unkillableAfter (one in a half-open attempt).
            #expect((after.kills ?? 0) <= policy.unkillableAfter, where_)
            if step.action == .kill && before.circuit == .closed {
                #expect((before.kills ?? 0) < policy.unkillableAfter, where_)
            }

            // Failure counting: one per step at most, with its note; reset only by stable health.
            let delta = after.failedRespawns - before.failedRespawns
            if delta > 0 {
                #expect(delta == 1 && step.notes.contains(.respawnFailed(count: after.failedRespawns, verdict: obs.verdict)), where_)
                // Only a respawn can fail, and only by dying or hanging on its own or not coming up.
                #expect(before.respawnedAt != nil || (before.unprovenRespawnAt != nil && (obs.verdict == .dead || obs.verdict == .hung)), where_)
            } else if delta < 0 {
                #expect(after.failedRespawns == 0 && obs.verdict == .healthy, where_)
                let since = try #require(after.healthySince)
                #expect(now - since >= policy.stableAfter, where_)
            } else {
                #expect(!step.notes.contains { $0.isRespawnFailed }, where_)
            }
            if after.circuit == .closed { #expect(after.failedRespawns < policy.circuitLimit, where_) }

            // No thrashing: while the circuit is closed, no more than circuitLimit respawns in a
            // row without the bridge ever being seen up in between (each of them failed).
            if obs.verdict == .healthy || obs.verdict == .drifted || obs.verdict == .bloated { respawnsWithoutUp = 0 }
            if step.action == .respawn && before.circuit == .closed {
                respawnsWithoutUp += 1
                #expect(respawnsWithoutUp <= policy.circuitLimit, where_)
            }

            // Reminders are spaced by reminderEvery (or come at once at a start the circuit stops).
            for note in step.notes where note.isReminder {
                if let last = lastReminder, before.startCheck == nil { #expect(now - last >= policy.reminderEvery, where_) }
                lastReminder = now
            }
            if step.notes.contains(where: { $0.isCircuitOpened }) { lastReminder = now }

            // A recovery ends the incident and reports it whole: from its first observation to the
            // first healthy probe of the bridge that stayed; never while a respawn is on probation.
            for note in step.notes {
                if case .recovered(let took, let verdict, let tier, let since) = note {
                    let healthySince = try #require(after.healthySince)
                    #expect(since == before.incidentSince && took == healthySince - since, where_)
                    #expect(verdict == before.incidentVerdict, where_)
                    #expect(tier == max(before.incidentTier ?? 0, after.displayTier), where_)
                    #expect(before.unprovenRespawnAt == nil || now - healthySince >= policy.stableAfter, where_)
                    #expect(after.incidentSince == nil, where_)
                }
            }
            state = after
        }
    }

    @Test("The random sequences reach what the invariants are about (starts, probation, unkillable)")
    func coverage() throws {
        var seen: [String: Int] = [:]
        for (policyIndex, policy) in Self.policies.enumerated() {
            for seed in 0..<40 {
                let seed = UInt64(seed) &* 0x1234_5678_9ABC_DEF1 &+ UInt64(policyIndex)
                var rng = SplitMix64(seed: seed ^ 0xA5A5)
                var state = HealState()
                var now = t0
                for (obs, dt) in Self.sequence(seed: seed, length: 400, policy: policy) {
                    now = now + dt
                    switch Int.random(in: 0..<40, using: &rng) {
                    case 0: state = HealMachine.runnerStarted(state, pairStart: Bool.random(using: &rng), now: now)
                    case 1: state = HealMachine.stopped(state)
                    default: break
                    }
                    let wasOnProbation = state.onProbation
                    let step = HealMachine.step(obs, state: state, now: now, policy: policy)
                    if step.action == .start { seen["start", default: 0] += 1 }
                    for n in step.notes {
                        if n.isStarted { seen["started", default: 0] += 1 }
                        if n.isUnkillable { seen["unkillable", default: 0] += 1 }
                        if n.isRespawnFailed { seen["respawn-failed", default: 0] += 1 }
                        if n.isRespawnFailed && wasOnProbation { seen["failed on probation", default: 0] += 1 }
                        if n.isRecovered && wasOnProbation { seen["recovered after probation", default: 0] += 1 }
                        if n.isCircuitOpened { seen["circuit-open", default: 0] += 1 }
                    }
                    state = step.state
                }
            }
        }
        for what in ["start", "started", "unkillable", "respawn-failed", "failed on probation", "recovered after probation", "circuit-open"] {
            #expect(seen[what, default: 0] >= 1, "\(what): \(seen)")
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
        try d.repeatUntil("the circuit opens (seed \(seed))", { $0.state.circuit == .open }) { d in
            let v: Verdict = Bool.random(using: &rng) ? .dead : .missing
            try d.probe(v, lockFree: Int.random(in: 0..<3, using: &rng) != 0,
                        after: .milliseconds(Double(Int.random(in: 1...3000, using: &rng))))
        }
        #expect(d.actions.filter { $0 == .respawn }.count == policy.circuitLimit, "seed \(seed)")
        #expect(d.now - t0 < policy.circuitCooloff)
    }
}
