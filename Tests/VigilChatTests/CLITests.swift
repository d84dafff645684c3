import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil say` and `vigil outbox`, run as the built binary.
@Suite(.serialized, .timeLimit(.minutes(1))) struct CLITests {
    static var vigil: String { Binaries.vigil }

    struct Run {
        var status: Int32
        var output: String
    }

    func run(_ args: [String], state: TempState) throws -> Run {
        let out = state.path + "/cli-\(UInt32.random(in: 0...UInt32.max)).out"
        var opts = Spawner.Options()
        opts.outputPath = out
        opts.newSession = false
        let child = try Spawner.spawn([CLITests.vigil, "--state-dir", state.path] + args, opts)
        let status = Spawner.wait(child.pid) ?? -1
        defer { unlink(out) }
        return Run(status: exitCode(fromWaitStatus: status), output: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    @Test func sayStoresTheCommandAndConfirms() throws {
        let state = try TempState()
        let r = try run(["say", "mission", "fix", "the\u{1b}[2J", "build"], state: state)
        #expect(r.status == 0)
        #expect(r.output.contains("Sent to the bridge (command #1): mission fix the[2J build"))
        let cmd = try #require(try ChatInbox(try state.database()).command(id: 1))
        #expect(cmd.adapter == "console" && cmd.sender == "console" && cmd.state == "new")
        #expect(cmd.body == "mission fix the[2J build")
        #expect(try run(["say"], state: state).status == 2)
    }

    @Test func sayWaitPrintsTheBridgesReply() throws {
        let state = try TempState()
        // The service belongs to the loop's thread (ChatService is not Sendable): made, pumped
        // and shut down there; the test goes on once it exists.
        let ready = DispatchSemaphore(value: 0)
        let loop = Thread {
            let service: ChatService
            do {
                service = try ChatService(stateDir: state.dir, config: testConfig(), journal: state.journal, handler: RecordingHandler())
            } catch {
                Issue.record("cannot make the chat service: \(error)")
                ready.signal()
                return
            }
            defer { service.shutdown(deadline: Clock.boot() + .seconds(1)) }
            ready.signal()
            pumpUntil(service, timeout: .seconds(20)) { FileManager.default.fileExists(atPath: state.path + "/stop-loop") }
        }
        loop.start()
        ready.wait()
        defer { _ = FileManager.default.createFile(atPath: state.path + "/stop-loop", contents: nil) }
        let r = try run(["say", "--wait", "15s", "/status"], state: state)
        #expect(r.status == 0)
        #expect(r.output.contains("status: all good"))
        _ = FileManager.default.createFile(atPath: state.path + "/stop-loop", contents: nil)
        #expect(waitUntil { loop.isFinished })
    }

    @Test func outboxJSONHasTheContractFields() throws {
        let state = try TempState()
        let outbox = Outbox(try state.database())
        try outbox.enqueue(key: "heal:1", adapter: "console", body: "restarted")
        try outbox.enqueue(key: "heal:2", adapter: "matrix", body: "also")
        guard case .claimed(let m, _) = try outbox.claimNext(adapter: "matrix", now: Clock.boot(), owner: "x") else { Issue.record("no claim"); return }
        try outbox.markFailed(id: m.id, owner: "x", error: "HTTP 403 M_FORBIDDEN")
        let r = try run(["outbox", "--json"], state: state)
        #expect(r.status == 0)
        guard case .array(let items)? = JSONValue.parse(Data(r.output.utf8)) else { Issue.record("not a JSON array: \(r.output)"); return }
        #expect(items.count == 2)
        for item in items {
            for field in ["id", "key", "adapter", "state", "attempts", "body"] { #expect(item[field] != nil, "missing \(field)") }
        }
        #expect(items.map { $0["state"]?.stringValue } == ["pending", "failed"])
        let table = try run(["outbox"], state: state)
        #expect(table.output.contains("last error: HTTP 403 M_FORBIDDEN"))
        #expect(table.output.contains("1 pending, 0 sending, 0 delivered, 1 failed"))
        let retry = try run(["outbox", "--retry", "failed"], state: state)
        #expect(retry.status == 0)
        #expect(try outbox.counts()["pending"] == 2)
        #expect(try run(["outbox", "--state", "lost"], state: state).status == 2)
    }
}
