import Foundation
import Testing
import VigilCore

/// `RetentionClock` (docs/architecture.md, "Retention clock"): wall jumps forward and back,
/// reboots, readings out of order, a crash between computing an advance and saving it.
@Suite("Retention clock")
struct RetentionClockTests {
    static let day = 86400.0
    static let week = TimeSpan.seconds(7 * day)
    static let t0 = 1_800_000_000.0 // wall seconds

    func reading(wall: Double, boot: Double, id: String = "boot-a") -> RetentionClock.Reading {
        RetentionClock.Reading(wall: wall, boot: BootInstant(seconds: boot), bootID: id)
    }

    @Test("Within a boot it advances by the boot clock alone, whatever the wall clock does")
    func wallJumpsWithinABoot() {
        let start = RetentionClock.start(reading(wall: Self.t0, boot: 100))
        // A row stamped now.
        let stamp = start.elapsed
        for jump in [30 * Self.day, -30 * Self.day, 1e12, -1e12, .nan, .infinity] {
            let later = start.advanced(to: reading(wall: Self.t0 + jump, boot: 110))
            #expect(later.elapsed == .seconds(10), "wall jump \(jump)")
            #expect(later.cutoff(retention: Self.week) < stamp, "a fresh row is not pruned after a jump of \(jump)")
        }
        // A week of boot-clock time prunes it, even with the wall clock set back 30 days.
        let weekLater = start.advanced(to: reading(wall: Self.t0 - 30 * Self.day, boot: 100 + 7 * Self.day))
        #expect(weekLater.cutoff(retention: Self.week) >= stamp)
    }

    @Test("Jumping back keeps nothing forever: aging goes on at the boot clock's pace")
    func backwardJumpStillAges() {
        var c = RetentionClock.start(reading(wall: Self.t0, boot: 0))
        var wall = Self.t0 - 30 * Self.day
        for hour in 1...(7 * 24) {
            wall += 3600
            c = c.advanced(to: reading(wall: wall, boot: Double(hour) * 3600))
        }
        #expect(c.elapsed == Self.week)
    }

    @Test("A reading older than the last one (a slower process) adds nothing and moves nothing back")
    func outOfOrderReadings() {
        let c = RetentionClock.start(reading(wall: Self.t0, boot: 100)).advanced(to: reading(wall: Self.t0 + 5, boot: 105))
        let stale = c.advanced(to: reading(wall: Self.t0 + 4, boot: 104))
        #expect(stale.elapsed == c.elapsed && stale.boot == c.boot)
        #expect(stale.advanced(to: reading(wall: Self.t0 + 6, boot: 106)).elapsed == .seconds(6))
    }

    @Test("Across a reboot: time since this boot plus the wall-clock downtime, capped and never negative")
    func reboot() {
        let before = RetentionClock.start(reading(wall: Self.t0, boot: 5000)).advanced(to: reading(wall: Self.t0 + 100, boot: 5100))
        #expect(before.elapsed == .seconds(100))
        // Down for an hour; up for 60 s when the clock is next advanced.
        let honest = before.advanced(to: reading(wall: Self.t0 + 100 + 3600 + 60, boot: 60, id: "boot-b"))
        #expect(honest.elapsed == .seconds(100 + 3600 + 60))
        #expect(honest.bootID == "boot-b" && honest.boot == BootInstant(seconds: 60))
        // The wall clock 30 days ahead at the reboot: at most a day of downtime counts.
        let ahead = before.advanced(to: reading(wall: Self.t0 + 30 * Self.day, boot: 60, id: "boot-b"))
        #expect(ahead.elapsed == .seconds(100 + 60) + RetentionClock.rebootGapLimit)
        // The wall clock behind: no downtime, but the time since boot still counts.
        let behind = before.advanced(to: reading(wall: Self.t0 - 30 * Self.day, boot: 60, id: "boot-b"))
        #expect(behind.elapsed == .seconds(160))
        // After the reboot, the new boot's clock drives it again.
        #expect(behind.advanced(to: reading(wall: 0, boot: 70, id: "boot-b")).elapsed == .seconds(170))
    }

    @Test("A crash between computing an advance and saving it loses nothing: advancing later from the saved state gives the same value")
    func crashBetweenSteps() {
        let saved = RetentionClock.start(reading(wall: Self.t0, boot: 100))
        let lost = saved.advanced(to: reading(wall: Self.t0 + 3, boot: 103)) // computed, never saved
        let next = reading(wall: Self.t0 + 9, boot: 109)
        #expect(saved.advanced(to: next).elapsed == lost.advanced(to: next).elapsed)
        // Across a reboot too (the downtime is measured from the last saved wall time).
        let rebooted = reading(wall: Self.t0 + 1000, boot: 50, id: "boot-b")
        #expect(saved.advanced(to: rebooted).elapsed == .seconds(1000))
    }

    @Test("Random walks: the value never decreases and never grows faster than the boot clock, plus one capped gap per reboot")
    func randomWalk() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var c = RetentionClock.start(reading(wall: Self.t0, boot: 0, id: "b0"))
            var boot = 0.0, realBoot = 0.0, reboots = 0, id = 0
            for _ in 0..<50 {
                let prev = c.elapsed
                if Int.random(in: 0..<10, using: &rng) == 0 {
                    id += 1; reboots += 1; boot = Double.random(in: 0...100, using: &rng)
                } else {
                    boot += Double.random(in: -5...1000, using: &rng)
                }
                realBoot += 1000
                let wall = Self.t0 + Double.random(in: -1e9...1e9, using: &rng)
                c = c.advanced(to: reading(wall: wall, boot: boot, id: "b\(id)"))
                #expect(c.elapsed >= prev)
            }
            #expect(c.elapsed.seconds <= realBoot + 100 * Double(reboots) + Double(reboots) * RetentionClock.rebootGapLimit.seconds + 1)
        }
    }
}

/// `RepeatLimiter`: the first failure at once, then at most one report per interval with the
/// suppressed count, and one report when it clears.
@Suite("Repeat limiter")
struct RepeatLimiterTests {
    @Test("A failure every second for five minutes: reported at 0, 60, 120, 180, 240 s with 59 suppressed each; cleared once")
    func everySecond() {
        var l = RepeatLimiter(interval: .seconds(60))
        var reports: [(Int, RepeatLimiter.Report)] = []
        for s in 0..<300 {
            if let r = l.failure(now: BootInstant(seconds: Double(s))) { reports.append((s, r)) }
        }
        #expect(reports.map(\.0) == [0, 60, 120, 180, 240])
        #expect(reports[0].1 == .failing(first: true, failures: 1, suppressed: 0))
        #expect(reports[1].1 == .failing(first: false, failures: 61, suppressed: 59))
        #expect(reports[4].1 == .failing(first: false, failures: 241, suppressed: 59))
        #expect(l.isFailing)
        #expect(l.success(now: BootInstant(seconds: 300)) == .cleared(failures: 300, suppressed: 59, lasted: .seconds(300)))
        #expect(!l.isFailing)
        #expect(l.success(now: BootInstant(seconds: 301)) == nil, "cleared once")
    }

    @Test("A new failure after it cleared is reported at once")
    func againAfterClear() {
        var l = RepeatLimiter(interval: .seconds(60))
        #expect(l.success(now: BootInstant(seconds: 1)) == nil, "nothing to clear")
        #expect(l.failure(now: BootInstant(seconds: 1)) == .failing(first: true, failures: 1, suppressed: 0))
        #expect(l.failure(now: BootInstant(seconds: 2)) == nil)
        #expect(l.success(now: BootInstant(seconds: 3)) == .cleared(failures: 2, suppressed: 1, lasted: .seconds(2)))
        #expect(l.failure(now: BootInstant(seconds: 4)) == .failing(first: true, failures: 1, suppressed: 0))
    }

    @Test("Fields for the journal")
    func fields() {
        #expect(RepeatLimiter.Report.failing(first: false, failures: 61, suppressed: 59).fields == ["failures": 61, "suppressed": 59])
        #expect(RepeatLimiter.Report.cleared(failures: 3, suppressed: 1, lasted: .seconds(2.04)).fields["lasted_s"] == 2.0)
    }
}
