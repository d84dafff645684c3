import Foundation
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

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
        #expect(state.journalEvents("chat-delivery-failed").count == 2)
        let journalText = try String(contentsOfFile: state.dir.journal, encoding: .utf8)
        #expect(!journalText.contains("SECRET"))
        #expect(service.adapterStatus.first?.circuit == .closed) // the server answered
    }

    @Test func anOutageLongerThanMaxAttemptsLosesNothing() throws {
        // Down (503, then connection refused-like 500s) for 10 s with max_attempts 3: every
        // message is delivered after, each once, in order; the head was reported stuck once.
        let start = Clock.boot()
        let server = try HTTPTestServer { _ in Clock.boot() - start < .seconds(10) ? .status(503, "down") : .status(200, "ok") }
        defer { server.stop() }
        let state = try TempState()
        var config = webhookConfig(server)
        config.maxAttempts = 3
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        let n = Notifier(stateDir: state.dir, config: config, journal: state.journal)
        for i in 1...4 { n.notify(key: "heal-\(i)", text: "notice \(i)") }
        #expect(try pumpUntil(service, timeout: .seconds(40)) { try state.outboxRows().allSatisfy { $0.state == .delivered } })
        let delivered = server.requests.filter { $0.headers["idempotency-key"] != nil }
        let okKeys = server.requests.enumerated().compactMap { i, r in server.responses[i] == 200 ? r.headers["idempotency-key"] : nil }
        #expect(okKeys == ["heal-1", "heal-2", "heal-3", "heal-4"])
        #expect(delivered.count > 4) // it did retry through the outage
        #expect(state.journalEvents("chat-delivery-failed").isEmpty)
        #expect(state.journalEvents("chat-delivery-stuck").count == 1) // the head, once
    }

    @Test func maxAgeFailsVisiblyAndIsToldThroughTheOtherAdapters() throws {
        let server = try HTTPTestServer { _ in .status(500, "down") }
        defer { server.stop() }
        let state = try TempState()
        var config = webhookConfig(server)
        config.adapters = ["webhook", "console"]
        config.maxAttempts = 2
        config.maxAge = .milliseconds(1500)
        config.circuitFailures = 100
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        Notifier(stateDir: state.dir, config: config, journal: state.journal).notify(key: "k", text: "the bridge healed")
        #expect(try pumpUntil(service) {
            try state.outboxRows().contains { $0.adapter == "webhook" && $0.state == .failed }
                && state.outboxRows().contains { $0.key.hasPrefix("undelivered:") && $0.state == .delivered }
        })
        let row = try #require(try state.outboxRows().first { $0.adapter == "webhook" && $0.key == "k" })
        #expect(row.attempts > 2) // max_attempts did not end it; the age did
        #expect(row.lastError?.hasPrefix("gave up after") == true)
        #expect(state.journalEvents("chat-delivery-stuck").count == 1)
        // Told once through the console, never back to the webhook.
        let told = try state.outboxRows().filter { $0.key.hasPrefix("undelivered:") }
        #expect(told.map(\.adapter) == ["console"])
        let log = try String(contentsOfFile: state.dir.chatLog, encoding: .utf8)
        #expect(log.contains("a message to webhook could not be delivered") && log.contains("the bridge healed"))
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
        // The worker journals the change just after it sets the state that status shows.
        #expect(waitUntil(timeout: .seconds(5)) { state.journalEvents("chat-circuit").first?["circuit"] == "open" })
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
