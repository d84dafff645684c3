import Foundation
import VigilChat
import VigilStore
import VigilCore
import VigilSystem

/// A throwaway Synapse homeserver on 127.0.0.1 for the chat tests and `vigil-bench chat|alert`,
/// launched by the one launcher, scripts/chaoslib/synapse.py (`prepare` writes the config and
/// keys and prints them as JSON, `serve` runs it and exits when its parent, this process,
/// dies; `register` does the shared-secret registration). This type only drives that script
/// and is the Swift client of the running server. Started from the venv that
/// `scripts/setup-synapse` makes; `stop()` ends it by its verified identity.
// @unchecked Sendable: `identity` (the running server) only under `lock`; the rest is constant.
public final class SynapseServer: @unchecked Sendable {
    public let venv: String
    public let workDir: String
    public let port: UInt16
    public let serverName: String
    public var baseURL: String { "http://127.0.0.1:\(port)" }
    let sharedSecret: String
    let configPath: String
    public let logPath: String
    private let lock = NSLock()
    private var identity: ProcessIdentity?
    private let client = HTTPClient()

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public init(message: String) { self.message = message }
        public var description: String { message }
    }

    /// The launcher every Synapse of the repository goes through.
    public static var launcher: String { Binaries.repoRoot + "/scripts/chaoslib/synapse.py" }

    // MARK: - Installing

    /// The venv Synapse runs from: `$VIGIL_SYNAPSE_VENV`, else `.venv-synapse` in `repoRoot`.
    public static func venvPath(repoRoot: String = Binaries.repoRoot) -> String {
        ProcessInfo.processInfo.environment["VIGIL_SYNAPSE_VENV"] ?? repoRoot + "/.venv-synapse"
    }

    /// Runs `scripts/setup-synapse` (idempotent; fast when installed) with a time limit and
    /// returns the venv, or throws with the script's reason.
    public static func install(repoRoot: String = Binaries.repoRoot, timeout: TimeSpan = .seconds(600)) throws -> String {
        let script = repoRoot + "/scripts/setup-synapse"
        let venv = venvPath(repoRoot: repoRoot)
        if FileManager.default.fileExists(atPath: venv + "/.vigil-synapse-ok") && FileManager.default.isExecutableFile(atPath: venv + "/bin/python") {
            return venv
        }
        guard FileManager.default.isExecutableFile(atPath: script) else { throw Failure(message: "\(script) is missing") }
        let r = try SynapseServer.run(["/bin/bash", script], cwd: repoRoot, timeout: timeout)
        guard r.status == 0, FileManager.default.fileExists(atPath: venv + "/bin/python") else {
            throw Failure(message: "setup-synapse failed (exit \(r.status)): " + r.output.split(separator: "\n").suffix(5).joined(separator: " | "))
        }
        return venv
    }

    /// Runs `argv` to its end (killed after `timeout`); its exit code and output (stdout and
    /// stderr together).
    static func run(_ argv: [String], cwd: String? = nil, timeout: TimeSpan = .seconds(120)) throws -> (status: Int32, output: String) {
        let log = try TempDir.make("vigil-synapse-run")
        defer { try? FileManager.default.removeItem(atPath: log) }
        var opts = Spawner.Options()
        opts.outputPath = log + "/out"
        opts.workingDirectory = cwd
        opts.newSession = true
        let child = try Spawner.spawn(argv, opts)
        guard let pidfd = child.openPidFD() else { throw Failure(message: "\(argv[0]) did not start") }
        if !pidfd.waitForExit(timeoutMilliseconds: Int32(min(Int64(Int32.max), timeout.nanoseconds / 1_000_000))) {
            pidfd.signal(.kill)
            _ = Spawner.wait(child.pid)
            throw Failure(message: "\(argv.prefix(3).joined(separator: " ")) took longer than \(timeout)")
        }
        let status = Spawner.wait(child.pid).map(exitCode(fromWaitStatus:)) ?? -1
        return (status, (try? String(contentsOfFile: log + "/out", encoding: .utf8)) ?? "")
    }

    /// The launcher's JSON answer (its last line of output), or a failure with its output.
    static func runLauncher(_ python: String, _ args: [String]) throws -> JSONValue {
        let r = try run([python, launcher] + args)
        let last = r.output.split(separator: "\n").last.map(String.init) ?? ""
        guard r.status == 0, let json = JSONValue.parse(Data(last.utf8)) else {
            throw Failure(message: "synapse.py \(args.first ?? "") failed (exit \(r.status)): " + r.output.split(separator: "\n").suffix(5).joined(separator: " | "))
        }
        return json
    }

    // MARK: - Running

    /// Has the launcher write a config and keys into a new directory under /tmp, then starts
    /// the server; returns when it answers (or throws with the tail of its log).
    public static func start(venv: String, readyTimeout: TimeSpan = .seconds(90)) throws -> SynapseServer {
        let dir = try TempDirectory.make(prefix: "vigil-synapse")
        let info = try runLauncher(venv + "/bin/python", ["prepare", "--dir", dir, "--venv", venv])
        guard let port = info["port"]?.intValue, let config = info["config"]?.stringValue, let log = info["log"]?.stringValue,
              let secret = info["secret"]?.stringValue else {
            throw Failure(message: "synapse.py prepare printed no port, config, log and secret: \(info.jsonString)")
        }
        let server = SynapseServer(venv: venv, workDir: dir, port: UInt16(port), serverName: info["server_name"]?.stringValue ?? "vigil.test",
                                   secret: secret, config: config, log: log)
        try server.launch(readyTimeout: readyTimeout)
        return server
    }

    init(venv: String, workDir: String, port: UInt16, serverName: String, secret: String, config: String, log: String) {
        self.venv = venv
        self.workDir = workDir
        self.port = port
        self.serverName = serverName
        sharedSecret = secret
        configPath = config
        logPath = log
    }

    deinit { stop() }

    /// Starts the server process (again, after `stop`, with the same database and port).
    public func launch(readyTimeout: TimeSpan = .seconds(90)) throws {
        var opts = Spawner.Options()
        opts.outputPath = logPath
        opts.newSession = true
        opts.workingDirectory = workDir
        let child = try Spawner.spawn([venv + "/bin/python", SynapseServer.launcher, "serve", configPath], opts)
        lock.withLock { identity = child }
        let ready = waitUntil(timeout: readyTimeout, every: .milliseconds(50)) {
            if case .response(200, _) = client.perform(method: "GET", url: URL(string: baseURL + "/_matrix/client/versions")!, timeout: .seconds(2)) {
                return true
            }
            return child.liveness() == .gone || Spawner.reap(child.pid) != nil
        }
        if ready, case .response(200, _) = client.perform(method: "GET", url: URL(string: baseURL + "/_matrix/client/versions")!, timeout: .seconds(2)) {
            return
        }
        if ready {
            lock.withLock { identity = nil }
            throw Failure(message: "synapse exited during start-up: \(logTail())")
        }
        stop()
        throw Failure(message: "synapse did not answer within \(readyTimeout): \(logTail())")
    }

    public var isRunning: Bool { lock.withLock { identity }?.isAlive ?? false }

    /// Stops the server (SIGTERM, then SIGKILL after `grace`) and reaps it. Idempotent.
    public func stop(grace: TimeSpan = .seconds(10)) {
        guard let id = lock.withLock({ () -> ProcessIdentity? in
            defer { identity = nil }
            return identity
        }) else { return }
        if let pidfd = id.openPidFD() {
            pidfd.signal(.terminate)
            if !pidfd.waitForExit(timeoutMilliseconds: Int32(grace.nanoseconds / 1_000_000)) {
                pidfd.signal(.kill)
                _ = pidfd.waitForExit(timeoutMilliseconds: 5000)
            }
        }
        _ = Spawner.wait(id.pid)
    }

    /// Stops the server and removes its directory.
    public func destroy() {
        stop()
        try? FileManager.default.removeItem(atPath: workDir)
    }

    public func logTail(_ lines: Int = 8) -> String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    // MARK: - Client calls (as a test user)

    public struct User: Sendable {
        public var id: String
        public var localpart: String
        public var password: String
        public var token: String
    }

    /// Registers a user through the shared-secret admin API (the launcher computes the
    /// HMAC-SHA1 over nonce, name, password and admin flag).
    public func register(_ localpart: String, password: String? = nil, admin: Bool = false) throws -> User {
        let pw = password ?? "pw-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let r = try SynapseServer.runLauncher(venv + "/bin/python", ["register", "--base-url", baseURL, "--secret", sharedSecret,
                                                                    "--user", localpart, "--password", pw] + (admin ? ["--admin"] : []))
        guard let id = r["user_id"]?.stringValue, let token = r["access_token"]?.stringValue else {
            throw Failure(message: "registration of \(localpart) gave no token")
        }
        return User(id: id, localpart: localpart, password: pw, token: token)
    }

    /// Creates a private room and invites `invite`; returns the room id.
    public func createRoom(as user: User, invite: [String] = []) throws -> String {
        let r = try call("POST", "/_matrix/client/v3/createRoom", token: user.token, body: [
            "preset": "private_chat", "invite": .array(invite.map { .string($0) }), "name": "vigil ops",
        ])
        guard let id = r["room_id"]?.stringValue else { throw Failure(message: "createRoom gave no room id") }
        return id
    }

    public func join(as user: User, room: String) throws {
        _ = try call("POST", "/_matrix/client/v3/join/" + MatrixSession.encodeSegment(room), token: user.token, body: [:])
    }

    /// Sends a text message (or another `msgtype`: `m.notice`, `m.emote`) as `user`; returns the event id.
    @discardableResult
    public func send(as user: User, room: String, text: String, msgtype: String = "m.text") throws -> String {
        let txn = "t" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let r = try call("PUT", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(room))/send/m.room.message/\(txn)",
                         token: user.token, body: ["msgtype": .string(msgtype), "body": .string(text)])
        return r["event_id"]?.stringValue ?? ""
    }

    public struct Message: Sendable, Equatable {
        public var eventID: String
        public var sender: String
        public var body: String
    }

    /// The room's messages, oldest first (up to `limit`).
    public func messages(as user: User, room: String, limit: Int = 500) throws -> [Message] {
        let r = try call("GET", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(room))/messages",
                         query: [("dir", "b"), ("limit", String(limit))], token: user.token)
        guard case .array(let events)? = r["chunk"] else { return [] }
        return events.compactMap { e -> Message? in
            guard e["type"]?.stringValue == "m.room.message", let id = e["event_id"]?.stringValue,
                  let s = e["sender"]?.stringValue, let b = e["content"]?["body"]?.stringValue else { return nil }
            return Message(eventID: id, sender: s, body: b)
        }.reversed()
    }

    /// One /sync as `user` (long-poll up to `timeout`); returns the new messages of `room` and
    /// the next token.
    public func sync(as user: User, room: String, since: String?, timeout: TimeSpan) throws -> (messages: [Message], next: String) {
        var q: [(String, String)] = [("timeout", String(Int(timeout.milliseconds))),
                                     ("filter", MatrixPoller.filter(roomID: room, limit: since == nil ? 1 : 100))]
        if let since { q.append(("since", since)) }
        let r = try call("GET", "/_matrix/client/v3/sync", query: q, token: user.token, timeout: timeout + .seconds(10))
        var out: [Message] = []
        if since != nil, case .array(let events)? = r["rooms"]?["join"]?[room]?["timeline"]?["events"] {
            for e in events {
                guard e["type"]?.stringValue == "m.room.message", let id = e["event_id"]?.stringValue,
                      let s = e["sender"]?.stringValue, let b = e["content"]?["body"]?.stringValue else { continue }
                out.append(Message(eventID: id, sender: s, body: b))
            }
        }
        return (out, r["next_batch"]?.stringValue ?? since ?? "")
    }

    public func call(_ method: String, _ path: String, query: [(String, String)] = [], token: String? = nil, body: JSONValue? = nil,
              timeout: TimeSpan = .seconds(30)) throws -> JSONValue {
        var c = URLComponents(string: baseURL)!
        c.percentEncodedPath = path
        if !query.isEmpty { c.percentEncodedQuery = query.map { "\($0.0)=\(MatrixSession.encodeQuery($0.1))" }.joined(separator: "&") }
        var headers: [String: String] = [:]
        if let token { headers["Authorization"] = "Bearer " + token }
        if body != nil { headers["Content-Type"] = "application/json" }
        switch client.perform(method: method, url: c.url!, headers: headers, body: body?.encoded(), timeout: timeout) {
        case .response(let status, let data):
            let json = JSONValue.parse(data) ?? .object([:])
            guard (200..<300).contains(status) else {
                throw Failure(message: "\(method) \(path): HTTP \(status) \(String(decoding: data.prefix(300), as: UTF8.self))")
            }
            return json
        case .tooLarge(let status, let limit): throw Failure(message: "\(method) \(path): HTTP \(status), reply over \(limit) bytes")
        case .failure(let why): throw Failure(message: "\(method) \(path): \(why)")
        case .cancelled: throw Failure(message: "\(method) \(path): cancelled")
        }
    }
}
