import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Reply bodies are capped (docs/chat.md, "Reply size caps"): a chat server that answers with
/// hundreds of megabytes cannot grow the bridge. Real `vigil bridge` processes against the
/// real local HTTP server, which streams the huge body (never holds it).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ReplyCapTests {
    /// The peak resident size of a live process (`VmHWM` in /proc/PID/status), in bytes.
    static func peakRSS(_ pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return nil }
        return kb * 1024
    }

    /// A 300 MB webhook reply (with and without Content-Length): the status decides (200 →
    /// delivered, 503 → retried), the bridge reads about 1 MiB of it and its peak RSS stays
    /// far below the reply (bound 100 MB; without the cap it held the whole reply).
    @Test(arguments: [false, true])
    func hugeWebhookReplyKeepsTheBridgeSmall(declareLength: Bool) throws {
        let state = try TempState()
        let size = (ProcessInfo.processInfo.environment["VIGIL_TEST_REPLY_MB"].flatMap { Int($0) } ?? 300) << 20
        let server = try HTTPTestServer { i in .huge(i == 0 ? 503 : 200, bytes: size, declareLength: declareLength) }
        defer { server.stop() }
        let json = """
        {"chat": {"adapters": ["webhook"], "backoff_initial": "50ms", "backoff_max": "100ms",
                  "webhook": {"url": "\(server.url)", "timeout": "20s"}}}
        """
        try json.write(toFile: state.dir.config, atomically: true, encoding: .utf8)
        let config = testConfig(adapters: ["webhook"], webhook: .init(url: server.url))
        Notifier(stateDir: state.dir, config: config, journal: state.journal).notify(key: "huge-reply-1", text: "hello")
        let bridge = try BridgeProcess(stateDir: state.path)
        defer { bridge.stop() }

        let delivered = try waitUntil(timeout: .seconds(60)) {
            try state.outboxRows().contains { $0.key == "huge-reply-1" && $0.state == .delivered }
        }
        #expect(delivered, "the message was not delivered: \((try? state.outboxRows()) ?? [])")
        let peak = try #require(ReplyCapTests.peakRSS(bridge.identity.pid))
        #expect(peak < 100 << 20, "bridge peak RSS \(peak >> 20) MB after a \(size >> 20) MB reply")
        #expect(server.responses.prefix(2) == [503, 200], "answers: \(server.responses)")
        let retried = try state.outboxRows().first { $0.key == "huge-reply-1" }
        #expect(retried?.attempts == 2)
        // Reading stopped near the cap: the kernel's socket buffers hold a few MB at most.
        let sent = server.streamedBytes.values.max() ?? 0
        #expect(sent < 64 << 20, "the server could send \(sent >> 20) MB: the client kept reading")
        print("reply cap: bridge VmHWM \(peak >> 10) KiB after two \(size >> 20) MB replies (Content-Length: \(declareLength)); at most \(sent >> 10) KiB of a reply was sent before the bridge hung up")
    }

    /// A Matrix /sync (or any Matrix call) whose reply is over its cap is a retryable failure
    /// that says so; a reply under the cap is read as before.
    @Test func matrixReplyOverItsCapIsRetried() throws {
        let server = try HTTPTestServer { i in i == 0 ? .huge(200, bytes: 40 << 20, declareLength: false) : .status(200, "{\"ok\":1}") }
        defer { server.stop() }
        let config = ChatConfig.Matrix(homeserver: "http://127.0.0.1:\(server.port)", accessToken: "TOKEN", room: "!r:example")
        #expect(config.maxSyncBytes == 16 << 20)
        let session = try MatrixSession(config)
        let client = HTTPClient()
        do {
            _ = try session.call(client, "GET", "/_matrix/client/v3/sync", token: "TOKEN", maxBody: config.maxSyncBytes)
            Issue.record("a 40 MB reply was accepted under a 16 MiB cap")
        } catch {
            guard case .retry(let why, _) = error else { Issue.record("not retryable: \(error)"); return }
            #expect(why.contains("over \(16 << 20) bytes"))
            #expect(!why.contains("TOKEN"))
        }
        let small = try session.call(client, "GET", "/_matrix/client/v3/sync", token: "TOKEN", maxBody: config.maxSyncBytes)
        #expect(small["ok"]?.intValue == 1)
    }

    @Test func maxSyncBytesIsConfigurable() throws {
        let decode = { (extra: String) throws -> ChatConfig.Matrix in
            try JSONDecoder().decode(ChatConfig.Matrix.self, from: Data("""
            {"homeserver": "http://127.0.0.1:1", "access_token": "t", "room": "!r:x"\(extra)}
            """.utf8))
        }
        #expect(try decode("").maxSyncBytes == 16 << 20)
        #expect(try decode(", \"max_sync_bytes\": 67108864").maxSyncBytes == 64 << 20)
        #expect(throws: (any Error).self) { try decode(", \"max_sync_bytes\": 10") }
    }
}
