import Foundation
// Tooling, not product: the benchmark acts on processes and sockets from outside with libc
// directly (kill, SIGSTOP, a socket server), as a second program would; the product does that
// only through VigilSystem (docs/architecture.md, "One syscall edge").
import Glibc
import VigilChat
import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil-bench chat`: time from a heal notification to the message visible in a real Matrix
/// room (a throwaway Synapse on 127.0.0.1), with a healthy bridge and after a bridge respawn.
enum ChatBench {
    static let help = """
    usage: vigil-bench chat [--trials N] [--venv DIR]

    Starts a Synapse homeserver on 127.0.0.1 (installing it with scripts/setup-synapse when
    needed), runs a chat service like the bridge does, and measures:
      heal → room       Notifier.notify (as the runner does) until an operator's /sync sees it
      respawn → room    a message queued while no bridge ran, until seen, from the new
                        bridge's first loop turn
    Nothing touches the state directory: the benchmark uses its own temporary one.

    options:
      --trials N   trials per figure (default 20)
      --venv DIR   the Synapse venv (default $VIGIL_SYNAPSE_VENV or .venv-synapse in the repository)
    """

    static func run(_ args: [String], stateDir: StateDirectory, json: Bool = false) throws {
        let a = try Arguments(args, valued: ["trials", "venv"])
        let trials = try a.int("trials", min: 1) ?? 20
        let venv: String
        if let v = a.value("venv") {
            venv = v
        } else if FileManager.default.isExecutableFile(atPath: Binaries.repoRoot + "/scripts/setup-synapse") {
            printErr("bench chat: making sure Synapse is installed (scripts/setup-synapse)…\n")
            venv = try SynapseServer.install()
        } else if let v = ProcessInfo.processInfo.environment["VIGIL_SYNAPSE_VENV"] {
            venv = v
        } else {
            throw CommandError("cannot find a Synapse venv: pass --venv DIR (made by scripts/setup-synapse)")
        }
        printErr("bench chat: starting Synapse…\n")
        let server = try SynapseServer.start(venv: venv)
        defer { server.destroy() }
        let botPassword = "bench-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let bot = try server.register("vigil", password: botPassword)
        let operatorUser = try server.register("operator")
        let room = try server.createRoom(as: operatorUser, invite: [bot.id])

        let dir = StateDirectory(try TempDirectory.make(prefix: "vigil-bench-chat"))
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        try dir.prepare()
        let journal = Journal(path: dir.journal, source: "bench")
        let config = ChatConfig(adapters: ["matrix"], matrix: .init(homeserver: server.baseURL, user: "vigil", password: botPassword,
                                                                   room: room, allow: [operatorUser.id], syncTimeout: .seconds(5)))
        let notifier = Notifier(stateDir: dir, config: config, journal: journal)
        let watcher = RoomWatcher(server: server, user: operatorUser, room: room)
        try watcher.start()

        // Warm-up: login, join, first sync.
        var loop = try BridgeLoop(dir: dir, config: config, journal: journal)
        notifier.notify(key: "bench:warmup", text: "bench warm-up")
        guard watcher.wait(for: "bench warm-up", timeout: .seconds(30)) != nil else {
            throw CommandError("the warm-up message never reached the room: \(server.logTail(3))")
        }

        printErr("bench chat: \(trials) trials with a running bridge…\n")
        var healthy: [Double] = []
        for i in 0..<trials {
            let text = "bench heal \(i) \(UInt32.random(in: 0...UInt32.max))"
            let t0 = Clock.boot()
            notifier.notify(key: "bench:healthy:\(i)", text: text)
            guard let seen = watcher.wait(for: text, timeout: .seconds(30)) else { throw CommandError("trial \(i): message never seen") }
            healthy.append((seen - t0).seconds)
            usleep(UInt32.random(in: 20_000...120_000)) // not in lockstep with the loop
        }

        printErr("bench chat: \(trials) trials with a respawned bridge…\n")
        var respawned: [Double] = []
        for i in 0..<trials {
            loop.stop()
            let text = "bench respawn \(i) \(UInt32.random(in: 0...UInt32.max))"
            notifier.notify(key: "bench:respawn:\(i)", text: text)
            let t0 = Clock.boot()
            loop = try BridgeLoop(dir: dir, config: config, journal: journal)
            guard let seen = watcher.wait(for: text, timeout: .seconds(30)) else { throw CommandError("respawn trial \(i): message never seen") }
            respawned.append((seen - max(t0, loop.firstTurn ?? t0)).seconds)
        }
        loop.stop()
        watcher.stop()

        let rows: [(String, [Double], String)] = [
            ("heal action → message in the room (healthy bridge)", healthy, "≤ 1 s"),
            ("queued while down → in the room, from a respawned bridge's first loop turn", respawned, "≤ 1 s"),
        ]
        var table = BenchTable(title: "vigil-bench chat (median / p95 / max, \(trials) trials)")
        for (name, xs, target) in rows {
            let s = xs.sorted()
            let measured = "\(ms(percentile(s, 0.5))) / \(ms(percentile(s, 0.95))) / \(ms(s.last ?? 0))"
            table.add(name, measured, target, value: percentile(s, 0.5) * 1000, atMost: 1000)
        }
        table.print(json: json)
    }

    static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let i = min(sorted.count - 1, max(0, Int((Double(sorted.count) * q).rounded(.up)) - 1))
        return sorted[i]
    }

    static func ms(_ s: Double) -> String { String(format: "%.0f ms", s * 1000) }

    /// A bridge-like main loop on its own thread: pump, then poll the wake descriptors until the
    /// next wish or 1 s (the heartbeat interval).
    // @unchecked Sendable: `stopping` and `first` only under `lock`; `service` (not Sendable)
    // is made before the loop thread starts and used only by that thread from then on.
    final class BridgeLoop: @unchecked Sendable {
        private let service: ChatService
        private let lock = NSLock()
        private var stopping = false
        private var first: BootInstant?
        private let done = DispatchSemaphore(value: 0)

        init(dir: StateDirectory, config: ChatConfig, journal: Journal) throws {
            service = try ChatService(stateDir: dir, config: config, journal: journal, handler: NullHandler())
            let t = Thread { [self] in
                while !self.lock.withLock({ self.stopping }) {
                    let now = Clock.boot()
                    self.lock.withLock { if self.first == nil { self.first = now } }
                    self.service.pump(now: now)
                    var ms: Int64 = 1000
                    if let next = self.service.nextWake { ms = max(0, min(ms, (next - Clock.boot()).nanoseconds / 1_000_000)) }
                    _ = pollReadable(self.service.wakeDescriptors, timeoutMilliseconds: Int32(ms))
                }
                self.service.shutdown(deadline: Clock.boot() + .seconds(1))
                self.done.signal()
            }
            t.start()
        }

        var firstTurn: BootInstant? { lock.withLock { first } }

        func stop() {
            lock.withLock { stopping = true }
            done.wait()
        }
    }

    final class NullHandler: ChatCommandHandler {
        func handle(_ command: ChatCommand, sender: String) -> String { "ok" }
    }

    /// The operator's view: a /sync long-poll loop on its own thread, noting when each message
    /// body first appears.
    // @unchecked Sendable: what it saw is read and written only under `lock`; the rest is constant.
    final class RoomWatcher: @unchecked Sendable {
        let server: SynapseServer
        let user: SynapseServer.User
        let room: String
        private let lock = NSLock()
        private let changed = NSCondition()
        private var seen: [String: BootInstant] = [:]
        private var stopping = false
        private var since: String?

        init(server: SynapseServer, user: SynapseServer.User, room: String) {
            self.server = server
            self.user = user
            self.room = room
        }

        func start() throws {
            since = try server.sync(as: user, room: room, since: nil, timeout: .zero).next
            let t = Thread { [self] in
                while !self.lock.withLock({ self.stopping }) {
                    guard let r = try? self.server.sync(as: self.user, room: self.room, since: self.since, timeout: .seconds(2)) else {
                        usleep(50_000)
                        continue
                    }
                    let now = Clock.boot()
                    self.since = r.next
                    self.changed.lock()
                    for m in r.messages where self.seen[m.body] == nil { self.seen[m.body] = now }
                    self.changed.broadcast()
                    self.changed.unlock()
                }
            }
            t.start()
        }

        func stop() { lock.withLock { stopping = true } }

        /// When `body` was first seen, waiting up to `timeout`.
        func wait(for body: String, timeout: TimeSpan) -> BootInstant? {
            let end = Date(timeIntervalSinceNow: timeout.seconds)
            changed.lock()
            defer { changed.unlock() }
            while seen[body] == nil {
                if !changed.wait(until: end) { break }
            }
            return seen[body]
        }
    }
}
