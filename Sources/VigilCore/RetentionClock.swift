/// The clock retention ages rows by (docs/architecture.md, "Retention clock"): time that a
/// wall-clock jump cannot move. Its value, `elapsed`, only grows, and only by what the boot
/// clock (`CLOCK_BOOTTIME`, which counts through suspend and never jumps) measured since the
/// last advance. A reboot resets the boot clock, so across one the value grows by the time
/// since this boot plus the downtime the wall clock claims, the latter capped at
/// `rebootGapLimit` and never negative: a wall jump can move it by at most that much, once.
///
/// Persisted (in the database) after every advance; rows are stamped with `elapsed` when they
/// become prunable and pruned once `elapsed` is `retention` past their stamp. Pure: the
/// readings are parameters, so jumps and reboots are tested with made-up values.
public struct RetentionClock: Equatable, Sendable {
    /// The clock's value: the time counted so far.
    public var elapsed: TimeSpan
    /// The readings at the last advance.
    public var boot: BootInstant
    public var bootID: String
    /// Wall clock, seconds since 1970 (used only across a reboot).
    public var wall: Double

    public init(elapsed: TimeSpan, boot: BootInstant, bootID: String, wall: Double) {
        self.elapsed = elapsed
        self.boot = boot
        self.bootID = bootID
        self.wall = wall
    }

    /// The most a reboot's downtime (as the wall clock tells it) adds.
    public static let rebootGapLimit = TimeSpan.seconds(86400)

    /// One reading of the clocks.
    public struct Reading: Equatable, Sendable {
        public var wall: Double
        public var boot: BootInstant
        public var bootID: String
        public init(wall: Double, boot: BootInstant, bootID: String) {
            self.wall = wall
            self.boot = boot
            self.bootID = bootID
        }
    }

    /// A new clock at 0 (the first advance of a database).
    public static func start(_ now: Reading) -> RetentionClock {
        RetentionClock(elapsed: .zero, boot: now.boot, bootID: now.bootID, wall: now.wall)
    }

    /// The clock advanced to `now`. Within one boot: by the boot clock's progress (a reading
    /// older than the last one, from a slower process, adds nothing and moves nothing back).
    /// Across a reboot: by the time since this boot plus the wall-clock downtime, capped.
    public func advanced(to now: Reading) -> RetentionClock {
        var next = self
        next.wall = now.wall
        if now.bootID == bootID {
            let step = now.boot - boot
            guard step > .zero else { return self }
            next.elapsed = elapsed + step
            next.boot = now.boot
            return next
        }
        let sinceBoot = max(.zero, TimeSpan(nanoseconds: now.boot.nanoseconds))
        // In seconds as a Double first: a wall clock centuries off must not overflow.
        let gap = now.wall - wall - sinceBoot.seconds
        let downtime = gap.isFinite ? TimeSpan.seconds(min(max(0, gap), RetentionClock.rebootGapLimit.seconds)) : .zero
        next.elapsed = elapsed + sinceBoot + downtime
        next.boot = now.boot
        next.bootID = now.bootID
        return next
    }

    /// Rows stamped before this value are older than `retention`.
    public func cutoff(retention: TimeSpan) -> TimeSpan { elapsed - retention }
}
