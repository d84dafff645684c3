import Foundation
import VigilCore
import VigilSystem

/// What a `waitUntil` that ran out of time throws (a test records the thrown error as an issue).
public struct WaitTimeout: Error, CustomStringConvertible {
    public var what: String
    public var detail: String
    public init(what: String, detail: String = "") {
        self.what = what
        self.detail = detail
    }
    public var description: String { "timed out waiting for \(what)" + (detail.isEmpty ? "" : "\n" + detail) }
}

/// The one polling loop: checks `condition` every `every` until it holds or `timeout` passes;
/// returns whether it held (checked once more at the deadline). Generous deadlines, never a
/// timed assertion.
@discardableResult
public func waitUntil(timeout: TimeSpan = .seconds(20), every: TimeSpan = .milliseconds(20), _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Clock.boot() + timeout
    while Clock.boot() < end {
        if try condition() { return true }
        usleep(UInt32(clamping: every.nanoseconds / 1000))
    }
    return try condition()
}

/// The same, throwing `WaitTimeout` naming `what` (and `detail()`, e.g. a journal tail) when
/// the condition never held.
public func waitUntil(_ what: @autoclosure () -> String, timeout: Double = 30, every: TimeSpan = .milliseconds(20),
                      detail: () -> String = { "" }, _ condition: () throws -> Bool) throws {
    if try waitUntil(timeout: .seconds(timeout), every: every, condition) { return }
    throw WaitTimeout(what: what(), detail: detail())
}
