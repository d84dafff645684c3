import Foundation
import Testing
@testable import VigilApp
import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// A mission queued from Matrix keeps the command's message (`missions.chat_ref`), and its end
/// notice replies to it, in its thread, mentioning who queued it (docs/chat.md, "Mission notices").
@Suite struct MissionChatRefTests {
    @Test func endNoticeRepliesToTheCommandThatQueuedIt() throws {
        let env = try MissionEnv("chat-ref")
        defer { env.finish() }
        _ = try env.add(["/bin/true"]) // the schema, and a mission without a ref
        let ref = ChatRef(adapter: "matrix", event: "$cmd", thread: "$root", sender: "@alice:vigil.test", inbox: 3)
        let id = try env.queue.enqueue(argv: ["/bin/true"], cwd: env.root, queuedBy: "chat @alice:vigil.test", chatRef: ref.json)
        #expect(ChatRef.parse(try env.mission(id).chatRef) == ref)
        #expect(try env.mission(id - 1).chatRef == nil)

        let runner = try MissionRunner(stateDir: env.state, journal: Journal(path: env.state.journal, source: "test"), maxParallel: 2,
                                       shimExecutable: vigilPath, notify: { _, _ in })
        runner.endNoticesInOutbox = (["console", "matrix"], { $0 })
        _ = try runner.recover()
        let end = Clock.boot() + .seconds(30)
        while Clock.boot() < end, try env.mission(id).state != .done || env.mission(id - 1).state != .done {
            try runner.tick(now: Clock.boot())
            usleep(20_000)
        }
        #expect(try env.mission(id).state == .done)
        let outbox = Outbox(try env.queue.db)
        let console = try #require(try outbox.message(key: "mission-\(id)-1-end", adapter: "console"))
        #expect(console.body == "Mission \(id) (queued by @alice:vigil.test) done (exit 0).")
        #expect(console.html == nil && console.meta.isEmpty)
        let matrix = try #require(try outbox.message(key: "mission-\(id)-1-end", adapter: "matrix"))
        #expect(matrix.body == console.body)
        #expect(matrix.meta == OutboxMeta(replyTo: "$cmd", thread: "$root", mentions: ["@alice:vigil.test"]))
        #expect(matrix.html == "Mission \(id) (queued by <a href=\"https://matrix.to/#/@alice:vigil.test\">@alice:vigil.test</a>) done (exit 0).")
        print("sample: body=\(matrix.body) formatted_body=\(matrix.html ?? "")")
        // Without a ref: a plain notice, still with HTML for Matrix.
        let plain = try #require(try outbox.message(key: "mission-\(id - 1)-1-end", adapter: "matrix"))
        #expect(plain.meta.isEmpty && plain.html == ChatHTML.render(plain.body))
    }
}
