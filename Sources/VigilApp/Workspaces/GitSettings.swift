import VigilCore

/// How the workspace git layer runs git (docs/workspaces.md, "Releasing a slot").
public struct GitSettings: Sendable, Equatable {
    /// The git executable: a path, or a name looked up in PATH.
    public var git = "git"
    /// The bound on each git command; it is killed (with its process group) after it.
    public var timeout: TimeSpan = .seconds(120)
    /// Tries of a network operation (clone, fetch, ls-remote); local steps are tried once.
    public var attempts = 3
    /// The pause before try 2, 3, …; the last one repeats when there are more tries than pauses.
    public var backoff: [TimeSpan] = [.seconds(1), .seconds(2), .seconds(4)]

    public init() {}

    /// The pause before try `attempt` (2 or more).
    func pause(before attempt: Int) -> TimeSpan {
        guard attempt >= 2, !backoff.isEmpty else { return .zero }
        return backoff[min(attempt - 2, backoff.count - 1)]
    }
}
