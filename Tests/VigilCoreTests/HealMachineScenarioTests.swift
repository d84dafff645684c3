import Foundation
import Testing
import VigilCore

/// Whole incidents, probe by probe. Every scenario runs twice: once in memory, once with the
/// state going through JSON before every probe (a runner killed and restarted between any two
/// probes must continue exactly where the last one stopped).
@Suite("Heal machine: incidents")
struct HealMachineScenarioTests {
    let p = testPolicy
    let tick = TimeSpan.seconds(1)

    // MARK: First tier by verdict

    @Test("The first tier depends on the verdict", arguments: [false, true], Verdict.allCases)
    func firstTier(persist: Bool, verdict: Verdict) throws {
        var d = Driver(persist: persist)
        try d.probe(.healthy)
        let action = try d.probe(verdict, after: tick)
        let expected: [Verdict: (HealAction, Int)] = [
            .healthy: (.none, 0), .drifted: (.restartMarker, 1), .bloated: (.restartMarker, 1),
            .hung: (.terminate, 2), .dead: (.respawn, 3), .missing: (.respawn, 3),
        ]
        #expect(action == expected[verdict]!.0)
        #expect(d.state.tier == expected[verdict]!.1)
        if verdict != .healthy {
            #expect(d.lastNotes == [.acted(tier: expected[verdict]!.1, verdict: verdict, action: action)])
            #expect(d.state.incidentVerdict == verdict)
            #expect(d.state.incidentSince == d.now)
        }
    }

    @Test("A hung bridge never gets a restart marker, even when it hangs during tier 1", arguments: [false, true])
    func hungSkipsTierOne(persist: Bool) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.hung) == .terminate)
        var d2 = Driver(persist: persist)
        #expect(try d2.probe(.drifted) == .restartMarker)
        // Its loop stops beating before tier 1's cooldown is over: SIGTERM at once.
        #expect(try d2.probe(.hung, after: tick) == .terminate)
        #expect(d2.state.tier == 2)
        #expect(!d.actions.contains(.restartMarker))
    }

    // MARK: The ladder

    @Test("Drifted: marker, SIGTERM after the cooldown, SIGKILL after the term grace, respawn once dead, recovered once proven",
          arguments: [false, true])
    func fullLadder(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.healthy)
        let start = d.now + tick
        #expect(try d.probe(.drifted, after: tick) == .restartMarker)
        // Tier 1 gets its whole cooldown.
        #expect(try d.probe(.drifted, times: 9, every: tick) == Array(repeating: .none, count: 9))
        #expect(try d.probe(.drifted, after: p.cooldown - .seconds(9) - oneNanosecond) == .none)
        #expect(try d.probe(.drifted, after: oneNanosecond) == .terminate)
        #expect(d.state.tier == 2)
        // Tier 2 gets the term grace, not the cooldown.
        #expect(try d.probe(.drifted, after: p.termGrace - oneNanosecond) == .none)
        #expect(try d.probe(.drifted, after: oneNanosecond) == .kill)
        #expect(d.state.tier == 3)
        // The kill takes: the bridge is dead but still holds its lock for a moment.
        #expect(try d.probe(.dead, lockFree: false, after: tick) == .none)
        #expect(try d.probe(.dead, lockFree: true, after: tick) == .respawn)
        #expect(try d.probe(.hung, after: tick) == .none, "inside its start grace a new bridge is left alone")
        #expect(try d.probe(.healthy, after: tick) == .none)
        let up = d.now
        // On probation: tier 0, but the incident is not over (no recovery to announce yet).
        #expect(d.lastNotes.isEmpty)
        #expect(d.state.tier == 0 && d.state.onProbation && d.state.incidentSince == start)
        try d.probe(.healthy, after: p.stableAfter - oneNanosecond)
        #expect(d.lastNotes.isEmpty)
        try d.probe(.healthy, after: oneNanosecond)
        #expect(d.lastNotes == [.recovered(after: up - start, verdict: .drifted, tier: 3, since: start)])
        #expect(d.state.tier == 0)
        #expect(d.state.incidentSince == nil && d.state.tierSince == nil && d.state.killedAt == nil && d.state.respawnedAt == nil)
        #expect(d.state.unprovenRespawnAt == nil && d.state.incidentTier == nil)
        #expect(d.actions.filter { $0 != .none } == [.restartMarker, .terminate, .kill, .respawn])
        // Exactly one acted note per action, in order.
        let acted = d.notes.filter(\.isActed)
        #expect(acted == [
            .acted(tier: 1, verdict: .drifted, action: .restartMarker),
            .acted(tier: 2, verdict: .drifted, action: .terminate),
            .acted(tier: 3, verdict: .drifted, action: .kill),
            .acted(tier: 3, verdict: .dead, action: .respawn),
        ])
    }

    @Test("A restart marker that works: recovered at tier 1 with the time it took", arguments: [false, true])
    func markerWorks(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.healthy)
        #expect(try d.probe(.bloated, after: tick) == .restartMarker)
        let began = d.now
        try d.probe(.bloated, after: .milliseconds(300))
        #expect(try d.probe(.healthy, after: .milliseconds(450)) == .none)
        #expect(d.lastNotes == [.recovered(after: d.now - began, verdict: .bloated, tier: 1, since: began)])
        #expect(d.lastNotes == [.recovered(after: .milliseconds(750), verdict: .bloated, tier: 1, since: began)])
        // Only once.
        try d.probe(.healthy, after: tick)
        #expect(d.lastNotes.isEmpty)
        #expect(d.state.tier == 0)
    }

    @Test("Healthy again resets the tier: the next incident starts from its first tier", arguments: [false, true])
    func resetsToZero(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.hung)
        try d.probe(.hung, after: p.termGrace)
        #expect(d.state.tier == 3)
        try d.probe(.healthy, after: tick)
        #expect(d.state.tier == 0)
        #expect(try d.probe(.drifted, after: tick) == .restartMarker)
        #expect(d.state.tier == 1)
    }

    @Test("A bridge that dies after SIGTERM is respawned at the next probe, without waiting for the grace",
          arguments: [false, true])
    func deadAfterTerm(persist: Bool) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.hung) == .terminate)
        #expect(try d.probe(.dead, after: .milliseconds(100)) == .respawn)
        #expect(d.state.tier == 3)
        #expect(d.lastNotes == [.acted(tier: 3, verdict: .dead, action: .respawn)])
    }

    @Test("SIGSTOP: the stopped bridge's beat on its way out is no recovery; one incident, recovered once its replacement proved stable",
          arguments: [false, true])
    func stoppedBridgeBeatsOnItsWayOut(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.healthy, bridge: "old")
        #expect(try d.probe(.hung, bridge: "old", after: .seconds(3)) == .terminate)
        let began = d.now
        #expect(d.state.terminatedBridge == "old")
        // SIGCONT lets it run: it beats once before it acts on SIGTERM. Not healthy again.
        #expect(try d.probe(.healthy, bridge: "old", after: .milliseconds(2)) == .none)
        #expect(d.state.tier == 2 && d.state.incidentSince == began && d.state.healthySince == nil)
        #expect(!d.notes.contains { $0.isRecovered })
        // It removed its PID file and exits (lock still held), then is gone: the same incident's tier 3.
        #expect(try d.probe(.missing, lockFree: false, after: .milliseconds(8)) == .none)
        #expect(d.state.tier == 3 && d.state.incidentSince == began)
        #expect(try d.probe(.missing, after: .milliseconds(15)) == .respawn)
        #expect(try d.probe(.healthy, bridge: "new", after: .milliseconds(25)) == .none)
        let up = d.now
        #expect(!d.notes.contains { $0.isRecovered }, "on probation")
        try d.probe(.healthy, bridge: "new", after: p.stableAfter)
        let recovered = d.notes.filter(\.isRecovered)
        #expect(recovered == [.recovered(after: up - began, verdict: .hung, tier: 3, since: began)], "one incident, one recovery")
        #expect(d.state.terminatedBridge == nil && d.state.failedRespawns == 0)
        #expect(d.actions.filter { $0 != .none } == [.terminate, .respawn])
    }

    @Test("The bridge tier 2 asked to exit: beating on past term grace is SIGKILL; another bridge healthy is a recovery",
          arguments: [false, true])
    func terminatedBridgeThatStays(persist: Bool) throws {
        // It ignores SIGTERM and beats on: tier 2's window ends as for any live bridge.
        var d = Driver(persist: persist)
        #expect(try d.probe(.hung, bridge: "old") == .terminate)
        #expect(try d.probe(.healthy, bridge: "old", times: 3, every: p.termGrace * 0.25) == [.none, .none, .none])
        #expect(try d.probe(.healthy, bridge: "old", after: p.termGrace * 0.25 - oneNanosecond) == .none)
        #expect(try d.probe(.healthy, bridge: "old", after: oneNanosecond) == .kill)
        #expect(d.lastNotes == [.acted(tier: 3, verdict: .healthy, action: .kill)])
        #expect(try d.probe(.dead, after: tick) == .respawn)
        #expect(!d.notes.contains { $0.isRecovered })
        // Another process healthy in its place (someone started one), or a probe that names no
        // process: healthy again, at once.
        for other in ["someone else's", nil] as [String?] {
            var e = Driver(persist: persist)
            #expect(try e.probe(.hung, bridge: "old") == .terminate)
            try e.probe(.healthy, bridge: other, after: tick)
            #expect(e.state.tier == 0 && e.lastNotes.contains { $0.isRecovered })
        }
        // Back at tier 0 the name is forgotten: the same process healthy later is just healthy.
        var f = Driver(persist: persist)
        #expect(try f.probe(.hung, bridge: "old") == .terminate)
        try f.probe(.healthy, bridge: "new", after: tick)
        #expect(f.state.terminatedBridge == nil)
        #expect(try f.probe(.hung, bridge: "new", after: tick) == .terminate)
        #expect(f.state.terminatedBridge == "new")
    }

    @Test("Respawn waits while the dead bridge's lock is held, then happens at once", arguments: [false, true])
    func respawnWaitsForLock(persist: Bool) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.dead, lockFree: false) == .none)
        #expect(d.state.tier == 3)
        // However long it takes: never a respawn while the lock is held, never a second action.
        #expect(try d.probe(.dead, lockFree: false, times: 50, every: .seconds(5)).allSatisfy { $0 == .none })
        #expect(d.state.failedRespawns == 0)
        #expect(try d.probe(.dead, lockFree: true, after: .milliseconds(10)) == .respawn)
    }

    @Test("A kill that has not taken is repeated only after the cooldown", arguments: [false, true])
    func killRepeats(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.hung)
        #expect(try d.probe(.hung, after: p.termGrace) == .kill)
        #expect(try d.probe(.hung, after: p.cooldown - oneNanosecond) == .none)
        #expect(try d.probe(.hung, after: oneNanosecond) == .kill)
        #expect(try d.probe(.hung, after: tick) == .none)
        #expect(try d.probe(.dead, after: tick) == .respawn)
    }

    // MARK: Respawns that fail

    @Test("A respawned bridge that dies inside its start grace is a failed respawn, and is respawned at once",
          arguments: [false, true])
    func respawnDies(persist: Bool) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.dead) == .respawn)
        #expect(try d.probe(.dead, after: .milliseconds(50)) == .respawn)
        #expect(d.state.failedRespawns == 1)
        #expect(d.lastNotes == [.respawnFailed(count: 1, verdict: .dead),
                                .acted(tier: 3, verdict: .dead, action: .respawn)])
    }

    @Test("A respawned bridge that stays unhealthy past its start grace is a failed respawn",
          arguments: [false, true], aliveUnhealthy)
    func respawnStaysUnhealthy(persist: Bool, verdict: Verdict) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.dead) == .respawn)
        #expect(try d.probe(verdict, after: p.startGrace - oneNanosecond) == .none)
        #expect(d.state.failedRespawns == 0)
        #expect(try d.probe(verdict, after: oneNanosecond) == .kill)
        #expect(d.state.failedRespawns == 1)
        #expect(d.lastNotes.first == .respawnFailed(count: 1, verdict: verdict))
    }

    @Test("A respawned bridge that has not written its PID file yet gets its start grace", arguments: [false, true])
    func respawnNotYetStamped(persist: Bool) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.missing) == .respawn)
        // The new bridge runs and holds its lock, but its PID file is not there yet. Treating
        // that as a failure would spawn a second bridge the moment the lock is free.
        #expect(try d.probe(.missing, lockFree: false, after: .milliseconds(5)) == .none)
        #expect(try d.probe(.missing, lockFree: true, after: .milliseconds(5)) == .none)
        #expect(d.state.failedRespawns == 0)
        #expect(try d.probe(.healthy, after: .milliseconds(50)) == .none)
        #expect(d.state.failedRespawns == 0)
        // One that never shows up fails when its start grace is over.
        var e = Driver(persist: persist)
        #expect(try e.probe(.missing) == .respawn)
        #expect(try e.probe(.missing, after: p.startGrace - oneNanosecond) == .none)
        #expect(try e.probe(.missing, after: oneNanosecond) == .respawn)
        #expect(e.state.failedRespawns == 1)
    }

    // MARK: Circuit breaker

    @Test("Crash loop: the circuit opens after exactly circuitLimit failed respawns",
          arguments: [false, true], [1, 2, 3, 5])
    func crashLoop(persist: Bool, limit: Int) throws {
        var policy = p
        policy.circuitLimit = limit
        var d = Driver(policy: policy, persist: persist)
        try d.probe(.healthy)
        // The bridge dies at every start; the runner probes every 100 ms.
        for _ in 0..<200 { try d.probe(.dead, after: .milliseconds(100)) }
        #expect(d.actions.filter { $0 == .respawn }.count == limit)
        #expect(d.actions.filter { $0 != .none && $0 != .respawn }.isEmpty)
        #expect(d.notes.filter(\.isCircuitOpened) == [.circuitOpened(failures: limit)])
        #expect(d.notes.filter(\.isRespawnFailed) == (1...limit).map { .respawnFailed(count: $0, verdict: .dead) })
        #expect(d.state.circuit == .open)
        #expect(d.state.displayTier == 4)
        // It opened on the probe right after the last respawn, not a tick later.
        let lastRespawn = try #require(d.actions.lastIndex(of: .respawn))
        #expect(d.steps[lastRespawn + 1].notes.contains(.circuitOpened(failures: limit)))
    }

    @Test("Crash loop with slow deaths (each respawn dies after its start grace) also opens at the limit",
          arguments: [false, true])
    func crashLoopSlow(persist: Bool) throws {
        var d = Driver(persist: persist)
        for _ in 0..<300 { try d.probe(.missing, after: .seconds(1)) }
        #expect(d.actions.filter { $0 == .respawn }.count == p.circuitLimit)
        #expect(d.state.circuit == .open)
    }

    @Test("A flapping bridge (healthy for less than stableAfter, then dead) opens the circuit", arguments: [false, true])
    func flapping(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.healthy)
        for _ in 0..<10 {
            try d.probe(.dead, after: tick)
            for _ in 0..<20 { try d.probe(.healthy, after: tick) } // 20 s < stableAfter (30 s)
        }
        #expect(d.actions.filter { $0 == .respawn }.count == p.circuitLimit)
        #expect(d.notes.filter(\.isCircuitOpened) == [.circuitOpened(failures: p.circuitLimit)])
        #expect(d.state.circuit == .open)
        let opened = try #require(d.steps.firstIndex { $0.notes.contains { $0.isCircuitOpened } })
        #expect(!d.steps[...opened].flatMap(\.notes).contains { $0.isRecovered }, "a flapping bridge is never announced as recovered")
    }

    @Test("A flapping bridge is one incident: no recovery between failed respawns", arguments: [false, true])
    func flappingIsOneIncident(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.healthy)
        #expect(try d.probe(.dead, after: tick) == .respawn)
        let began = d.now
        // Beats once and dies, twice: failed respawns, told as such, never as "healthy again".
        for n in 1...2 {
            try d.probe(.healthy, after: .milliseconds(30))
            #expect(try d.probe(.dead, after: .milliseconds(30)) == .respawn)
            #expect(d.lastNotes.first == .respawnFailed(count: n, verdict: .dead))
        }
        #expect(!d.notes.contains { $0.isRecovered })
        #expect(d.state.incidentSince == began)
        // The third stays: one recovery, once it proved stable, with the whole downtime.
        try d.probe(.healthy, after: .milliseconds(30))
        let up = d.now
        try d.probe(.healthy, times: 29, every: tick)
        #expect(!d.notes.contains { $0.isRecovered })
        try d.probe(.healthy, after: p.stableAfter - .seconds(29))
        #expect(d.notes.filter(\.isRecovered) == [.recovered(after: up - began, verdict: .dead, tier: 3, since: began)])
        #expect(d.state.failedRespawns == 0)
    }

    @Test("A bridge that stays healthy for stableAfter resets the failure count", arguments: [false, true])
    func stableResets(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.dead)
        try d.probe(.dead, after: tick) // failed 1, respawn
        try d.probe(.dead, after: tick) // failed 2, respawn
        #expect(d.state.failedRespawns == 2)
        try d.probe(.healthy, after: tick)
        try d.probe(.healthy, after: p.stableAfter - oneNanosecond)
        #expect(d.state.failedRespawns == 2)
        #expect(d.state.unprovenRespawnAt != nil)
        try d.probe(.healthy, after: oneNanosecond)
        #expect(d.state.failedRespawns == 0)
        #expect(d.state.unprovenRespawnAt == nil)
        // A new crash loop gets the full limit again.
        for _ in 0..<20 { try d.probe(.dead, after: tick) }
        let respawnsAfterReset = d.actions.suffix(20).filter { $0 == .respawn }.count
        #expect(respawnsAfterReset == p.circuitLimit)
    }

    @Test("Open circuit: no action, one circuitOpened, reminders every reminderEvery", arguments: [false, true])
    func openCircuitIsQuiet(persist: Bool) throws {
        var d = try openedCircuit(persist: persist)
        let opened = try #require(d.state.circuitOpenedAt)
        let before = d.steps.count
        // Probe every second until just before the cool-off, with every kind of verdict and lock.
        var i = 0
        while d.now + tick < opened + p.circuitCooloff {
            let v = unhealthyVerdicts[i % unhealthyVerdicts.count]
            #expect(try d.probe(v, lockFree: i % 2 == 0, after: tick) == .none)
            i += 1
        }
        let later = d.steps[before...]
        #expect(later.allSatisfy { $0.action == .none })
        #expect(!later.flatMap(\.notes).contains { $0.isCircuitOpened })
        let reminders = later.flatMap(\.notes).filter(\.isReminder)
        // 600 s cool-off, 120 s reminders: at 120, 240, 360, 480 s (600 is the half-open attempt).
        #expect(reminders == [120, 240, 360, 480].map { .circuitReminder(openFor: .seconds($0)) })
        #expect(d.state.circuit == .open)
    }

    @Test("Half-open after the cool-off: exactly one tier-3 attempt; failure reopens", arguments: [false, true])
    func halfOpenFails(persist: Bool) throws {
        var d = try openedCircuit(persist: persist)
        let opened = try #require(d.state.circuitOpenedAt)
        try d.probe(.dead, after: p.circuitCooloff - oneNanosecond - (d.now - opened))
        #expect(d.steps.last?.action == HealAction.none)
        #expect(try d.probe(.dead, after: oneNanosecond) == .respawn)
        #expect(d.state.circuit == .halfOpen)
        #expect(d.lastNotes == [.circuitHalfOpen, .acted(tier: 3, verdict: .dead, action: .respawn)])
        // The attempt dies: open again, and quiet for another full cool-off.
        #expect(try d.probe(.dead, after: tick) == .none)
        #expect(d.state.circuit == .open)
        #expect(d.lastNotes == [.respawnFailed(count: p.circuitLimit + 1, verdict: .dead),
                                .circuitOpened(failures: p.circuitLimit + 1)])
        let reopened = d.now
        while d.now + tick < reopened + p.circuitCooloff {
            #expect(try d.probe(.dead, after: tick) == .none)
        }
        #expect(try d.probe(.dead, after: reopened + p.circuitCooloff - d.now) == .respawn)
        #expect(d.state.circuit == .halfOpen)
    }

    @Test("Half-open attempt on a live bridge: kill, then respawn once dead, one attempt in all", arguments: [false, true])
    func halfOpenKillsFirst(persist: Bool) throws {
        var d = try openedCircuit(persist: persist)
        try d.probe(.hung, after: p.circuitCooloff)
        #expect(d.steps.last?.action == .kill)
        #expect(d.state.circuit == .halfOpen)
        #expect(try d.probe(.dead, lockFree: false, after: tick) == .none)
        #expect(try d.probe(.dead, after: tick) == .respawn)
        #expect(try d.probe(.dead, after: tick) == .none)
        #expect(d.state.circuit == .open)
        #expect(d.actions.suffix(4) == [.kill, .none, .respawn, .none])
    }

    @Test("Half-open attempt that succeeds closes the circuit after stableAfter", arguments: [false, true])
    func halfOpenSucceeds(persist: Bool) throws {
        var d = try openedCircuit(persist: persist)
        #expect(try d.probe(.dead, after: p.circuitCooloff) == .respawn)
        try d.probe(.healthy, after: tick)
        #expect(d.state.circuit == .halfOpen)
        #expect(d.lastNotes.isEmpty, "on probation: not recovered yet")
        try d.probe(.healthy, after: p.stableAfter - oneNanosecond)
        #expect(d.state.circuit == .halfOpen)
        try d.probe(.healthy, after: oneNanosecond)
        #expect(d.state.circuit == .closed)
        #expect(d.lastNotes.count == 2 && d.lastNotes[0].isRecovered && d.lastNotes[1] == .circuitClosed)
        #expect(d.state.failedRespawns == 0 && d.state.circuitOpenedAt == nil && d.state.lastReminderAt == nil)
        // Healed and closed: the next incident starts at its first tier with a full budget.
        #expect(try d.probe(.drifted, after: tick) == .restartMarker)
    }

    @Test("Half-open attempt whose bridge flaps (healthy shorter than stableAfter) reopens", arguments: [false, true])
    func halfOpenFlaps(persist: Bool) throws {
        var d = try openedCircuit(persist: persist)
        #expect(try d.probe(.dead, after: p.circuitCooloff) == .respawn)
        try d.probe(.healthy, after: tick)
        try d.probe(.healthy, after: p.stableAfter - .seconds(2))
        #expect(try d.probe(.dead, after: tick) == .none)
        #expect(d.state.circuit == .open)
    }

    @Test("A bridge that turns healthy on its own while the circuit is open is not disturbed", arguments: [false, true])
    func healthyWhileOpen(persist: Bool) throws {
        var d = try openedCircuit(persist: persist)
        let began = try #require(d.state.incidentSince)
        try d.probe(.healthy, after: .seconds(50))
        #expect(d.lastNotes == [.recovered(after: d.now - began, verdict: .dead, tier: 4, since: began)])
        #expect(d.state.tier == 0)
        #expect(d.state.circuit == .open, "the circuit closes only once the bridge proved stable")
        try d.probe(.healthy, after: p.stableAfter)
        #expect(d.state.circuit == .closed)
        #expect(d.lastNotes == [.circuitClosed])
    }

    // MARK: A start is not an incident

    @Test("Cold start: the first bridge is started, not healed; told as started, never as recovered",
          arguments: [false, true], [false, true])
    func coldStart(persist: Bool, pairStart: Bool) throws {
        var d = Driver(persist: persist)
        try d.runnerStarts(pairStart: pairStart)
        #expect(try d.probe(.missing) == .start)
        #expect(d.lastNotes == [.starting])
        let spawned = d.now
        // Not stamped yet (the runner sees its child alive without a beat), then up.
        #expect(try d.probe(.hung, after: .milliseconds(5)) == .none)
        #expect(try d.probe(.missing, after: .milliseconds(5)) == .none)
        #expect(try d.probe(.healthy, after: .milliseconds(40)) == .none)
        #expect(d.lastNotes == [.started(since: spawned, after: .milliseconds(50))])
        try d.probe(.healthy, times: 40, every: tick)
        #expect(d.notes == [.starting, .started(since: spawned, after: .milliseconds(50))])
        #expect(d.state == { var x = HealState(); x.healthySince = spawned + .milliseconds(50); return x }())
        // The next death is an incident like any other.
        #expect(try d.probe(.dead, after: tick) == .respawn)
        #expect(d.state.failedRespawns == 0)
    }

    @Test("The start check waits for a dying bridge's lock, and is not a start when there is something to continue",
          arguments: [false, true])
    func startCheck(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.runnerStarts()
        #expect(try d.probe(.dead, lockFree: false) == .none)
        #expect(try d.probe(.dead, lockFree: false, after: tick) == .none)
        #expect(try d.probe(.dead, lockFree: true, after: tick) == .start)
        // A relaunched runner (not the pair's first) finds the bridge dead, its PID file left by a
        // crash while no runner watched: an incident, healed at tier 3 — not a start.
        var r = Driver(persist: persist)
        try r.probe(.healthy)
        try r.runnerStarts(pairStart: false, after: tick)
        #expect(try r.probe(.dead, after: tick) == .respawn)
        #expect(r.state.incidentOpen && r.state.startedAt == nil)
        #expect(r.lastNotes.contains { if case .acted(tier: 3, verdict: .dead, action: .respawn) = $0 { return true }; return false })
        // But a missing one (it exited cleanly) at a relaunch is started, as at the pair's start.
        var m = Driver(persist: persist)
        try m.runnerStarts(pairStart: false)
        #expect(try m.probe(.missing) == .start)
        // A runner restarted (exit 42) beside a live bridge: nothing to start, nothing told.
        var e = Driver(persist: persist)
        try e.probe(.healthy)
        try e.runnerStarts(pairStart: false, after: tick)
        #expect(try e.probe(.healthy, after: tick) == .none)
        #expect(e.notes.isEmpty && e.state.startCheck == nil)
        // A runner killed mid-escalation: the next one continues the incident.
        var f = Driver(persist: persist)
        try f.probe(.hung)
        try f.probe(.hung, after: p.termGrace) // kill
        try f.probe(.dead, lockFree: false, after: tick)
        try f.runnerStarts(pairStart: false, after: tick)
        #expect(try f.probe(.dead, after: tick) == .respawn)
        #expect(f.lastNotes == [.acted(tier: 3, verdict: .dead, action: .respawn)])
        // Restarted while its start was under way: the start goes on, no second bridge.
        var g = Driver(persist: persist)
        try g.runnerStarts()
        #expect(try g.probe(.missing) == .start)
        try g.runnerStarts(pairStart: false, after: .milliseconds(10))
        #expect(try g.probe(.missing, after: .milliseconds(10)) == .none)
        #expect(try g.probe(.healthy, after: .milliseconds(10)) == .none)
        #expect(g.lastNotes.first?.isStarted == true)
    }

    @Test("A start whose bridge dies or does not come up is an incident, not a failed respawn", arguments: [false, true], [Verdict.dead, .missing, .hung])
    func startFails(persist: Bool, verdict: Verdict) throws {
        var d = Driver(persist: persist)
        try d.runnerStarts()
        #expect(try d.probe(.missing) == .start)
        let within: TimeSpan = verdict == .dead ? .milliseconds(50) : p.startGrace
        let expected: HealAction = verdict == .hung ? .terminate : .respawn
        if verdict != .dead { #expect(try d.probe(verdict, after: within - oneNanosecond) == .none) }
        #expect(try d.probe(verdict, after: verdict == .dead ? within : oneNanosecond) == expected)
        #expect(d.state.failedRespawns == 0 && d.state.incidentVerdict == verdict && d.state.startedAt == nil)
        #expect(!d.notes.contains { $0.isRespawnFailed || $0.isStarted })
    }

    @Test("Crash loop from the very start: one start, then the circuit after exactly circuitLimit failed respawns",
          arguments: [false, true], [1, 3])
    func crashLoopFromStart(persist: Bool, limit: Int) throws {
        var policy = p
        policy.circuitLimit = limit
        var d = Driver(policy: policy, persist: persist)
        try d.runnerStarts()
        for _ in 0..<100 { try d.probe(.dead, after: .milliseconds(100)) }
        #expect(d.actions.filter { $0 == .start }.count == 1)
        #expect(d.actions.filter { $0 == .respawn }.count == limit)
        #expect(d.notes.filter(\.isRespawnFailed).count == limit)
        #expect(d.notes.filter(\.isCircuitOpened) == [.circuitOpened(failures: limit)])
    }

    @Test("Six stop/start cycles within 20 s: circuit closed, no failed respawn, no heal", arguments: [false, true])
    func stopStartCycles(persist: Bool) throws {
        var d = Driver(persist: persist)
        let began = d.now
        for _ in 0..<6 {
            try d.runnerStarts(pairStart: true, after: .milliseconds(500))
            #expect(try d.probe(.missing) == .start)
            try d.probe(.hung, after: .milliseconds(20))
            try d.probe(.healthy, after: .milliseconds(30))
            try d.probe(.healthy, times: 20, every: .milliseconds(100))
            // vigil stop: the bridge exits cleanly (PID file removed), the runner records the stop.
            try d.probe(.missing, after: .milliseconds(100))
            try d.stops()
        }
        #expect(d.now - began < .seconds(20))
        #expect(d.state.circuit == .closed && d.state.failedRespawns == 0)
        #expect(d.actions.filter { $0 == .start }.count == 6)
        #expect(d.notes.filter(\.isStarted).count == 6)
        #expect(!d.notes.contains { $0.isRespawnFailed || $0.isRecovered || $0.isCircuitOpened })
    }

    @Test("A stop abandons a respawn on probation: the next start does not count it as failed (heal.json kept across)",
          arguments: [false, true], [false, true])
    func stopDuringProbation(persist: Bool, pairStart: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.healthy)
        for _ in 0..<6 {
            // kill -9 → respawn → up, on probation; then stopped before it proved stable.
            #expect(try d.probe(.dead, after: tick) == .respawn)
            try d.probe(.healthy, after: .milliseconds(50))
            #expect(d.state.onProbation)
            try d.probe(.missing, after: .milliseconds(500))
            try d.stops()
            #expect(!d.state.incidentOpen && d.state.unprovenRespawnAt == nil && d.state.startedAt == nil)
            try d.runnerStarts(pairStart: pairStart, after: .milliseconds(500))
            #expect(try d.probe(.missing) == .start)
            try d.probe(.healthy, after: .milliseconds(50))
        }
        #expect(d.state.failedRespawns == 0 && d.state.circuit == .closed)
        #expect(!d.notes.contains { $0.isRespawnFailed || $0.isCircuitOpened })
        // The abandoned incidents were neither recovered nor failed.
        #expect(!d.notes.contains { $0.isRecovered })
    }

    @Test("Failures and an open circuit survive a stop; the start then waits for the cool-off or a reset",
          arguments: [false, true])
    func openCircuitSurvivesStop(persist: Bool) throws {
        var d = try openedCircuit(persist: persist)
        try d.stops(after: tick)
        try d.runnerStarts(after: tick)
        #expect(d.state.circuit == .open && d.state.failedRespawns == p.circuitLimit)
        #expect(try d.probe(.missing) == .none)
        #expect(d.lastNotes.count == 1 && d.lastNotes[0].isReminder)
        // A half-open attempt interrupted by a stop falls back to open.
        var e = try openedCircuit(persist: persist)
        try e.probe(.dead, after: p.circuitCooloff)
        #expect(e.state.circuit == .halfOpen)
        try e.stops()
        #expect(e.state.circuit == .open && e.state.respawnedAt == nil)
    }

    // MARK: Not failed respawns

    @Test("A respawned bridge that exits cleanly (missing after it was up) has not failed", arguments: [false, true])
    func cleanExitIsNoFailure(persist: Bool) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.dead) == .respawn)
        for _ in 0..<10 {
            try d.probe(.healthy, after: .milliseconds(50))
            #expect(d.state.onProbation)
            // Someone sent it SIGTERM: it removed its PID file and exited.
            #expect(try d.probe(.missing, after: .milliseconds(50)) == .respawn)
        }
        #expect(d.state.failedRespawns == 0 && d.state.circuit == .closed)
        // Missing before it ever came up, past its start grace, has failed.
        var e = Driver(persist: persist)
        #expect(try e.probe(.dead) == .respawn)
        #expect(try e.probe(.missing, after: p.startGrace) == .respawn)
        #expect(e.state.failedRespawns == 1)
    }

    @Test("Tier 2 on a respawn on probation: its clean exit, or the kill after, is no failed respawn", arguments: [false, true], [false, true])
    func watchdogCausedExit(persist: Bool, ignoresTerm: Bool) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.dead) == .respawn)
        try d.probe(.healthy, after: tick)
        // Still on probation; it drifts and its marker does not work: tier 2.
        #expect(try d.probe(.drifted, after: tick) == .restartMarker)
        #expect(try d.probe(.drifted, after: p.cooldown) == .terminate)
        if ignoresTerm {
            #expect(try d.probe(.drifted, after: p.termGrace) == .kill)
            #expect(try d.probe(.dead, after: .milliseconds(10)) == .respawn)
        } else {
            #expect(try d.probe(.missing, after: .milliseconds(10)) == .respawn)
        }
        #expect(d.state.failedRespawns == 0)
        #expect(!d.notes.contains { $0.isRespawnFailed })
    }

    // MARK: Stuck in uninterruptible sleep

    @Test("Two SIGKILLs that do not take open the circuit as unkillable; no third kill", arguments: [false, true])
    func unkillable(persist: Bool) throws {
        var d = Driver(persist: persist)
        #expect(try d.probe(.hung) == .terminate)
        #expect(try d.probe(.hung, after: p.termGrace) == .kill)
        #expect(try d.probe(.hung, after: p.cooldown - oneNanosecond) == .none)
        #expect(try d.probe(.hung, after: oneNanosecond) == .kill)
        #expect(try d.probe(.hung, after: p.cooldown - oneNanosecond) == .none)
        #expect(try d.probe(.hung, after: oneNanosecond) == .none)
        #expect(d.lastNotes == [.circuitOpened(failures: 0, reason: .unkillable)])
        #expect(d.state.circuit == .open && d.state.circuitReason == .unkillable && d.state.displayTier == 4)
        #expect(d.state.failedRespawns == 0, "no respawn failed")
        // Quiet until the cool-off, however long: it is never re-killed.
        let opened = d.now
        while d.now + tick < opened + p.circuitCooloff { #expect(try d.probe(.hung, after: tick) == .none) }
        #expect(d.actions.filter { $0 == .kill }.count == 2)
        // Half-open: one more kill; when it does not take either, open again.
        #expect(try d.probe(.hung, after: opened + p.circuitCooloff - d.now) == .kill)
        #expect(d.state.circuit == .halfOpen)
        #expect(try d.probe(.hung, after: p.cooldown) == .none)
        #expect(d.state.circuit == .open)
        #expect(d.lastNotes == [.circuitOpened(failures: 0, reason: .unkillable)])
        // It ends at last (the mount came back): the next half-open respawns it.
        try d.probe(.dead, after: p.circuitCooloff)
        #expect(d.steps.last?.action == .respawn)
        try d.probe(.healthy, after: tick)
        try d.probe(.healthy, after: p.stableAfter)
        #expect(d.state.circuit == .closed && d.state.circuitReason == nil)
    }

    @Test("A kill that takes the second time is no unkillable bridge; nor are kills of different processes", arguments: [false, true])
    func secondKillTakes(persist: Bool) throws {
        var d = Driver(persist: persist)
        try d.probe(.hung)
        #expect(try d.probe(.hung, after: p.termGrace) == .kill)
        #expect(try d.probe(.hung, after: p.cooldown) == .kill)
        #expect(try d.probe(.dead, after: tick) == .respawn)
        #expect(d.state.circuit == .closed && d.state.kills == nil)
        // Its replacement hangs (a failed respawn) and gets its own two kills.
        try d.probe(.hung, after: p.startGrace)
        try d.probe(.hung, after: p.termGrace)
        #expect(d.state.circuit == .closed)
        #expect(!d.notes.contains { $0.isUnkillable })
    }

    // MARK: Persistence

    @Test("Killed mid-escalation: a new runner continues from heal.json at every step")
    func continuesAfterRestart() throws {
        // The same probe sequence, once in memory and once with a JSON round trip (and a fresh
        // decoder) before every step: identical actions, notes and states.
        let script: [(Verdict, Bool, TimeSpan)] = [
            (.healthy, true, .zero), (.drifted, true, .seconds(1)), (.drifted, true, .seconds(10)),
            (.hung, true, .seconds(2)), (.hung, true, .seconds(2)), (.dead, false, .seconds(1)),
            (.dead, true, .seconds(1)), (.dead, true, .seconds(1)), (.missing, true, .seconds(1)),
            (.dead, true, .seconds(1)), (.dead, true, .seconds(1)), (.dead, true, .seconds(130)),
            (.dead, true, .seconds(500)), (.healthy, true, .seconds(1)), (.healthy, true, .seconds(40)),
        ]
        var memory = Driver(persist: false)
        var disk = Driver(persist: true)
        for (v, lock, dt) in script {
            try memory.probe(v, lockFree: lock, after: dt)
            try disk.probe(v, lockFree: lock, after: dt)
        }
        #expect(memory.steps == disk.steps)
        #expect(memory.actions.filter { $0 != .none } == [.restartMarker, .terminate, .kill, .respawn, .respawn, .respawn, .respawn])
    }

    @Test("Every field of the heal state survives JSON")
    func codableRoundTrip() throws {
        var s = HealState()
        s.tier = 3
        s.tierSince = BootInstant(nanoseconds: 1)
        s.incidentSince = BootInstant(nanoseconds: 2)
        s.incidentVerdict = .bloated
        s.incidentTier = 4
        s.killedAt = BootInstant(nanoseconds: 3)
        s.kills = 2
        s.respawnedAt = BootInstant(nanoseconds: 4)
        s.unprovenRespawnAt = BootInstant(nanoseconds: Int64.max)
        s.failedRespawns = 7
        s.healthySince = BootInstant(nanoseconds: 6)
        s.circuit = .halfOpen
        s.circuitOpenedAt = BootInstant(nanoseconds: 8)
        s.lastReminderAt = BootInstant(nanoseconds: 9)
        s.circuitReason = .unkillable
        s.startCheck = BootInstant(nanoseconds: 10)
        s.startedAt = BootInstant(nanoseconds: 11)
        s.terminatedBridge = "12:34"
        #expect(try roundTrip(s) == s)
        // A heal.json from before these fields existed still decodes.
        let old = #"{"tier":3,"failedRespawns":1,"circuit":"closed","unprovenRespawnAt":5}"#
        let decoded = try JSONDecoder().decode(HealState.self, from: Data(old.utf8))
        #expect(decoded.tier == 3 && decoded.unprovenRespawnAt == BootInstant(nanoseconds: 5) && decoded.startCheck == nil)
        #expect(try roundTrip(HealState()) == HealState())
        let json = String(decoding: try JSONEncoder().encode(s), as: UTF8.self)
        #expect(json.contains(#""circuit":"half-open""#))
        #expect(Circuit.allRawValues == ["closed", "open", "half-open"])
    }

    // MARK: Helpers

    /// A crash loop that has just opened the circuit.
    func openedCircuit(persist: Bool) throws -> Driver {
        var d = Driver(persist: persist)
        try d.probe(.healthy)
        try d.repeatUntil("the circuit opens", atMost: 1000, { $0.state.circuit == .open }) { try $0.probe(.dead, after: .milliseconds(100)) }
        #expect(d.state.failedRespawns == p.circuitLimit)
        return d
    }
}

extension Circuit {
    static var allRawValues: [String] { [Circuit.closed, .open, .halfOpen].map(\.rawValue) }
}
