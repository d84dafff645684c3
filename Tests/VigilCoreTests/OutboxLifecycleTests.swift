import Foundation
import Testing
import VigilCore

/// The outbox row's life (`OutboxLifecycle`): every fact combination of `decide`, every outcome
/// of `after`, and two deliverers racing over random event sequences.
@Suite("Outbox lifecycle")
struct OutboxLifecycleTests {
    static let now = BootInstant(seconds: 1000)
    static let helpAfter = TimeSpan.seconds(3)

    enum Lease: CaseIterable { case none, live, over }
    enum Due: CaseIterable { case now, later }

    /// The whole table: sending × lease × claimer gone × due × role × waited.
    @Test(arguments: [false, true], Lease.allCases)
    func decideTable(sending: Bool, lease: Lease) {
        let now = Self.now
        for gone in [false, true] {
            for due in Due.allCases {
                for waited in [TimeSpan.zero, .seconds(2.999), .seconds(3), .seconds(100)] {
                    let roles: [OutboxLifecycle.Role] = [.primary, .standby(active: true, after: Self.helpAfter), .standby(active: false, after: Self.helpAfter)]
                    for role in roles {
                        let leaseUntil: BootInstant? = switch lease {
                        case .none: nil
                        case .live: now + .seconds(5)
                        case .over: now - .milliseconds(1)
                        }
                        let head = OutboxLifecycle.Head(sending: sending, nextAttempt: due == .later ? now + .seconds(2) : nil,
                                                        leaseUntil: leaseUntil, waited: waited)
                        let d = OutboxLifecycle.decide(head, now: now, claimerGone: gone, role: role)
                        // The standby helps only when needed or when the message waited long enough.
                        let helps: Bool
                        if case .standby(let active, _) = role { helps = active || waited >= Self.helpAfter } else { helps = true }
                        if sending {
                            let claimHolds = !gone && lease == .live
                            if claimHolds {
                                #expect(d == .busy(until: leaseUntil), "a live claim with a live lease is never taken")
                            } else if helps {
                                #expect(d == .takeOver)
                            } else {
                                #expect(d == .notNeeded(wait: Self.helpAfter - waited))
                            }
                        } else if due == .later {
                            #expect(d == .notDue(now + .seconds(2)))
                        } else if helps {
                            #expect(d == .claim)
                        } else {
                            #expect(d == .notNeeded(wait: Self.helpAfter - waited))
                        }
                    }
                }
            }
        }
    }

    static let policy = OutboxLifecycle.Policy(maxAge: .seconds(72 * 3600), stuckAfterAttempts: 3)

    @Test func outcomes() {
        let now = Self.now
        let p = Self.policy
        #expect(OutboxLifecycle.after(.delivered(remoteID: "$e"), attempts: 1, age: .zero, now: now, backoff: .seconds(1), policy: p)
                == .delivered(remoteID: "$e"))
        #expect(OutboxLifecycle.after(.refused("HTTP 404"), attempts: 1, age: .zero, now: now, backoff: .seconds(1), policy: p)
                == .failed("refused: HTTP 404"))
        #expect(OutboxLifecycle.after(.cancelled, attempts: 4, age: .seconds(10), now: now, backoff: .seconds(1), policy: p)
                == .retry(at: now, error: "interrupted by shutdown", stuck: false))
        // Retryable: pending again whatever the attempt count, stuck reported exactly at the limit.
        for attempts in 1...10 {
            let t = OutboxLifecycle.after(.retryable("HTTP 503", after: nil), attempts: attempts, age: .seconds(60), now: now, backoff: .seconds(2), policy: p)
            #expect(t == .retry(at: now + .seconds(2), error: "HTTP 503", stuck: attempts == 3))
        }
        // The server's Retry-After wins when longer than the backoff, not when shorter.
        #expect(OutboxLifecycle.after(.retryable("429", after: .seconds(30)), attempts: 1, age: .zero, now: now, backoff: .seconds(2), policy: p)
                == .retry(at: now + .seconds(30), error: "429", stuck: false))
        #expect(OutboxLifecycle.after(.retryable("429", after: .seconds(1)), attempts: 1, age: .zero, now: now, backoff: .seconds(2), policy: p)
                == .retry(at: now + .seconds(2), error: "429", stuck: false))
        // Only the age ends a retryable message.
        if case .failed(let why) = OutboxLifecycle.after(.retryable("timeout", after: nil), attempts: 2, age: p.maxAge, now: now, backoff: .seconds(1), policy: p) {
            #expect(why.hasPrefix("gave up after") && why.hasSuffix("timeout"))
        } else {
            Issue.record("an old message was not failed")
        }
        #expect(OutboxLifecycle.after(.retryable("timeout", after: nil), attempts: 2, age: p.maxAge - .milliseconds(1), now: now, backoff: .seconds(1), policy: p)
                == .retry(at: now + .seconds(1), error: "timeout", stuck: false))
    }

    /// Two deliverers (primary, standby) and a row, driven by random events: claims, outcomes,
    /// deaths, stops, time passing. Invariants: never two holders of a valid claim at once; an
    /// attempt is made only by the current holder; the row ends only delivered (after a
    /// delivery), failed (refused or too old), or stays unfinished.
    @Test(arguments: 0..<200)
    func twoDeliverersNeverHoldOneRowAtOnce(seed: Int) {
        var rng = SplitMix64(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        struct Row { var sending = false; var holder: Int?; var lease: BootInstant?; var next: BootInstant?; var attempts = 0; var done: String? }
        var row = Row()
        var now = Self.now
        let created = now
        var inFlight: [Int: Int] = [:] // deliverer → attempt number it is making
        let lease = TimeSpan.seconds(5)
        let policy = OutboxLifecycle.Policy(maxAge: .seconds(120), stuckAfterAttempts: 3)
        for _ in 0..<200 where row.done == nil {
            now = now + .milliseconds(Double(rng.next() % 3000))
            let who = Int(rng.next() % 2)
            switch rng.next() % 6 {
            case 0: // a deliverer dies and comes back as a new process (its in-flight attempt is lost)
                inFlight[who] = nil
                if row.holder == who { row.holder = -1 - who } // the old process's identity, now gone
            case 1, 2: // look at the queue
                guard inFlight[who] == nil else { break }
                let gone = row.holder.map { $0 < 0 } ?? true
                let role: OutboxLifecycle.Role = who == 0 ? .primary : .standby(active: rng.next() % 2 == 0, after: .seconds(3))
                let head = OutboxLifecycle.Head(sending: row.sending, nextAttempt: row.next, leaseUntil: row.lease, waited: now - created)
                switch OutboxLifecycle.decide(head, now: now, claimerGone: gone, role: role) {
                case .claim, .takeOver:
                    // Invariant: nobody else holds a valid claim.
                    if row.sending, let h = row.holder, h >= 0, let l = row.lease, now < l {
                        Issue.record("seed \(seed): \(who) claimed a row \(h) holds until \(l)")
                    }
                    row.sending = true
                    row.holder = who
                    row.lease = now + lease
                    row.attempts += 1
                    inFlight[who] = row.attempts
                default: break
                }
            default: // an attempt in flight ends
                guard let attempt = inFlight[who] else { break }
                inFlight[who] = nil
                guard row.holder == who, row.attempts == attempt else { break } // taken over: its mark is refused
                let outcome: OutboxLifecycle.Outcome = switch rng.next() % 4 {
                case 0: .delivered(remoteID: nil)
                case 1: .refused("403")
                default: .retryable("503", after: nil)
                }
                switch OutboxLifecycle.after(outcome, attempts: attempt, age: now - created, now: now, backoff: .seconds(1), policy: policy) {
                case .delivered:
                    #expect(outcome == .delivered(remoteID: nil))
                    row.done = "delivered"
                case .failed:
                    #expect(outcome == .refused("403") || now - created >= policy.maxAge)
                    row.done = "failed"
                case .retry(let at, _, _):
                    row = Row(sending: false, holder: nil, lease: nil, next: at, attempts: row.attempts)
                }
            }
        }
    }
}
