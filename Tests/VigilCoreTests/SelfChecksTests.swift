import Testing
import VigilCore

/// The self-check schedule (docs/operator-guide.md, "Self-checks"): due times, three failures
/// in a row before a repair or a message, one message per episode, and a seeded property run.
@Suite("Self-checks")
struct SelfChecksTests {
    let t0 = BootInstant(nanoseconds: 1_000_000_000)

    @Test func checksAreDueAtTheirIntervalsAndNotBefore() {
        var s = SelfChecks(intervals: ["disk": .seconds(60), "database": .seconds(3600)], start: t0)
        #expect(s.due(now: t0 + .seconds(59)).isEmpty, "not in the first interval after start")
        #expect(s.nextDeadline == t0 + .seconds(60))
        #expect(s.due(now: t0 + .seconds(60)) == ["disk"])
        s.started(["disk"], now: t0 + .seconds(60))
        #expect(s.due(now: t0 + .seconds(119)).isEmpty && s.due(now: t0 + .seconds(3600)) == ["database", "disk"])
        #expect(s.nextDeadline == t0 + .seconds(120))
    }

    @Test func aRepairableCheckIsRepairedAfterThreeFailuresInARowAndChatHearsOnce() {
        var s = SelfChecks(intervals: ["wal": .seconds(1)], start: t0)
        let fail = SelfChecks.Result.failed(summary: "WAL 80 MiB", repairable: true)
        #expect(s.record("wal", fail).isEmpty && s.record("wal", fail).isEmpty)
        #expect(s.record("wal", .passed).isEmpty, "a pass in between starts the count again")
        #expect(s.record("wal", fail).isEmpty && s.record("wal", fail).isEmpty)
        #expect(s.record("wal", .unknown).isEmpty, "a check that could not run counts neither way")
        #expect(s.record("wal", fail) == [.repair(check: "wal", failures: 3, summary: "WAL 80 MiB", tell: true)])
        #expect(s.record("wal", fail).isEmpty && s.record("wal", fail).isEmpty, "the count starts again after a repair")
        #expect(s.record("wal", fail) == [.repair(check: "wal", failures: 3, summary: "WAL 80 MiB", tell: false)],
                "a repair that did not help is tried again, quietly")
        #expect(s.record("wal", .passed) == [.tellCleared(check: "wal")])
        #expect(s.record("wal", .passed).isEmpty)
    }

    @Test func aCheckWithoutARepairTellsAPersonOnceUntilItPasses() {
        var s = SelfChecks(intervals: ["disk": .seconds(1)], start: t0)
        let fail = SelfChecks.Result.failed(summary: "2% free", repairable: false)
        _ = s.record("disk", fail); _ = s.record("disk", fail)
        #expect(s.record("disk", fail) == [.tellPerson(check: "disk", failures: 3, summary: "2% free")])
        for _ in 0..<10 { #expect(s.record("disk", fail).isEmpty, "told once") }
        #expect(s.record("disk", .passed) == [.tellCleared(check: "disk")])
        #expect(s.record("unknown-check", fail).isEmpty)
    }

    /// Any sequence of results: chat is told at most once per episode (failing, then cleared,
    /// alternating), a repair or message comes only after `repairAfter` failures in a row, and
    /// "cleared" only after a message.
    @Test(arguments: 0..<200) func messagesAlternateAndNeedThreeFailures(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var s = SelfChecks(intervals: ["c": .seconds(1)], start: t0)
        var told = false
        var inARow = 0
        for _ in 0..<80 {
            let roll = Int.random(in: 0..<10, using: &rng)
            let r: SelfChecks.Result = roll < 6 ? .failed(summary: "x", repairable: Bool.random(using: &rng)) : roll < 9 ? .passed : .unknown
            if case .failed = r { inARow += 1 } else if r == .passed { inARow = 0 }
            for a in s.record("c", r) {
                switch a {
                case .repair(_, let n, _, let tell):
                    #expect(n >= SelfChecks.repairAfter && inARow >= SelfChecks.repairAfter, "seed \(seed)")
                    #expect(tell == !told, "seed \(seed): told again without a pass in between")
                    told = true
                    inARow = 0
                case .tellPerson(_, let n, _):
                    #expect(n >= SelfChecks.repairAfter && !told, "seed \(seed)")
                    told = true
                case .tellCleared:
                    #expect(told && r == .passed, "seed \(seed)")
                    told = false
                }
            }
        }
    }
}
