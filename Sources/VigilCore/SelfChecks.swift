/// The runner's scheduled self-checks as a pure state machine (docs/operator-guide.md,
/// "Self-checks"): which checks are due, and what to do with each result. A check that fails
/// `repairAfter` times in a row gets its safe repair (or, when it has none, a person is told
/// once); chat hears of it then and once more when it passes again. Nothing here runs a check.
public struct SelfChecks: Equatable, Sendable {
    /// Failures in a row before the repair (and the message).
    public static let repairAfter = 3

    public struct Check: Equatable, Sendable {
        public var interval: TimeSpan
        public var lastRun: BootInstant?
        public var failuresInARow = 0
        /// Chat was told it fails (it is told again only after it passed once).
        public var told = false
        public var lastSummary: String?

        public init(interval: TimeSpan) { self.interval = interval }
    }

    public private(set) var checks: [String: Check]

    /// `intervals`: each check's name and how often it runs (the first run is one interval
    /// after `start`, so a starting runner is not slowed by them).
    public init(intervals: [String: TimeSpan], start: BootInstant) {
        checks = intervals.mapValues { var c = Check(interval: $0); c.lastRun = start; return c }
    }

    /// The checks due at `now`, by name.
    public func due(now: BootInstant) -> [String] {
        checks.filter { _, c in c.lastRun.map { now - $0 >= c.interval } ?? true }.keys.sorted()
    }

    /// When the next check is due.
    public var nextDeadline: BootInstant? {
        checks.values.compactMap { c in c.lastRun.map { $0 + c.interval } }.min()
    }

    /// These checks were started at `now` (a check that is running is not due again until it
    /// has its interval after this).
    public mutating func started(_ names: [String], now: BootInstant) {
        for n in names { checks[n]?.lastRun = now }
    }

    public enum Result: Equatable, Sendable {
        case passed
        /// What is wrong, in one line; `repairable`: the check has a safe repair.
        case failed(summary: String, repairable: Bool)
        /// The check could not run (its process failed): counts neither way.
        case unknown
    }

    public enum Action: Equatable, Sendable {
        /// Run the check's safe repair; `tell`: chat hears what it did (the first repair since
        /// the check last passed; later ones are journaled only).
        case repair(check: String, failures: Int, summary: String, tell: Bool)
        /// It has no safe repair: tell chat once (a person must act).
        case tellPerson(check: String, failures: Int, summary: String)
        /// It passes again after chat was told it failed.
        case tellCleared(check: String)
    }

    /// Records a result; returns what to do. After a repair the count starts again, so a
    /// repair that did not help is tried again after `repairAfter` more failures (quietly:
    /// chat was told already).
    public mutating func record(_ name: String, _ result: Result) -> [Action] {
        guard var c = checks[name] else { return [] }
        defer { checks[name] = c }
        switch result {
        case .unknown:
            return []
        case .passed:
            c.failuresInARow = 0
            c.lastSummary = nil
            guard c.told else { return [] }
            c.told = false
            return [.tellCleared(check: name)]
        case .failed(let summary, let repairable):
            c.failuresInARow += 1
            c.lastSummary = summary
            guard c.failuresInARow >= SelfChecks.repairAfter else { return [] }
            let n = c.failuresInARow
            let firstTime = !c.told
            c.told = true
            if repairable {
                c.failuresInARow = 0
                return [.repair(check: name, failures: n, summary: summary, tell: firstTime)]
            }
            return firstTime ? [.tellPerson(check: name, failures: n, summary: summary)] : []
        }
    }
}
