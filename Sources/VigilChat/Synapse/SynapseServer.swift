import Foundation
import Glibc
import VigilCore
import VigilSystem

/// A throwaway Synapse homeserver on 127.0.0.1 for the chat tests and `vigil bench chat`:
/// SQLite backend, `trusted_key_servers: []`, registration closed except through the shared
/// secret, rate limits lifted, presence off. Started from the venv that `scripts/setup-synapse`
/// makes; it exits by itself if the process that started it dies (it watches its parent), and
/// `stop()` ends it by its verified identity.
public final class SynapseServer: @unchecked Sendable {
    public let venv: String
    public let workDir: String
    public let port: UInt16
    public let serverName = "vigil.test"
    public var baseURL: String { "http://127.0.0.1:\(port)" }
    let sharedSecret: String
    private let lock = NSLock()
    private var identity: ProcessIdentity?
    private let client = HTTPClient()

    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    // MARK: - Installing

    /// The venv Synapse runs from: `$VIGIL_SYNAPSE_VENV`, else `.venv-synapse` in `repoRoot`.
    public static func venvPath(repoRoot: String) -> String {
        ProcessInfo.processInfo.environment["VIGIL_SYNAPSE_VENV"] ?? repoRoot + "/.venv-synapse"
    }

    /// Runs `scripts/setup-synapse` (idempotent; fast when installed) with a time limit and
    /// returns the venv, or throws with the script's reason.
    public static func install(repoRoot: String, timeout: TimeSpan = .seconds(600)) throws -> String {
        let script = repoRoot + "/scripts/setup-synapse"
        let venv = venvPath(repoRoot: repoRoot)
        if FileManager.default.fileExists(atPath: venv + "/.vigil-synapse-ok") && FileManager.default.isExecutableFile(atPath: venv + "/bin/python") {
            return venv
        }
        guard FileManager.default.isExecutableFile(atPath: script) else { throw Failure(message: "\(script) is missing") }
        let log = NSTemporaryDirectory() + "/vigil-setup-synapse-\(getpid()).log"
        defer { unlink(log) }
        var opts = Spawner.Options()
        opts.outputPath = log
        opts.workingDirectory = repoRoot
        opts.newSession = true
        let child = try Spawner.spawn(["/bin/bash", script], opts)
        guard let pidfd = child.openPidFD() else { throw Failure(message: "setup-synapse did not start") }
        if !pidfd.waitForExit(timeoutMilliseconds: Int32(min(Int64(Int32.max), timeout.nanoseconds / 1_000_000))) {
            kill(-child.pid, SIGKILL)
            _ = Spawner.wait(child.pid)
            throw Failure(message: "setup-synapse took longer than \(timeout)")
        }
        let status = Spawner.wait(child.pid) ?? -1
        guard status == 0, FileManager.default.fileExists(atPath: venv + "/bin/python") else {
            let out = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw Failure(message: "setup-synapse failed (exit \(exitCode(fromWaitStatus: status))): " +
                          out.split(separator: "\n").suffix(5).joined(separator: " | "))
        }
        return venv
    }

    // MARK: - Running

    /// Writes a config into a new directory under `parent` and starts the server; returns when
    /// it answers (or throws with the tail of its log).
    public static func start(venv: String, parent: String = NSTemporaryDirectory(), readyTimeout: TimeSpan = .seconds(90)) throws -> SynapseServer {
        var template = Array((parent + "/vigil-synapse-XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else { throw SystemError("mkdtemp", errno: lastErrno(), subject: parent) }
        let server = SynapseServer(venv: venv, workDir: String(cString: p), port: try freePort())
        try server.writeConfig()
        try server.generateKeys()
        try server.launch(readyTimeout: readyTimeout)
        return server
    }

    init(venv: String, workDir: String, port: UInt16) {
        self.venv = venv
        self.workDir = workDir
        self.port = port
        sharedSecret = "vigil-test-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }

    deinit { stop() }

    var configPath: String { workDir + "/homeserver.yaml" }
    public var logPath: String { workDir + "/homeserver.log" }

    static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: lastErrno()) }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw SystemError("bind", errno: lastErrno()) }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return UInt16(bigEndian: addr.sin_port)
    }

    func writeConfig() throws {
        let unlimited = "{per_second: 100000, burst_count: 100000}"
        let yaml = """
        server_name: "\(serverName)"
        pid_file: \(workDir)/homeserver.pid
        listeners:
          - port: \(port)
            bind_addresses: ['127.0.0.1']
            type: http
            tls: false
            x_forwarded: false
            resources:
              - names: [client]
                compress: false
        database:
          name: sqlite3
          args:
            database: \(workDir)/homeserver.db
        media_store_path: \(workDir)/media
        signing_key_path: \(workDir)/signing.key
        registration_shared_secret: "\(sharedSecret)"
        macaroon_secret_key: "\(sharedSecret)-macaroon"
        form_secret: "\(sharedSecret)-form"
        report_stats: false
        trusted_key_servers: []
        suppress_key_server_warning: true
        enable_registration: false
        enable_registration_without_verification: false
        presence:
          enabled: false
        url_preview_enabled: false
        rc_message: \(unlimited)
        rc_registration: \(unlimited)
        rc_login:
          address: \(unlimited)
          account: \(unlimited)
          failed_attempts: \(unlimited)
        rc_joins:
          local: \(unlimited)
          remote: \(unlimited)
        rc_invites:
          per_room: \(unlimited)
          per_user: \(unlimited)
          per_issuer: \(unlimited)
        rc_admin_redaction: \(unlimited)

        """
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    func generateKeys() throws {
        var opts = Spawner.Options()
        opts.outputPath = logPath
        let child = try Spawner.spawn([venv + "/bin/python", "-m", "synapse.app.homeserver", "-c", configPath, "--generate-keys"], opts)
        let status = Spawner.wait(child.pid) ?? -1
        guard status == 0 else { throw Failure(message: "synapse --generate-keys failed: \(logTail())") }
    }

    /// A Python launcher that exits the server when its parent (this process) goes away, then
    /// runs Synapse in the same interpreter: no homeserver outlives a crashed test run.
    static let launcher = """
    import os, sys, threading, time, runpy
    parent = os.getppid()
    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)
    threading.Thread(target=watch, daemon=True).start()
    sys.argv = ["synapse.app.homeserver"] + sys.argv[1:]
    runpy.run_module("synapse.app.homeserver", run_name="__main__")
    """

    /// Starts the server process (again, after `stop`, with the same database and port).
    public func launch(readyTimeout: TimeSpan = .seconds(90)) throws {
        var opts = Spawner.Options()
        opts.outputPath = logPath
        opts.newSession = true
        opts.workingDirectory = workDir
        let child = try Spawner.spawn([venv + "/bin/python", "-c", SynapseServer.launcher, "-c", configPath], opts)
        lock.withLock { identity = child }
        let end = Clock.boot() + readyTimeout
        while Clock.boot() < end {
            if case .response(200, _) = client.perform(HTTPRequest(method: "GET", url: URL(string: baseURL + "/_matrix/client/versions")!, timeout: .seconds(2))) {
                return
            }
            if child.liveness() == .gone || Spawner.reap(child.pid) != nil {
                lock.withLock { identity = nil }
                throw Failure(message: "synapse exited during start-up: \(logTail())")
            }
            usleep(50_000)
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

    /// Registers a user through the shared-secret admin API (HMAC-SHA1 over nonce, name,
    /// password, admin flag).
    public func register(_ localpart: String, password: String? = nil, admin: Bool = false) throws -> User {
        let pw = password ?? "pw-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let nonce = try call("GET", "/_synapse/admin/v1/register")["nonce"]?.stringValue ?? ""
        var msg = Array(nonce.utf8) + [0] + Array(localpart.utf8) + [0] + Array(pw.utf8) + [0]
        msg += Array((admin ? "admin" : "notadmin").utf8)
        let mac = HMACSHA1.hex(HMACSHA1.hmac(key: Array(sharedSecret.utf8), message: msg))
        let r = try call("POST", "/_synapse/admin/v1/register", body: [
            "nonce": .string(nonce), "username": .string(localpart), "password": .string(pw), "admin": .bool(admin), "mac": .string(mac),
        ])
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

    /// Sends a text message as `user`; returns the event id.
    @discardableResult
    public func send(as user: User, room: String, text: String) throws -> String {
        let txn = "t" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let r = try call("PUT", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(room))/send/m.room.message/\(txn)",
                         token: user.token, body: ["msgtype": "m.text", "body": .string(text)])
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

    func call(_ method: String, _ path: String, query: [(String, String)] = [], token: String? = nil, body: JSONValue? = nil,
              timeout: TimeSpan = .seconds(30)) throws -> JSONValue {
        var c = URLComponents(string: baseURL)!
        c.percentEncodedPath = path
        if !query.isEmpty { c.percentEncodedQuery = query.map { "\($0.0)=\(MatrixSession.encodeQuery($0.1))" }.joined(separator: "&") }
        var headers: [String: String] = [:]
        if let token { headers["Authorization"] = "Bearer " + token }
        if body != nil { headers["Content-Type"] = "application/json" }
        switch client.perform(HTTPRequest(method: method, url: c.url!, headers: headers, body: body?.encoded(), timeout: timeout)) {
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
