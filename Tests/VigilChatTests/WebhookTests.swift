import Foundation
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem

@Suite(.serialized, .timeLimit(.minutes(1))) struct WebhookTests {
    func webhookConfig(_ server: HTTPTestServer, timeout: TimeSpan = .seconds(5)) -> ChatConfig {
        testConfig(adapters: ["webhook"], webhook: .init(url: server.url, headers: ["Authorization": "Bearer SECRET-TOKEN-456"],
                                                         username: "vigil", timeout: timeout), maxAttempts: 4)
    }

    @Test func twoHundredIsDeliveredOnce() throws {
        let server = try HTTPTestServer { _ in .status(200, "ok") }
        defer { server.stop() }
        let state = try TempState()
        let config = webhookConfig(server)
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        Notifier(stateDir: state.dir, config: config, journal: state.journal)
            .notify(key: "heal:1", text: "bridge healed <!channel> @here & done")
        #expect(try pumpUntil(service) { try state.outboxRows().first?.state == .delivered })
        // Nothing more goes out for it.
        service.shutdown(deadline: Clock.boot() + .seconds(1))
        #expect(server.requests.count == 1)
        let req = try #require(server.requests.first)
        #expect(req.method == "POST" && req.path == "/hooks/SECRET-PATH-123")
        #expect(req.headers["authorization"] == "Bearer SECRET-TOKEN-456")
        #expect(req.headers["content-type"] == "application/json")
        #expect(req.headers["idempotency-key"] == "heal:1")
        let json = try #require(JSONValue.parse(req.body))
        #expect(json["username"] == "vigil")
        // Slack/Mattermost control sequences and mass mentions are defused.
        #expect(json["text"]?.stringValue == "bridge healed &lt;!channel&gt; @\u{200B}here &amp; done")
    }

    @Test func fiveHundredIsRetriedUntilItWorks() throws {
        let server = try HTTPTestServer { i in i < 2 ? .status(503, "busy") : .status(204, "") }
        defer { server.stop() }
        let state = try TempState()
        let config = webhookConfig(server)
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        Notifier(stateDir: state.dir, config: config, journal: state.journal).notify(key: "k", text: "hello")
        #expect(try pumpUntil(service) { try state.outboxRows().first?.state == .delivered })
        let row = try #require(try state.outboxRows().first)
        #expect(row.attempts == 3)
        #expect(server.requests.count == 3)
    }

    @Test func fourHundredFailsFastAndIsRecordedWithoutSecrets() throws {
        let server = try HTTPTestServer { _ in .status(404, "no such hook") }
        defer { server.stop() }
        let state = try TempState()
        let config = webhookConfig(server)
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        let n = Notifier(stateDir: state.dir, config: config, journal: state.journal)
        n.notify(key: "a", text: "first")
        n.notify(key: "b", text: "second")
        #expect(try pumpUntil(service) { try state.outboxRows().allSatisfy { $0.state == .failed } })
        let rows = try state.outboxRows()
        #expect(rows.map(\.attempts) == [1, 1])
        #expect(server.requests.count == 2)
        let error = try #require(rows[0].lastError)
        #expect(error.contains("HTTP 404") && error.contains("no such hook"))
        // Secrets (URL path, header values) are in no error, status or journal line.
        #expect(!error.contains("SECRET"))
        #expect(state.journalEvents("chat_delivery_failed").count == 2)
        let journalText = try String(contentsOfFile: state.dir.journal, encoding: .utf8)
        #expect(!journalText.contains("SECRET"))
        #expect(service.adapterStatus.first?.circuit == .closed) // the server answered
    }

    @Test func maxAttemptsMarksFailedVisibly() throws {
        let server = try HTTPTestServer { _ in .status(500, "down") }
        defer { server.stop() }
        let state = try TempState()
        var config = webhookConfig(server)
        config.maxAttempts = 2
        config.circuitFailures = 100
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        Notifier(stateDir: state.dir, config: config, journal: state.journal).notify(key: "k", text: "x")
        #expect(try pumpUntil(service) { try state.outboxRows().first?.state == .failed })
        let row = try #require(try state.outboxRows().first)
        #expect(row.attempts == 2)
        #expect(row.lastError?.hasPrefix("gave up after 2 attempts") == true)
    }

    @Test func hungServerOpensTheCircuitWithoutBlockingTheLoop() throws {
        let server = try HTTPTestServer { _ in .hang }
        defer { server.stop() }
        let state = try TempState()
        let config = webhookConfig(server, timeout: .milliseconds(1500))
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        Notifier(stateDir: state.dir, config: config, journal: state.journal).notify(key: "k", text: "x")
        var longest = TimeSpan.zero
        #expect(pumpUntil(service, longestPump: &longest) { service.adapterStatus.first?.circuit == .open })
        // The bridge's loop never waited on the network: a pump that did would take a whole
        // request timeout (1.5 s); the bound only has to separate the two.
        #expect(longest < .seconds(1))
        #expect(state.journalEvents("chat_circuit").first?["circuit"] == "open")
        // Server healthy again: the half-open trial closes the circuit and the message goes.
        server.setScript { _ in .status(200, "ok") }
        #expect(try pumpUntil(service) { try state.outboxRows().first?.state == .delivered })
        #expect(service.adapterStatus.first?.circuit == .closed)
        // Shutdown with a call in flight returns by its deadline.
        // Shutdown with a call in flight cancels it: the message goes back to pending.
        server.setScript { _ in .hang }
        let before = server.requests.count
        Notifier(stateDir: state.dir, config: config, journal: state.journal).notify(key: "k2", text: "y")
        #expect(waitUntil { server.requests.count > before })
        service.shutdown(deadline: Clock.boot() + .milliseconds(100))
        let last = try #require(try state.outboxRows().last)
        #expect(last.state == .pending)
        #expect(last.lastError == "interrupted by shutdown")
    }
}
