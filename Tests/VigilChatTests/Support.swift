import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// A fresh state directory under /tmp, removed at deinit.
final class TempState: @unchecked Sendable {
    let path: String
    let dir: StateDirectory
    let journal: Journal

    init() throws {
        path = try TempDir.make("vigil-chat-test")
        dir = StateDirectory(path)
        try dir.prepare()
        journal = Journal(path: dir.journal, source: "test")
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func database() throws -> Database { try Database(path: dir.database) }

    func journalEvents(_ event: String) -> [[String: JSONValue]] {
        Journal.read(path: dir.journal).entries.filter { $0["event"]?.stringValue == event }
    }

    func outboxRows() throws -> [OutboxMessage] { try Outbox(try database()).list(limit: 10_000) }
}

/// A command handler that records what it was asked.
final class RecordingHandler: ChatCommandHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [(ChatCommand, String)] = []
    var calls: [(command: ChatCommand, sender: String)] { lock.withLock { seen.map { ($0.0, $0.1) } } }

    func handle(_ command: ChatCommand, sender: String) -> String {
        lock.withLock { seen.append((command, sender)) }
        switch command {
        case .status: return "status: all good"
        case .mission(let text): return "mission queued: \(text)"
        default: return "ok \(command.name)"
        }
    }
}

/// Runs a bridge-like loop (pump, then poll the wake descriptors) until `condition` holds or
/// `timeout` passes. Returns whether it held. Also records the longest pump.
@discardableResult
func pumpUntil(_ service: ChatService, timeout: TimeSpan = .seconds(20), longestPump: UnsafeMutablePointer<TimeSpan>? = nil,
               _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Clock.boot() + timeout
    while Clock.boot() < end {
        let t0 = Clock.boot()
        service.pump(now: t0)
        let took = Clock.boot() - t0
        if let longestPump, took > longestPump.pointee { longestPump.pointee = took }
        if try condition() { return true }
        var wait: Int64 = 50
        if let next = service.nextWake { wait = max(0, min(wait, (next - Clock.boot()).nanoseconds / 1_000_000)) }
        _ = pollReadable(service.wakeDescriptors, timeoutMilliseconds: Int32(wait))
    }
    return try condition()
}

func testConfig(adapters: [String] = ["console"], webhook: ChatConfig.Webhook? = nil, matrix: ChatConfig.Matrix? = nil,
                maxAttempts: Int = 5) -> ChatConfig {
    ChatConfig(adapters: adapters, maxAttempts: maxAttempts, backoffInitial: .milliseconds(50), backoffMax: .milliseconds(400),
               backoffJitter: 0.5, circuitFailures: 3, circuitCooloff: .milliseconds(300), circuitCooloffMax: .seconds(1),
               webhook: webhook, matrix: matrix)
}
