import Foundation
import Testing
import VigilCore

/// `MissionLifecycle` (docs/missions.md, "Lifecycle"): every phase × event, the scenarios an
/// agent relies on, and invariants over seeded random histories of a whole board of missions.
@Suite("Mission lifecycle: phase × event")
struct MissionLifecycleTableTests {
    static let events: [MissionEvent] = [
        .claimed, .shimNotStarted(reason: "spawn failed"),
        .exited(code: 0, signal: nil, reason: nil, stoppedFor: nil), .exited(code: 3, signal: nil, reason: nil, stoppedFor: nil),
        .exited(code: 143, signal: 15, reason: nil, stoppedFor: .timeout), .exited(code: 137, signal: 9, reason: nil, stoppedFor: .silence),
        .exited(code: 127, signal: nil, reason: "cannot start x", stoppedFor: nil), .resultCorrupt(why: "torn"),
        .shimDied(reason: "shim died", mayHaveStarted: true), .shimDied(reason: "never started", mayHaveStarted: false),
        .cancelRequested, .retryRequested,
    ]
    static let policies: [MissionPolicy] = [
        MissionPolicy(), MissionPolicy(maxAttempts: 1, retries: 2, atMostOnce: true), MissionPolicy(maxAttempts: 5, retries: 1),
    ]

    static func record(_ phase: MissionPhase, attempts: Int = 1, cancel: Bool = false, retried: Int = 0, mayHaveRun: Bool = false) -> MissionRecord {
        var r = MissionRecord()
        r.phase = phase
        r.attempts = phase == .pending ? attempts - 1 : attempts
        r.cancelRequested = cancel
        r.retried = retried
        r.mayHaveRun = mayHaveRun
        return r
    }

    /// The rules that hold in every cell of the table.
    @Test func everyCellKeepsTheRules() {
        var cells = 0
        for phase in MissionPhase.allCases {
            for cancel in [false, true] {
                for attempts in 1...3 {
                    for policy in Self.policies {
                        for event in Self.events {
                            let r = Self.record(phase, attempts: attempts, cancel: cancel && phase == .running)
                            cells += 1
                            guard let t = MissionLifecycle.apply(event, to: r, policy: policy, now: 1000) else {
                                // Nothing applies only to a stale actor: an attempt's end for a
                                // mission not running, a claim of one not pending, a retry of one
                                // not failed.
                                switch event {
                                case .claimed: #expect(phase != .pending)
                                case .retryRequested: #expect(phase != .failed || r.mayHaveRun)
                                case .cancelRequested: Issue.record("cancel always applies (\(phase))")
                                default: #expect(phase != .running, "\(event) on a running mission must apply")
                                }
                                continue
                            }
                            let n = t.record
                            let left = phase == .running && n.phase != .running
                            // The lock goes exactly when the running attempt ends.
                            #expect(t.actions.contains(.releaseLock) == left, "\(phase) \(event): lock \(t.actions)")
                            // A dead shim's leftovers are killed before anything else.
                            if case .shimDied = event { #expect(t.actions.first == .killLeftovers) }
                            // Attempts move by one at most, and only at claim or an uncounted end.
                            #expect(abs(n.attempts - r.attempts) <= 1)
                            if n.attempts > r.attempts { #expect(event == .claimed && t.actions.contains(.spawnShim(attempt: n.attempts))) }
                            // Final phases change only by an operator's retry of a failed mission.
                            if phase.isFinal && n != r { #expect(phase == .failed && event == .retryRequested) }
                            // Ended: a reason unless done; announced.
                            if left && n.phase.isFinal {
                                #expect((n.reason == nil) == (n.phase == .done))
                                #expect(t.actions.contains { if case .announce = $0 { return true } else { return false } })
                            }
                            // A cancel asked for is what a running mission becomes, whatever ended it, unless it succeeded.
                            if r.cancelRequested && left, event != .exited(code: 0, signal: nil, reason: nil, stoppedFor: nil) {
                                if case .exited(_, _, let reason?, _) = event { #expect(n.phase == .failed, "\(reason)") } else {
                                    #expect(n.phase == .cancelled, "\(event)")
                                }
                            }
                        }
                    }
                }
            }
        }
        #expect(cells == 5 * 2 * 3 * 3 * 12)
    }

    @Test func theCellsThatMatter() {
        let p = MissionPolicy()
        func apply(_ e: MissionEvent, _ r: MissionRecord, _ policy: MissionPolicy = MissionPolicy()) -> MissionTransition? {
            MissionLifecycle.apply(e, to: r, policy: policy, now: 1000, jitter: 1)
        }
        // claim
        let claimed = apply(.claimed, Self.record(.pending))!
        #expect(claimed.record.phase == .running && claimed.record.attempts == 1)
        #expect(claimed.actions == [.spawnShim(attempt: 1), .announce(.started(attempt: 1))])
        // success, failure, could not start
        #expect(apply(.exited(code: 0, signal: nil, reason: nil, stoppedFor: nil), Self.record(.running))!.record.phase == .done)
        let failed = apply(.exited(code: 3, signal: nil, reason: nil, stoppedFor: nil), Self.record(.running))!
        #expect(failed.record.phase == .failed && failed.record.reason == "exited with status 3" && failed.record.exitCode == 3)
        #expect(apply(.exited(code: 127, signal: nil, reason: "cannot start x", stoppedFor: nil), Self.record(.running), MissionPolicy(retries: 3))!
            .record.phase == .failed, "a command that cannot start is not retried")
        // timeout and silence say which
        let timedOut = apply(.exited(code: 143, signal: 15, reason: nil, stoppedFor: .timeout), Self.record(.running), MissionPolicy(timeout: .seconds(1)))!
        #expect(timedOut.record.reason == "timed out after 1s (killed by SIGTERM)", "\(timedOut.record.reason ?? "")")
        let silent = apply(.exited(code: 137, signal: 9, reason: nil, stoppedFor: .silence), Self.record(.running), MissionPolicy(silenceLimit: .seconds(600)))!
        #expect(silent.record.reason == "silent for 10m (killed by SIGKILL)", "\(silent.record.reason ?? "")")
        // cancel
        #expect(apply(.cancelRequested, Self.record(.pending))!.record.phase == .cancelled)
        let asked = apply(.cancelRequested, Self.record(.running))!
        #expect(asked.record.cancelRequested && asked.actions == [.signal(MissionLifecycle.sigterm)])
        #expect(apply(.cancelRequested, asked.record)!.actions.isEmpty, "asking twice signals nothing more")
        let cancelled = apply(.exited(code: 143, signal: 15, reason: nil, stoppedFor: .cancel), asked.record)!
        #expect(cancelled.record.phase == .cancelled && cancelled.record.reason == "cancelled by an operator (killed by SIGTERM)")
        #expect(apply(.exited(code: 0, signal: nil, reason: nil, stoppedFor: .cancel), asked.record)!.record.phase == .done,
                "finished before the signal took effect: it is done")
        // crash re-runs: counted, up to maxAttempts
        let crash = MissionEvent.shimDied(reason: "its shim ended without recording an exit status", mayHaveStarted: true)
        let requeued = apply(crash, Self.record(.running, attempts: 1))!
        #expect(requeued.record.phase == .pending && requeued.record.attempts == 1)
        #expect(requeued.record.reason == "attempt 1 of 3: its shim ended without recording an exit status; requeued")
        let gaveUp = apply(crash, Self.record(.running, attempts: 3))!
        #expect(gaveUp.record.phase == .failed && gaveUp.record.reason == "its shim ended without recording an exit status on attempt 3 of 3; giving up")
        let never = apply(.shimDied(reason: "never started", mayHaveStarted: false), Self.record(.running, attempts: 3))!
        #expect(never.record.phase == .pending && never.record.attempts == 2, "an attempt that never started is not counted")
        // at most once
        let once = MissionPolicy(atMostOnce: true)
        let interrupted = apply(crash, Self.record(.running, attempts: 1), once)!
        #expect(interrupted.record.phase == .failed && interrupted.record.mayHaveRun)
        #expect(interrupted.record.reason?.hasPrefix("interrupted: may have run") == true)
        #expect(apply(.retryRequested, interrupted.record, once) == nil, "never started again, not even by retry")
        #expect(apply(.shimDied(reason: "never started", mayHaveStarted: false), Self.record(.running), once)!.record.phase == .pending,
                "at most once: an attempt known not to have started its command is started again")
        // retries with backoff
        let retry = MissionPolicy(retries: 2, retryBackoff: .seconds(1), retryBackoffCap: .seconds(60))
        let r1 = apply(.exited(code: 1, signal: nil, reason: nil, stoppedFor: nil), Self.record(.running), retry)!
        #expect(r1.record.phase == .pending && r1.record.retried == 1 && r1.record.retryAt == 1001)
        #expect(r1.record.reason == "attempt 1 exited with status 1; retry 1 of 2")
        #expect(r1.actions == [.releaseLock, .announce(.retryScheduled(at: 1001, reason: r1.record.reason!))])
        var running2 = r1.record
        running2.phase = .running
        running2.attempts = 2
        let r2 = apply(.exited(code: 1, signal: nil, reason: nil, stoppedFor: nil), running2, retry)!
        #expect(r2.record.retryAt == 1002, "doubled")
        var running3 = r2.record
        running3.phase = .running
        running3.attempts = 3
        let r3 = apply(.exited(code: 1, signal: nil, reason: nil, stoppedFor: nil), running3, retry)!
        #expect(r3.record.phase == .failed && r3.record.reason == "exited with status 1 (after 2 retries)")
        // retries do not eat the crash budget: a crash after two retries is still requeued
        var crashed = r2.record
        crashed.phase = .running
        crashed.attempts = 3
        #expect(apply(crash, crashed, MissionPolicy(maxAttempts: 2, retries: 2))!.record.phase == .pending)
        // a corrupt result
        let corrupt = apply(.resultCorrupt(why: "checksum mismatch"), Self.record(.running))!
        #expect(corrupt.record.phase == .failed && corrupt.actions.prefix(2) == [.quarantineResult, .releaseLock])
        // an operator's retry of a failed mission
        let again = apply(.retryRequested, gaveUp.record)!
        #expect(again.record.phase == .pending && again.record.retryAt == nil && again.record.exitCode == nil)
        #expect(apply(crash, apply(.claimed, again.record)!.record)!.record.phase == .pending, "an operator's retry brings fresh budgets")
        #expect(apply(.claimed, again.record)!.record.attempts == 4, "attempt numbers go on")
        _ = p
    }

    @Test func retryDelaysDoubleAreCappedAndJittered() {
        let p = MissionPolicy(retryBackoff: .seconds(1), retryBackoffCap: .seconds(60))
        let full = (1...10).map { MissionLifecycle.retryDelay(retry: $0, policy: p, jitter: 1).seconds }
        #expect(full == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60])
        #expect(MissionLifecycle.retryDelay(retry: 3, policy: p, jitter: 0).seconds == 2, "jitter takes at most half")
        #expect(MissionLifecycle.retryDelay(retry: 1000, policy: p, jitter: 0.5).seconds == 45, "no overflow")
        #expect(MissionLifecycle.retryDelay(retry: 1, policy: MissionPolicy(retryBackoff: .zero), jitter: 1) == .zero)
    }
}

@Suite("Mission lifecycle: a running attempt on the boot clock")
struct MissionWatchTests {
    let t0 = BootInstant(seconds: 100)

    @Test func timeoutThenKillEveryGrace() {
        let p = MissionPolicy(timeout: .seconds(10), termGrace: .seconds(2))
        var w = AttemptWatch(startedAt: t0)
        #expect(MissionLifecycle.nextDeadline(w, cancelRequested: false, policy: p) == t0 + .seconds(10))
        var (n, a) = MissionLifecycle.watch(w, cancelRequested: false, policy: p, now: t0 + .seconds(9.999))
        #expect(a == nil && n == w)
        (w, a) = MissionLifecycle.watch(w, cancelRequested: false, policy: p, now: t0 + .seconds(10))
        #expect(a == .signal(MissionLifecycle.sigterm) && w.stopping == .timeout)
        #expect(MissionLifecycle.nextDeadline(w, cancelRequested: false, policy: p) == t0 + .seconds(12))
        (n, a) = MissionLifecycle.watch(w, cancelRequested: true, policy: p, now: t0 + .seconds(11))
        #expect(a == nil && n.stopping == .timeout, "a cancel during the grace changes nothing: it is ending already")
        (w, a) = MissionLifecycle.watch(w, cancelRequested: false, policy: p, now: t0 + .seconds(12))
        #expect(a == .signal(MissionLifecycle.sigkill))
        (w, a) = MissionLifecycle.watch(w, cancelRequested: false, policy: p, now: t0 + .seconds(13))
        #expect(a == nil)
        (w, a) = MissionLifecycle.watch(w, cancelRequested: false, policy: p, now: t0 + .seconds(14))
        #expect(a == .signal(MissionLifecycle.sigkill), "again every grace while it lives")
    }

    @Test func silenceCountsFromTheLastOutput() {
        let p = MissionPolicy(silenceLimit: .seconds(600))
        var w = AttemptWatch(startedAt: t0)
        w.lastOutputAt = t0 + .seconds(500)
        #expect(MissionLifecycle.watch(w, cancelRequested: false, policy: p, now: t0 + .seconds(1099)).1 == nil)
        let (n, a) = MissionLifecycle.watch(w, cancelRequested: false, policy: p, now: t0 + .seconds(1100))
        #expect(a == .signal(MissionLifecycle.sigterm) && n.stopping == .silence)
    }

    @Test func cancelFirstAndNoDeadlineWithoutLimits() {
        let w = AttemptWatch(startedAt: t0)
        #expect(MissionLifecycle.nextDeadline(w, cancelRequested: false, policy: MissionPolicy()) == nil)
        let (n, a) = MissionLifecycle.watch(w, cancelRequested: true, policy: MissionPolicy(timeout: .seconds(1)), now: t0 + .seconds(5))
        #expect(a == .signal(MissionLifecycle.sigterm) && n.stopping == .cancel, "a cancel wins over an expired timeout")
    }
}

@Suite("Mission lifecycle: which missions may start")
struct MissionClaimTests {
    @Test func fifoPerKeyOneHolderDueRetriesAndPausedKeys() {
        let pending = [PendingMission(id: 5, lockKey: "a"), PendingMission(id: 2, lockKey: "a"), PendingMission(id: 3),
                       PendingMission(id: 4, lockKey: "b", retryAt: 1030), PendingMission(id: 6, lockKey: "b"), PendingMission(id: 7, lockKey: "c")]
        #expect(MissionLifecycle.claimable(pending, held: [], limit: 10, now: 1000) == [2, 3, 7],
                "5 waits behind 2 on a; 6 waits behind 4 (not due) on b")
        #expect(MissionLifecycle.claimable(pending, held: ["a"], limit: 10, now: 1000) == [3, 7])
        #expect(MissionLifecycle.claimable(pending, held: [], paused: ["c"], limit: 10, now: 2000) == [2, 3, 4])
        #expect(MissionLifecycle.claimable(pending, held: [], limit: 2, now: 1000) == [2, 3])
        #expect(MissionLifecycle.claimable(pending, held: [], limit: 0, now: 1000) == [])
        // The wall clock went back a day: the retry waits at most maxBackoff.
        let back = [PendingMission(id: 1, retryAt: 1000 + 86400, maxBackoff: .seconds(60))]
        #expect(MissionLifecycle.claimable(back, held: [], limit: 1, now: 1000) == [1],
                "a retryAt further ahead than the longest backoff is treated as due")
        #expect(MissionLifecycle.claimable([PendingMission(id: 1, retryAt: 1030)], held: [], limit: 1, now: 1000) == [])
    }

    /// Workspace slots (docs/workspaces.md, "Handing out a slot"): at most the repository's free
    /// slots, in id order; the first mission without a slot holds the later ones of its
    /// repository back; a retry not due takes none; a key's wait comes first.
    @Test func workspaceSlotsAreHandedOutInOrderUpToTheFreeOnes() {
        let pending = [PendingMission(id: 1, workspace: "r"), PendingMission(id: 2, workspace: "r"), PendingMission(id: 3, workspace: "r"),
                       PendingMission(id: 4, workspace: "s"), PendingMission(id: 5)]
        #expect(MissionLifecycle.claimable(pending, held: [], limit: 10, now: 1000, capacity: ["r": 2, "s": 1]) == [1, 2, 4, 5])
        #expect(MissionLifecycle.claimable(pending, held: [], limit: 10, now: 1000, capacity: ["r": 0]) == [5],
                "no slot free (or an unknown repository): its missions wait, the others go")
        let retry = [PendingMission(id: 1, retryAt: 1030, workspace: "r"), PendingMission(id: 2, workspace: "r")]
        #expect(MissionLifecycle.claimable(retry, held: [], limit: 10, now: 1000, capacity: ["r": 1]) == [2],
                "a retry that is not due takes no slot and holds nobody back")
        let keyed = [PendingMission(id: 1, lockKey: "k", workspace: "r"), PendingMission(id: 2, workspace: "r")]
        #expect(MissionLifecycle.claimable(keyed, held: ["k"], limit: 10, now: 1000, capacity: ["r": 1]) == [2],
                "a mission waiting for its key takes no slot")
        let starved = [PendingMission(id: 1, workspace: "r"), PendingMission(id: 2, lockKey: "k"), PendingMission(id: 3, workspace: "r")]
        #expect(MissionLifecycle.claimable(starved, held: [], limit: 10, now: 1000, capacity: [:]) == [2])
    }

    /// The queue reads pending missions in batches and feeds them to `ClaimSelection` one at a
    /// time: whatever the batch size, it chooses what `claimable` chooses over them all.
    @Test(arguments: 0..<200) func selectionInBatchesIsClaimable(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let keys: [String?] = [nil, "a", "b", "c", "d"]
        let repos: [String?] = [nil, nil, "r", "s"]
        let pending = (1...Int64.random(in: 1...40, using: &rng)).map { id in
            PendingMission(id: id, lockKey: keys.randomElement(using: &rng)!,
                           retryAt: Bool.random(using: &rng) ? nil : Double.random(in: 900...1100, using: &rng),
                           maxBackoff: .seconds(Double(Int.random(in: 30...120, using: &rng))), workspace: repos.randomElement(using: &rng)!)
        }
        let held = Set(["a", "b", "c", "d"].filter { _ in Int.random(in: 0..<4, using: &rng) == 0 })
        let paused = Set(["a", "b", "c", "d"].filter { _ in Int.random(in: 0..<4, using: &rng) == 0 })
        let limit = Int.random(in: 0...8, using: &rng)
        let capacity = ["r": Int.random(in: 0...3, using: &rng), "s": Int.random(in: 0...3, using: &rng)]
        let whole = MissionLifecycle.claimable(pending.shuffled(using: &rng), held: held, paused: paused, limit: limit, now: 1000, capacity: capacity)
        var selection = ClaimSelection(held: held, paused: paused, limit: limit, now: 1000, capacity: capacity)
        let batch = Int.random(in: 1...7, using: &rng)
        var i = 0
        while i < pending.count && !selection.isFull {
            for m in pending[i..<min(i + batch, pending.count)] { selection.consider(m) }
            i += batch
        }
        #expect(selection.chosen == whole, "seed \(seed)")
        #expect(whole.count <= limit)
        let chosenKeys = whole.compactMap { id in pending.first { $0.id == id }!.lockKey }
        #expect(Set(chosenKeys).count == chosenKeys.count && held.isDisjoint(with: chosenKeys) && paused.isDisjoint(with: chosenKeys))
        for (repo, free) in capacity {
            let chosenOfRepo = whole.filter { id in pending.first { $0.id == id }!.workspace == repo }
            #expect(chosenOfRepo.count <= free, "seed \(seed): more missions of \(repo) than free slots")
            // FIFO per repository: no due mission of it that waits for a slot comes before one chosen.
            if let last = chosenOfRepo.last {
                let skipped = pending.filter { $0.workspace == repo && $0.id < last && !whole.contains($0.id) }
                for m in skipped {
                    let due = MissionLifecycle.isDue(retryAt: m.retryAt, now: 1000, maxBackoff: m.maxBackoff)
                    let keyBlocked = m.lockKey.map { k in held.contains(k) || paused.contains(k) || pending.contains { p in p.lockKey == k && p.id < m.id } } ?? false
                    #expect(!due || keyBlocked, "seed \(seed): mission \(m.id) of \(repo) was overtaken by \(last)")
                }
            }
        }
    }

    @Test func breakerPausesAfterKFailuresHalfOpensAndResumes() {
        var b = KeyBreaker()
        let cool = TimeSpan.seconds(300)
        #expect(b.ended(success: false, now: 0, limit: 3) == nil)
        #expect(b.ended(success: true, now: 1, limit: 3) == nil, "a success in between starts the count again")
        #expect(b.ended(success: false, now: 2, limit: 3) == nil)
        #expect(b.ended(success: false, now: 3, limit: 3) == nil)
        #expect(b.ended(success: false, now: 4, limit: 3) == .paused(failures: 3))
        #expect(b.isPaused(now: 5, coolOff: cool))
        #expect(b.ended(success: false, now: 6, limit: 3) == nil, "one alert only (a mission that was running ends too)")
        #expect(!b.isPaused(now: 304, coolOff: cool), "half-open after the cool-off")
        b.claimed(now: 304, coolOff: cool)
        #expect(b.isPaused(now: 305, coolOff: cool), "one trial at a time")
        #expect(b.ended(success: false, now: 306, limit: 3) == .paused(failures: 5), "the trial failed: paused again")
        #expect(b.isPaused(now: 600, coolOff: cool) && !b.isPaused(now: 606, coolOff: cool))
        b.claimed(now: 606, coolOff: cool)
        #expect(b.ended(success: true, now: 607, limit: 3) == .closed)
        #expect(!b.isPaused(now: 608, coolOff: cool) && b == KeyBreaker())
        _ = b.ended(success: false, now: 700, limit: 1)
        #expect(b.resume() == .closed && b.resume() == nil)
    }
}

@Suite("Mission lifecycle: invariants over random histories of a board")
struct MissionLifecyclePropertyTests {
    /// A board: missions with keys and policies, events picked at random among those a real
    /// queue and runner could produce (claims only through `claimable`), with random time steps.
    struct Board {
        var records: [Int64: MissionRecord] = [:]
        var policies: [Int64: MissionPolicy] = [:]
        var keys: [Int64: String] = [:]
        var now: Double = 1_000_000
        var commandStarts: [Int64: Int] = [:] // attempts that may have started the command
        var startedAfterMayHaveRun: [Int64] = []

        var held: Set<String> { Set(records.filter { $0.value.phase == .running }.compactMap { keys[$0.key] }) }

        mutating func apply(_ id: Int64, _ e: MissionEvent, jitter: Double) -> MissionTransition? {
            guard let r = records[id], let t = MissionLifecycle.apply(e, to: r, policy: policies[id]!, now: now, jitter: jitter) else { return nil }
            records[id] = t.record
            return t
        }

        func pending() -> [PendingMission] {
            records.filter { $0.value.phase == .pending }.map { PendingMission(id: $0.key, lockKey: keys[$0.key], retryAt: $0.value.retryAt) }
        }
    }

    static func policy(_ rng: inout SplitMix64) -> MissionPolicy {
        MissionPolicy(maxAttempts: Int.random(in: 1...4, using: &rng), retries: Int.random(in: 0...3, using: &rng),
                      retryBackoff: .seconds(Double.random(in: 0...3, using: &rng)), retryBackoffCap: .seconds(60),
                      atMostOnce: Bool.random(using: &rng))
    }

    @Test(arguments: 0..<300) func invariantsHold(seed: Int) {
        var rng = SplitMix64(seed: UInt64(seed) &* 0x9E37_79B9 &+ 7)
        var b = Board()
        let keys = ["repo-a", "repo-b", nil]
        var nextID: Int64 = 1
        for step in 0..<200 {
            switch Int.random(in: 0..<12, using: &rng) {
            case 0, 1: // enqueue
                let id = nextID
                nextID += 1
                b.records[id] = MissionRecord()
                b.policies[id] = Self.policy(&rng)
                b.keys[id] = keys.randomElement(using: &rng)!
            case 2, 3: // a runner tick claims what it may
                let limit = Int.random(in: 0...3, using: &rng) - b.records.values.filter { $0.phase == .running }.count
                for id in MissionLifecycle.claimable(b.pending(), held: b.held, limit: limit, now: b.now) {
                    let before = b.records[id]!
                    let t = b.apply(id, .claimed, jitter: 0)
                    #expect(t?.record.phase == .running, "seed \(seed) step \(step): claimable chose \(id), claim refused")
                    if before.mayHaveRun { b.startedAfterMayHaveRun.append(id) }
                }
            default: // something happens to a mission
                guard let id = b.records.keys.randomElement(using: &rng) else { continue }
                let events: [MissionEvent] = [
                    .exited(code: [0, 0, 1, 137].randomElement(using: &rng)!, signal: nil, reason: nil, stoppedFor: StopCause.allCases.randomElement(using: &rng)),
                    .shimDied(reason: "died", mayHaveStarted: Bool.random(using: &rng)), .shimNotStarted(reason: "no"),
                    .resultCorrupt(why: "torn"), .cancelRequested, .retryRequested,
                ]
                let e = events.randomElement(using: &rng)!
                let before = b.records[id]!
                if let t = b.apply(id, e, jitter: Double.random(in: 0..<1, using: &rng)) {
                    if before.phase == .running, case .exited = e { b.commandStarts[id, default: 0] += 1 }
                    if before.phase == .running, case .shimDied(_, true) = e { b.commandStarts[id, default: 0] += 1 }
                    // Invariant: final is final (but an operator's retry of a failed one).
                    if before.phase.isFinal && t.record != before { #expect(before.phase == .failed && e == .retryRequested, "seed \(seed)") }
                }
            }
            b.now += [0, 0.1, 1, 5, 70].randomElement(using: &rng)!
            // Invariant: a lock key is held by at most one running mission.
            var seen: [String: Int64] = [:]
            for (id, r) in b.records where r.phase == .running {
                if let k = b.keys[id] {
                    #expect(seen[k] == nil, "seed \(seed) step \(step): key \(k) held by \(seen[k]!) and \(id)")
                    seen[k] = id
                }
            }
            // Invariant: counted attempts stay within the budget.
            for (id, r) in b.records {
                let p = b.policies[id]!
                #expect(r.attempts >= r.attemptBase && r.attempts - r.attemptBase <= p.maxAttempts + p.retries, "seed \(seed): mission \(id) \(r)")
            }
        }
        // Invariant: an at-most-once mission that may have run is never started again.
        #expect(b.startedAfterMayHaveRun.isEmpty, "seed \(seed): \(b.startedAfterMayHaveRun)")
        // Liveness: with every attempt succeeding from now on, every mission ends.
        for _ in 0..<500 {
            let pending = b.pending()
            let running = b.records.filter { $0.value.phase == .running }.map(\.key)
            if pending.isEmpty && running.isEmpty { break }
            for id in running { _ = b.apply(id, .exited(code: 0, signal: nil, reason: nil, stoppedFor: nil), jitter: 0) }
            b.now += 61
            for id in MissionLifecycle.claimable(b.pending(), held: b.held, limit: 2, now: b.now) { _ = b.apply(id, .claimed, jitter: 0) }
        }
        let open = b.records.filter { !$0.value.phase.isFinal }
        #expect(open.isEmpty, "seed \(seed): never ended: \(open)")
    }
}
