/// A failure that repeats (a corrupt or locked database seen on every tick) told at a bounded
/// rate: the first one at once, then at most one report per `interval` carrying how many
/// repeats were not told meanwhile, and one report when it clears. Pure: the caller passes the
/// boot-clock time and journals what it is told to (docs/architecture.md, "Repeated failures").
public struct RepeatLimiter: Equatable, Sendable {
    public var interval: TimeSpan
    /// When the current run of failures began (nil: not failing).
    public private(set) var failingSince: BootInstant?
    private var lastReport: BootInstant?
    /// Failures in the current run, and those not reported since the last report.
    public private(set) var failures = 0
    public private(set) var suppressed = 0

    public init(interval: TimeSpan = .seconds(60)) { self.interval = interval }

    public enum Report: Equatable, Sendable {
        /// Tell it: the run's `failures` so far and the `suppressed` repeats since the last
        /// report (0 for the first).
        case failing(first: Bool, failures: Int, suppressed: Int)
        /// The failure is over: it lasted `lasted` and happened `failures` times
        /// (`suppressed` of them never told).
        case cleared(failures: Int, suppressed: Int, lasted: TimeSpan)
    }

    public var isFailing: Bool { failingSince != nil }

    /// One more failure at `now`: a report to journal, or nil when it is to be kept quiet.
    public mutating func failure(now: BootInstant) -> Report? {
        failures += 1
        guard let last = lastReport, failingSince != nil else {
            failingSince = now
            lastReport = now
            failures = 1
            suppressed = 0
            return .failing(first: true, failures: 1, suppressed: 0)
        }
        // `now < last` cannot happen on the boot clock; should it, it does not unmute.
        guard now - last >= interval else {
            suppressed += 1
            return nil
        }
        let report = Report.failing(first: false, failures: failures, suppressed: suppressed)
        lastReport = now
        suppressed = 0
        return report
    }

    /// A success at `now`: `.cleared` once after a run of failures, otherwise nil.
    public mutating func success(now: BootInstant) -> Report? {
        guard let since = failingSince else { return nil }
        let report = Report.cleared(failures: failures, suppressed: suppressed, lasted: max(.zero, now - since))
        self = RepeatLimiter(interval: interval)
        return report
    }
}

extension RepeatLimiter.Report {
    /// The report's numbers as journal fields (`failures`, `suppressed`, and `lasted_s` when
    /// cleared).
    public var fields: [String: JSONValue] {
        switch self {
        case .failing(_, let failures, let suppressed):
            return ["failures": .int(Int64(failures)), "suppressed": .int(Int64(suppressed))]
        case .cleared(let failures, let suppressed, let lasted):
            return ["failures": .int(Int64(failures)), "suppressed": .int(Int64(suppressed)),
                    "lasted_s": .double((lasted.seconds * 10).rounded() / 10)]
        }
    }
}
