import Foundation
import Testing
import VigilCore

@Suite("classify: the verdict table")
struct VerdictTests {
    let now = t0
    let stale = TimeSpan.seconds(20)
    var limits: ProbeLimits { ProbeLimits(staleAfter: stale) }

    func facts(_ process: ProbeFacts.Process, beatAge: TimeSpan? = .seconds(1), stamped: String? = "v1",
               current: String? = "v1") -> ProbeFacts {
        ProbeFacts(process: process, lastBeat: beatAge.map { now - $0 }, stampedVersion: stamped, currentVersion: current)
    }

    @Test("No identity is missing, a gone process is dead, whatever else the files say",
          arguments: [TimeSpan?.none, .zero, .seconds(1), .seconds(1_000)], [String?.none, "v1", "v2"])
    func notRunning(beatAge: TimeSpan?, stamped: String?) {
        #expect(classify(facts(.noIdentity, beatAge: beatAge, stamped: stamped), now: now, limits: limits) == .missing)
        #expect(classify(facts(.gone, beatAge: beatAge, stamped: stamped), now: now, limits: limits) == .dead)
        let withRSS = ProbeLimits(staleAfter: stale, rssLimit: 1)
        #expect(classify(facts(.gone, beatAge: beatAge, stamped: stamped), now: now, limits: withRSS) == .dead)
    }

    @Test("Alive, fresh, same version, under the limit: healthy")
    func healthy() {
        #expect(classify(facts(.alive(rssBytes: 100)), now: now, limits: limits) == .healthy)
        #expect(classify(facts(.alive(rssBytes: nil)), now: now, limits: limits) == .healthy)
        #expect(classify(facts(.alive(rssBytes: 100)), now: now, limits: ProbeLimits(staleAfter: stale, rssLimit: 100)) == .healthy)
        // A beat stamped a moment "after" now (another process's clock read later) is fresh.
        #expect(classify(facts(.alive(rssBytes: nil), beatAge: .seconds(-1)), now: now, limits: limits) == .healthy)
    }

    @Test("Heartbeat age: fresh just below staleAfter, hung at and above it")
    func staleBoundary() {
        let alive = ProbeFacts.Process.alive(rssBytes: nil)
        #expect(classify(facts(alive, beatAge: stale - oneNanosecond), now: now, limits: limits) == .healthy)
        #expect(classify(facts(alive, beatAge: stale), now: now, limits: limits) == .hung)
        #expect(classify(facts(alive, beatAge: stale + oneNanosecond), now: now, limits: limits) == .hung)
        #expect(classify(facts(alive, beatAge: nil), now: now, limits: limits) == .hung, "no beat known at all")
        // Sub-second limits work.
        let fast = ProbeLimits(staleAfter: .milliseconds(200))
        #expect(classify(facts(alive, beatAge: .milliseconds(199)), now: now, limits: fast) == .healthy)
        #expect(classify(facts(alive, beatAge: .milliseconds(200)), now: now, limits: fast) == .hung)
    }

    @Test("Hung wins over drifted and bloated: a stuck loop cannot honour a marker")
    func hungFirst() {
        let f = facts(.alive(rssBytes: 10_000), beatAge: .seconds(60), stamped: "old", current: "new")
        #expect(classify(f, now: now, limits: ProbeLimits(staleAfter: stale, rssLimit: 1)) == .hung)
    }

    @Test("Drifted when the stamp differs from the program on disk; no judgement without both")
    func drift() {
        let alive = ProbeFacts.Process.alive(rssBytes: nil)
        #expect(classify(facts(alive, stamped: "v1", current: "v2"), now: now, limits: limits) == .drifted)
        #expect(classify(facts(alive, stamped: "v1", current: nil), now: now, limits: limits) == .healthy)
        #expect(classify(facts(alive, stamped: nil, current: "v2"), now: now, limits: limits) == .healthy)
        #expect(classify(facts(alive, stamped: "", current: ""), now: now, limits: limits) == .healthy)
        // Drifted and bloated: the drift is reported (both answer at tier 1).
        let both = facts(.alive(rssBytes: 2_000), stamped: "v1", current: "v2")
        #expect(classify(both, now: now, limits: ProbeLimits(staleAfter: stale, rssLimit: 1_000)) == .drifted)
    }

    @Test("Bloated only above a configured limit with a known RSS")
    func bloat() {
        let limit = ProbeLimits(staleAfter: stale, rssLimit: 512_000_000)
        #expect(classify(facts(.alive(rssBytes: 512_000_001)), now: now, limits: limit) == .bloated)
        #expect(classify(facts(.alive(rssBytes: 512_000_000)), now: now, limits: limit) == .healthy)
        #expect(classify(facts(.alive(rssBytes: nil)), now: now, limits: limit) == .healthy)
        #expect(classify(facts(.alive(rssBytes: UInt64.max)), now: now, limits: limits) == .healthy, "off by default")
    }

    @Test("Each verdict's first tier and liveness", arguments: Verdict.allCases)
    func tiers(verdict: Verdict) {
        let table: [Verdict: (Int, Bool)] = [
            .healthy: (0, true), .drifted: (1, true), .bloated: (1, true),
            .hung: (2, true), .dead: (3, false), .missing: (3, false),
        ]
        #expect(verdict.firstTier == table[verdict]!.0)
        #expect(verdict.processAlive == table[verdict]!.1)
        #expect(Verdict(rawValue: verdict.rawValue) == verdict)
    }
}
