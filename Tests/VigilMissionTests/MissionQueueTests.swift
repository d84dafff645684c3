import Foundation
import Testing
import VigilCore
import VigilStore
import VigilSystem

/// The queue's transitions on a real database, without processes.
extension MissionTests {
    private func withQueue(_ body: (MissionQueue) throws -> Void) throws {
        let env = try MissionEnv("queue")
        defer { env.finish() }
        try body(try env.queue)
    }

    private func result(_ m: Mission, exit: Int32, signal: Int32? = nil) -> MissionResult {
        MissionResult(mission: m.id, attempt: m.attempts, exitCode: exit, signal: signal, reason: nil, childPID: nil, started: "", finished: "")
    }

    @Test func claimIsFIFOPerKey() throws {
        try withQueue { q in
            let a = try q.enqueue(argv: ["a"], cwd: "/", lockKey: "k")
            let b = try q.enqueue(argv: ["b"], cwd: "/", lockKey: "k")
            let c = try q.enqueue(argv: ["c"], cwd: "/")
            let d = try q.enqueue(argv: ["d"], cwd: "/", lockKey: "k")
            var view = try q.lockView()
            #expect(try [a, b, c, d].map { view.state(of: try #require(try q.mission($0))) } == [.pending, .waiting, .pending, .waiting])

            let first = try q.claim(limit: 10)
            #expect(first.map(\.id) == [a, c]) // b and d wait for a
            view = try q.lockView()
            #expect(view.held == ["k": a])
            #expect(try q.claim(limit: 10).isEmpty)

            let ma = try #require(try q.mission(a))
            #expect(try q.finish(id: a, attempt: ma.attempts, result: result(ma, exit: 0)) == .done)
            #expect(try q.finish(id: a, attempt: ma.attempts, result: result(ma, exit: 0)) == nil) // stale: nothing changes
            #expect(try q.claim(limit: 10).map(\.id) == [b])
            #expect(try q.releaseStaleLocks() == 0)
            #expect(try q.db.integrityProblems() == [])
            #expect(try q.db.scalarInt("PRAGMA user_version") == Int64(Schema.currentVersion))
        }
    }

    @Test func shimDeathsCountAttempts() throws {
        try withQueue { q in
            let id = try q.enqueue(argv: ["x"], cwd: "/", lockKey: "k", maxAttempts: 2)
            var m = try #require(try q.claim(limit: 1).first)
            #expect(try q.shimDied(id: id, attempt: m.attempts, reason: "never started", countAttempt: false) == .requeuedUncounted)
            #expect(try q.mission(id)?.attempts == 0)
            m = try #require(try q.claim(limit: 1).first)
            #expect(try q.shimDied(id: id, attempt: m.attempts, reason: "died") == .requeued(attempts: 1))
            #expect(try q.lockView().held.isEmpty)
            m = try #require(try q.claim(limit: 1).first)
            #expect(m.attempts == 2)
            guard case .failed(let reason)? = try q.shimDied(id: id, attempt: m.attempts, reason: "died") else {
                Issue.record("not failed after the max")
                return
            }
            #expect(reason.contains("attempt 2 of 2; giving up"))
            #expect(try q.mission(id)?.state == .failed)
        }
    }

    @Test func cancelOutcomes() throws {
        try withQueue { q in
            let pending = try q.enqueue(argv: ["p"], cwd: "/")
            #expect(try q.requestCancel(id: pending) == .cancelled)
            #expect(try q.requestCancel(id: pending) == .alreadyFinished(.cancelled))
            #expect(try q.requestCancel(id: 999) == .notFound)
            let running = try q.enqueue(argv: ["r"], cwd: "/")
            let m = try #require(try q.claim(limit: 1).first)
            #expect(m.id == running)
            #expect(try q.requestCancel(id: running) == .requested)
            #expect(try q.requestCancel(id: running) == .alreadyRequested)
            #expect(try q.finish(id: running, attempt: m.attempts, result: result(m, exit: 143, signal: 15)) == .cancelled)
            #expect(try q.mission(running)?.reason == "cancelled by an operator (killed by SIGTERM)")
        }
    }
}
