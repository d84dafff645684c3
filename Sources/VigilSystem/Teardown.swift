import VigilCore

/// One step of ending a process, as a value (in the manner of swift-subprocess's
/// `TeardownStep`): send signals, then allow it some time to exit before the next step.
public enum TeardownStep: Sendable, Equatable {
    /// Sends `signals` in order (`[.resume, .terminate]`: a stopped process cannot act on
    /// SIGTERM), then waits up to `allowedDuration` for the exit (zero: does not wait).
    case send([Signal], allowedDuration: TimeSpan)
    /// SIGKILL, then waits up to `allowedDuration`.
    case kill(allowedDuration: TimeSpan)

    public var signals: [Signal] {
        switch self {
        case .send(let s, _): return s
        case .kill: return [.kill]
        }
    }

    public var allowedDuration: TimeSpan {
        switch self {
        case .send(_, let d), .kill(let d): return d
        }
    }
}

/// How to end a process: steps taken in order until it has exited. Performed by one function,
/// `PidFD.perform`; a loop that cannot block (the mission runner's tick) asks `due` for the
/// step to take now instead.
public struct Teardown: Sendable, Equatable {
    public var steps: [TeardownStep]

    public init(_ steps: [TeardownStep]) { self.steps = steps }

    /// SIGCONT + SIGTERM, `grace` to exit, then SIGKILL and up to `killWait`: how Vigil stops
    /// a bridge (and `vigil stop` one with no runner).
    public static func graceful(grace: TimeSpan, killWait: TimeSpan = .seconds(2)) -> Teardown {
        Teardown([.send([.resume, .terminate], allowedDuration: grace), .kill(allowedDuration: killWait)])
    }

    /// SIGTERM then SIGCONT, no wait: asks a process to end and goes on (the healer's tier 2).
    /// SIGTERM first: sent to a stopped process it stays pending, so the SIGCONT that lets it
    /// run delivers it before the process's next instruction. (SIGCONT first would let a
    /// stopped bridge run a loop turn, and beat, before SIGTERM arrives.)
    public static let terminate = Teardown([.send([.terminate, .resume], allowedDuration: .zero)])

    /// SIGCONT + SIGKILL, no wait (the healer's tier 3).
    public static let killNow = Teardown([.send([.resume, .kill], allowedDuration: .zero)])

    /// SIGKILL at once, up to `wait` for the exit.
    public static func kill(wait: TimeSpan = .seconds(2)) -> Teardown {
        Teardown([.kill(allowedDuration: wait)])
    }

    /// The index of the step due at `now` for a teardown whose steps up to `taken - 1` were
    /// taken, the last at `lastAt`; the last step repeats every `allowedDuration` while the
    /// process lives. Nil when nothing is due yet.
    public func due(taken: Int, lastAt: BootInstant?, now: BootInstant) -> Int? {
        guard !steps.isEmpty else { return nil }
        guard taken > 0, let lastAt else { return 0 }
        let previous = steps[min(taken, steps.count) - 1]
        guard now >= lastAt + previous.allowedDuration else { return nil }
        return min(taken, steps.count - 1)
    }
}

/// What a teardown did: only what the system calls did is in it.
public struct TeardownReport: Sendable, Equatable {
    /// The signals the kernel accepted, in order.
    public var sent: [Signal] = []
    /// Whether the process had exited by the end (as far as the last wait saw).
    public var exited = false
    /// Steps taken (1: the first sufficed or was the only one).
    public var stepsTaken = 0

    public init() {}

    /// True when a SIGKILL had to be sent.
    public var killed: Bool { sent.contains(.kill) }
}

extension PidFD {
    /// Takes `teardown`'s steps in order until the process has exited: the one function that
    /// ends a single process. Waits only as long as each step allows.
    @discardableResult
    public func perform(_ teardown: Teardown) -> TeardownReport {
        var report = TeardownReport()
        for step in teardown.steps {
            if hasExited { report.exited = true; return report }
            report.stepsTaken += 1
            for s in step.signals where signal(s) { report.sent.append(s) }
            let ns = step.allowedDuration.nanoseconds
            // Rounded up (never wakes early), at most an hour: as `poll` takes it.
            let ms = ns <= 0 ? 0 : Int32(min(3_600_000, (ns + 999_999) / 1_000_000))
            if ms > 0, waitForExit(timeoutMilliseconds: ms) { report.exited = true; return report }
        }
        report.exited = hasExited
        return report
    }
}

extension ProcessIdentity {
    /// `perform(teardown)` through a verified pidfd; nil (nothing sent) when the process is not
    /// this identity any more.
    @discardableResult
    public func perform(_ teardown: Teardown) -> TeardownReport? {
        openPidFD()?.perform(teardown)
    }
}
