import Glibc
import VigilCore

/// A signal number as a value, so callers outside VigilSystem need not import Glibc for
/// `SIGTERM` (in the manner of swift-subprocess's `Signal`).
public struct Signal: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let hangup = Signal(rawValue: SIGHUP)
    public static let interrupt = Signal(rawValue: SIGINT)
    public static let kill = Signal(rawValue: SIGKILL)
    public static let terminate = Signal(rawValue: SIGTERM)
    /// SIGCONT: a stopped process cannot act on SIGTERM until it runs again.
    public static let resume = Signal(rawValue: SIGCONT)
    /// SIGSTOP.
    public static let stop = Signal(rawValue: SIGSTOP)
    /// Signal 0: delivers nothing, only asks whether the process could be signalled.
    public static let probe = Signal(rawValue: 0)

    /// "SIGTERM".
    public var description: String { SignalName.of(rawValue) }
}
