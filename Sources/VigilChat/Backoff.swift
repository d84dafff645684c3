import VigilCore

/// Exponential backoff with jitter, capped: attempt n waits `initial × 2^(n−1)`, at most `max`,
/// of which the fraction `jitter` is random (so a fleet of bridges does not retry in lockstep).
public struct Backoff: Sendable, Equatable {
    public var initial: TimeSpan
    public var max: TimeSpan
    public var jitter: Double

    public init(initial: TimeSpan, max: TimeSpan, jitter: Double = 0.5) {
        self.initial = initial
        self.max = Swift.max(initial, max)
        self.jitter = Swift.min(1, Swift.max(0, jitter))
    }

    /// The wait after the `attempt`-th failed attempt (1-based). `random` in 0…1.
    public func delay(afterAttempt attempt: Int, random: Double) -> TimeSpan {
        let exponent = Double(Swift.min(Swift.max(attempt, 1) - 1, 40))
        let full = Swift.min(max.seconds, initial.seconds * pow2(exponent))
        return .seconds(full * (1 - jitter) + full * jitter * Swift.min(1, Swift.max(0, random)))
    }

    public func delay(afterAttempt attempt: Int) -> TimeSpan {
        delay(afterAttempt: attempt, random: Double.random(in: 0...1))
    }

    private func pow2(_ e: Double) -> Double {
        var r = 1.0
        for _ in 0..<Int(e) { r *= 2 }
        return r
    }
}

/// A circuit breaker for one adapter. Closed: calls go through. After `threshold` consecutive
/// failures it opens: no calls until `cooloff` has passed; then half-open: one trial call.
/// Success closes it; a failed trial opens it again with the cool-off doubled (up to `maxCooloff`).
/// Pure state machine: the caller supplies the times.
public struct CircuitBreaker: Sendable, Equatable {
    public enum State: String, Sendable, Codable {
        case closed
        case open
        case halfOpen = "half-open"
    }

    public let threshold: Int
    public let cooloff: TimeSpan
    public let maxCooloff: TimeSpan
    public private(set) var state: State = .closed
    public private(set) var consecutiveFailures = 0
    /// When an open circuit lets the next trial through.
    public private(set) var openUntil: BootInstant?
    private var currentCooloff: TimeSpan

    public init(threshold: Int, cooloff: TimeSpan, maxCooloff: TimeSpan) {
        self.threshold = Swift.max(1, threshold)
        self.cooloff = cooloff
        self.maxCooloff = Swift.max(cooloff, maxCooloff)
        self.currentCooloff = cooloff
    }

    /// Whether a call may go out now (an open circuit past its cool-off becomes half-open).
    public mutating func allows(now: BootInstant) -> Bool {
        switch state {
        case .closed, .halfOpen: return true
        case .open:
            if let until = openUntil, now >= until {
                state = .halfOpen
                return true
            }
            return false
        }
    }

    /// Records a successful call. Returns the previous state when this changed it.
    @discardableResult
    public mutating func recordSuccess() -> State? {
        let old = state
        consecutiveFailures = 0
        currentCooloff = cooloff
        openUntil = nil
        state = .closed
        return old == .closed ? nil : old
    }

    /// Records a failed call (server unreachable or erroring). Returns the new state when it changed.
    @discardableResult
    public mutating func recordFailure(now: BootInstant) -> State? {
        consecutiveFailures += 1
        switch state {
        case .halfOpen:
            currentCooloff = TimeSpan(nanoseconds: Swift.min(maxCooloff.nanoseconds, currentCooloff.nanoseconds * 2))
            state = .open
            openUntil = now + currentCooloff
            return .open
        case .closed where consecutiveFailures >= threshold:
            state = .open
            openUntil = now + currentCooloff
            return .open
        default:
            return nil
        }
    }
}
