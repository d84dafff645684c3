import VigilCore
import VigilStore

/// What one delivery attempt came to.
enum DeliveryResult: Sendable, Equatable {
    /// The chat server has it (its id for the message, if it gives one).
    case delivered(remoteID: String?)
    /// Worth trying again (unreachable, 5xx, rate-limited): counts against the circuit.
    /// `after` is a wait the server asked for.
    case retry(String, after: TimeSpan?)
    /// Refused for good (4xx): the message is marked failed at once. The server answered, so
    /// the circuit counts it as a success.
    case failed(String)
    /// Shutdown cut the call short: the message goes back to pending.
    case cancelled
}

/// An outbound chat connection. `deliver` blocks and is called only on the adapter's own
/// delivery thread; `cancel` may be called from any thread (shutdown).
protocol ChatAdapter: AnyObject, Sendable {
    var name: String { get }
    /// How long a claim of a row lasts (the longest one call can take, plus a margin): past it,
    /// another deliverer may take the row over (`OutboxLifecycle`).
    var lease: TimeSpan { get }
    func deliver(_ message: OutboxMessage) -> DeliveryResult
    func cancel()
    /// Called once on the delivery thread before the first claim: log in, resolve, join — so
    /// the first message (perhaps the circuit alert) does not wait for that. Failures are left
    /// for `deliver` to meet and report.
    func prepare()
    /// What is wrong with the adapter's destination that retrying will not fix (Matrix: the
    /// room is not reachable, or encrypted), for the chat status file. Nil: nothing known.
    var problem: String? { get }
}

extension ChatAdapter {
    func prepare() {}
    var problem: String? { nil }
}

extension DeliveryResult {
    /// The pure core's name for it.
    var outcome: OutboxLifecycle.Outcome {
        switch self {
        case .delivered(let id): return .delivered(remoteID: id)
        case .retry(let why, let after): return .retryable(why, after: after)
        case .failed(let why): return .refused(why)
        case .cancelled: return .cancelled
        }
    }
}
