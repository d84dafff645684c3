import FoundationEssentials
import Synchronization
import VigilCore
import VigilStore
import VigilSystem

/// The Matrix Client-Server API pieces Vigil needs: login (or a given access token), room alias
/// resolution and join, send with a transaction id, and /sync. Shared by the delivery thread
/// and the sync thread (the login and room are looked up once, under a lock).
///
/// Sendable: the login state is behind one `Mutex`, `state`; `loginLock` (a `Mutex` too) makes
/// logins one at a time; the rest is constant.
package final class MatrixSession: Sendable {
    let config: ChatConfig.Matrix
    let base: URL
    private let state: Mutex<State>
    /// One login at a time (the delivery and the sync thread may both need one at start).
    private let loginLock = Mutex(())

    /// Only under `state`'s lock.
    private struct State {
        var token: String?
        var userID: String?
        var roomID: String?
        var joined = false
        /// The token saved in the database was rejected: log in again instead of reusing it.
        var savedTokenRejected = false
        /// The configured room could not be resolved or joined (the last such error).
        var unreachable: String?
        /// The room's state has `m.room.encryption` (nil: not looked at yet).
        var encrypted: Bool?
    }

    /// Called when `roomProblem` changes (the chat status file is written again).
    let onProblemChange: @Sendable () -> Void

    init(_ config: ChatConfig.Matrix, onProblemChange: @escaping @Sendable () -> Void = {}) throws {
        guard let base = URL(string: config.homeserver), let scheme = base.scheme?.lowercased(),
              scheme == "http" || scheme == "https", base.host != nil else {
            throw ChatConfigError(message: "chat.matrix.homeserver is not an http(s) URL")
        }
        self.config = config
        self.base = base
        self.onProblemChange = onProblemChange
        var initial = State(token: config.accessToken)
        if config.room.hasPrefix("!") { initial.roomID = config.room }
        if let u = config.user, u.hasPrefix("@") { initial.userID = u }
        state = Mutex(initial)
    }

    /// Where the login token is kept when Vigil logged in with a password (so restarts reuse
    /// the same device and access token instead of logging in again).
    var tokenStateName: String { "matrix.token|\(config.homeserver)|\(config.user ?? "")|\(config.deviceID)" }
    var sinceStateName: String { "matrix.since|\(config.homeserver)|\(config.user ?? "")|\(config.room)" }

    var ownUserID: String? { state.withLock { s in s.userID } }
    var currentRoomID: String? { state.withLock { s in s.roomID } }

    /// Forgets a token the server rejected (a password login will make a new one).
    func tokenRejected(_ inbox: ChatInbox?) {
        state.withLock { s in
            if config.password != nil {
                s.token = nil
                s.savedTokenRejected = true
            }
        }
    }

    func notJoined() { state.withLock { s in s.joined = false } }

    /// What is wrong with the configured room, for `vigil status` and `vigil doctor`
    /// (docs/chat.md, "Room problems"): not reachable (alias unknown, not invited), or encrypted.
    var roomProblem: String? {
        state.withLock { s in
            if let u = s.unreachable { return "room not reachable: " + u }
            if s.encrypted == true { return MatrixSession.encryptedProblem }
            return nil
        }
    }

    static let encryptedProblem = "room is encrypted: Vigil cannot read commands there"

    var encryptionKnown: Bool { state.withLock { s in s.encrypted != nil } }

    /// Records what the room's state said about encryption. True when it changed.
    @discardableResult
    func setEncrypted(_ on: Bool) -> Bool {
        let changed = state.withLock { s in
            defer { s.encrypted = on }
            return s.encrypted != on
        }
        if changed { onProblemChange() }
        return changed
    }

    /// Records (or clears, nil) why the room cannot be reached. True when it changed.
    @discardableResult
    func setUnreachable(_ why: String?) -> Bool {
        let changed = state.withLock { s in
            defer { s.unreachable = why }
            return s.unreachable != why
        }
        if changed { onProblemChange() }
        return changed
    }

    /// Whether an error text of `call` says the server refused the room: not found (an alias
    /// that does not exist, a room that is gone) or forbidden (not invited, banned).
    static func isRoomRefusal(_ why: String) -> Bool {
        why.contains("HTTP 404") || why.contains("HTTP 403")
    }

    func url(_ path: String, query: [(String, String)] = []) -> URL {
        var c = URLComponents(url: base, resolvingAgainstBaseURL: false)!
        c.percentEncodedPath = (c.percentEncodedPath.hasSuffix("/") ? String(c.percentEncodedPath.dropLast()) : c.percentEncodedPath) + path
        if !query.isEmpty {
            c.percentEncodedQuery = query.map { "\($0.0)=\(MatrixSession.encodeQuery($0.1))" }.joined(separator: "&")
        }
        return c.url!
    }

    /// Percent-encodes every byte of the UTF-8 form except the unreserved ASCII ones
    /// (letters, digits, `-._~`) and those in `keeping`.
    package static func encodeSegment(_ s: String, keeping: Set<UInt8> = []) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(b)
            case _ where keeping.contains(b):
                out.append(b)
            default:
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 0x0F)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    package static func encodeQuery(_ s: String) -> String { encodeSegment(s) }

    /// A transaction id derived from the idempotency key (and a scope: the room and the
    /// database's instance id): the same key always gives the same id, so a retried send returns
    /// the first send's event instead of posting again.
    static func transactionID(forKey key: String, scope: String = "") -> String {
        let s = scope + "\u{0}" + key
        return "vigil-" + hex(fnv1a64(s, seed: 0xcbf2_9ce4_8422_2325)) + hex(fnv1a64(s, seed: 0x8422_2325_cbf2_9ce4))
    }

    private static func fnv1a64(_ s: String, seed: UInt64) -> UInt64 {
        var h = seed
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        return h
    }

    private static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    enum Failure: Error {
        case retry(String, after: TimeSpan?)
        case failed(String)
        case cancelled
    }

    /// Makes sure there is a token, a room id and a joined room. Blocking; on the caller's thread.
    func ensureReady(_ client: HTTPClient, inbox: ChatInbox?) throws(Failure) -> (token: String, room: String) {
        var (tok, room, isJoined) = state.withLock { s in (s.token, s.roomID, s.joined) }
        if tok == nil {
            // One login at a time: a second thread that needs one waits, then finds the token
            // the first one got.
            let got: Result<String?, Failure> = loginLock.withLock { _ in
                var (t, rejected) = state.withLock { s in (s.token, s.savedTokenRejected) }
                if t != nil { return .success(t) }
                if !rejected, let saved = try? inbox?.value(tokenStateName) {
                    t = saved
                } else {
                    do throws(Failure) { t = try login(client) } catch { return .failure(error) }
                    try? inbox?.setValue(tokenStateName, t)
                    state.withLock { s in s.savedTokenRejected = false }
                }
                state.withLock { s in s.token = t }
                return .success(t)
            }
            tok = try got.get()
        }
        guard let tok else { throw .retry("matrix: no access token", after: nil) }
        if state.withLock({ s in s.userID }) == nil {
            let who = try call(client, "GET", "/_matrix/client/v3/account/whoami", token: tok)
            if let u = who["user_id"]?.stringValue { state.withLock { s in s.userID = u } }
        }
        do throws(Failure) {
            if room == nil {
                let r = try call(client, "GET", "/_matrix/client/v3/directory/room/" + MatrixSession.encodeSegment(config.room), token: tok)
                guard let id = r["room_id"]?.stringValue else { throw .retry("matrix: alias \(config.room) has no room id", after: nil) }
                room = id
                state.withLock { s in s.roomID = id }
            }
            guard let room else { throw .retry("matrix: no room", after: nil) }
            if !isJoined {
                _ = try call(client, "POST", "/_matrix/client/v3/join/" + MatrixSession.encodeSegment(room), token: tok, body: [:])
                isJoined = true
                state.withLock { s in s.joined = true }
                setUnreachable(nil)
            }
            return (tok, room)
        } catch {
            // An alias that does not resolve or a room the bot may not join: shown by `vigil
            // status` and `vigil doctor`, not only as a row's last error (docs/chat.md).
            if case .retry(let why, _) = error, MatrixSession.isRoomRefusal(why) { setUnreachable("\(config.room): \(why)") }
            throw error
        }
    }

    private func login(_ client: HTTPClient) throws(Failure) -> String {
        guard let user = config.user, let password = config.password else {
            throw .failed("matrix: no access token and no user/password to log in with")
        }
        let r = try call(client, "POST", "/_matrix/client/v3/login", token: nil, body: [
            "type": "m.login.password",
            "identifier": ["type": "m.id.user", "user": .string(user)],
            "password": .string(password),
            "device_id": .string(config.deviceID),
            "initial_device_display_name": "Vigil",
        ])
        guard let t = r["access_token"]?.stringValue else { throw .retry("matrix: login gave no access token", after: nil) }
        if let u = r["user_id"]?.stringValue { state.withLock { s in s.userID = u } }
        return t
    }

    /// One call; a JSON object back, or a classified failure. Errors never contain the token.
    /// `maxBody`: the cap on the reply's body (default 1 MiB; /sync and /messages pass
    /// `max_sync_bytes`); a longer reply is a retryable failure (docs/chat.md, "Reply size caps").
    func call(_ client: HTTPClient, _ method: String, _ path: String, query: [(String, String)] = [], token: String?,
              body: JSONValue? = nil, timeout: TimeSpan? = nil, maxBody: Int = HTTPClient.defaultMaxBodyBytes) throws(Failure) -> JSONValue {
        var headers = ["Accept": "application/json"]
        if let token { headers["Authorization"] = "Bearer " + token }
        var data: Data? = nil
        if let body {
            headers["Content-Type"] = "application/json"
            data = body.encoded()
        }
        let what = path.split(separator: "/").prefix(5).joined(separator: "/")
        let outcome = client.perform(HTTPRequest(method: method, url: url(path, query: query), headers: headers, body: data,
                                                 timeout: timeout ?? config.timeout, maxBodyBytes: maxBody))
        switch outcome {
        case .cancelled:
            throw .cancelled
        case .failure(let why):
            throw .retry("matrix \(redactedURL(base)) \(method) \(what): \(why)", after: nil)
        case .tooLarge(let status, let limit):
            throw .retry("matrix \(redactedURL(base)) \(method) \(what): HTTP \(status), reply over \(limit) bytes (not read; raise chat.matrix.max_sync_bytes if this is a real /sync)", after: nil)
        case .response(let status, let bytes):
            let json = JSONValue.parse(bytes) ?? .object([:])
            if (200..<300).contains(status) { return json }
            let code = json["errcode"]?.stringValue ?? ""
            let msg = ChatText.brief(json["error"]?.stringValue ?? "", maxLength: 200)
            let text = "matrix \(method) \(what): HTTP \(status) \(code) \(msg)".trimmingWhitespace(keepingNewlines: true)
            if status == 429 {
                let ms = json["retry_after_ms"]?.doubleValue
                throw .retry(text, after: ms.map { .milliseconds($0) })
            }
            if code == "M_UNKNOWN_TOKEN" || code == "M_MISSING_TOKEN" || status == 401 {
                tokenRejected(nil)
                throw .retry(text, after: nil)
            }
            if code == "M_FORBIDDEN" && path.contains("/send/") {
                notJoined()
                throw .retry(text, after: nil)
            }
            if status >= 500 || status == 408 || status == 404 || status == 403 { throw .retry(text, after: nil) }
            throw .failed(text)
        }
    }
}

/// Sends outbox messages to the configured room: `PUT /rooms/{room}/send/{type}/{txn}` with a
/// transaction id derived from the idempotency key (a retry after a crash returns the first
/// event id: no duplicate). The content (`MatrixContent`) carries the HTML form, the reply and
/// thread relations, edits and reactions of the row's `OutboxMeta`; `m.mentions` names only the
/// users the message means to mention, and mass mentions are defused, so echoed text cannot
/// ping the room.
/// Sendable: constants only (the session and the client have their own locks).
final class MatrixAdapter: ChatAdapter, Sendable {
    let name = "matrix"
    let session: MatrixSession
    var lease: TimeSpan { session.config.timeout + .seconds(5) }
    private let client = HTTPClient()
    private let inbox: @Sendable () -> ChatInbox?

    init(session: MatrixSession, inbox: @escaping @Sendable () -> ChatInbox?) {
        self.session = session
        self.inbox = inbox
    }

    func cancel() { client.cancel() }

    var problem: String? { session.roomProblem }

    func prepare() {
        let inbox = inbox()
        _ = try? session.ensureReady(client, inbox: inbox)
        _ = try? inbox?.instanceID()
    }

    func deliver(_ message: OutboxMessage) -> DeliveryResult {
        do {
            let inbox = inbox()
            let ready = try session.ensureReady(client, inbox: inbox)
            guard let inbox, let instance = try? inbox.instanceID() else { return .retry("matrix: the database is not readable", after: nil) }
            // Queued for another room than the one configured now: not sent there silently
            // (docs/chat.md, "Room problems"); `vigil outbox --retry` sends it to this one.
            if let stamped = message.meta.room, stamped != session.config.room, stamped != ready.room {
                return .failed("queued for room \(stamped), now configured \(session.config.room); `vigil outbox --retry \(message.id)` sends it there")
            }
            // An edit needs the event id of the message it replaces. Per adapter the outbox sends
            // in order (an edit is queued after its message, with the same priority), so that
            // one has been delivered or has failed by now; failed or unknown → sent as new.
            var edited: String? = nil
            if let key = message.meta.replaces {
                let original: OutboxMessage?
                do { original = try Outbox(inbox.db).message(key: key, adapter: name) } catch {
                    return .retry("matrix: the database is not readable", after: nil)
                }
                if let o = original, o.state == .pending || o.state == .sending {
                    return .retry("matrix: waiting for the message this one edits (\(key))", after: .seconds(1))
                }
                edited = original?.remoteID
            }
            let (type, content) = MatrixContent.make(message, msgtype: session.config.msgtype, replacing: edited)
            let txn = MatrixSession.transactionID(forKey: message.key, scope: ready.room + "|" + instance)
            let r = try session.call(client, "PUT", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(ready.room))/send/\(type)/\(txn)",
                                     token: ready.token, body: content)
            return .delivered(remoteID: r["event_id"]?.stringValue)
        } catch {
            switch error {
            case .cancelled: return .cancelled
            case .retry(let why, let after): return .retry(why, after: after)
            case .failed(let why): return .failed(why)
            }
        }
    }
}

/// The event one outbox row becomes (Matrix Client-Server API, `m.room.message` and
/// `m.reaction`; docs/chat.md, "Replies, threads, edits"). Pure.
enum MatrixContent {
    /// The HTML format's name in `format`.
    static let htmlFormat = "org.matrix.custom.html"

    /// The event type and content for `message`. `replacing`: the event id of the message it
    /// edits, when it is an edit whose original was delivered.
    static func make(_ message: OutboxMessage, msgtype: String, replacing: String?) -> (type: String, content: JSONValue) {
        let meta = message.meta
        if let key = meta.reaction, let target = meta.replyTo {
            return ("m.reaction", ["m.relates_to": ["rel_type": "m.annotation", "event_id": .string(target), "key": .string(key)]])
        }
        var text: [String: JSONValue] = ["msgtype": .string(msgtype), "body": .string(ChatText.defuseMentions(message.body))]
        // Every message has an HTML form: a row queued without one (an older Vigil's, a path
        // that gave none) gets the rendered text (docs/chat.md, "Replies, reactions, HTML").
        let html = message.html ?? ChatHTML.render(message.body)
        text["format"] = .string(htmlFormat)
        text["formatted_body"] = .string(ChatText.defuseMentions(html))
        text["m.mentions"] = .object((meta.mentions ?? []).isEmpty ? [:] : ["user_ids": .array(meta.mentions!.map { .string($0) })])
        if let original = replacing {
            // An edit: the new content, and a fallback for clients that do not show edits.
            var content = text
            content["body"] = .string("* " + ChatText.defuseMentions(message.body))
            content["formatted_body"] = .string("* " + ChatText.defuseMentions(html))
            content["m.new_content"] = .object(text)
            content["m.relates_to"] = ["rel_type": "m.replace", "event_id": .string(original)]
            return ("m.room.message", .object(content))
        }
        if let thread = meta.thread {
            var rel: [String: JSONValue] = ["rel_type": "m.thread", "event_id": .string(thread)]
            if let reply = meta.replyTo {
                rel["m.in_reply_to"] = ["event_id": .string(reply)]
                rel["is_falling_back"] = false
            } else {
                rel["is_falling_back"] = true
                rel["m.in_reply_to"] = ["event_id": .string(thread)]
            }
            text["m.relates_to"] = .object(rel)
        } else if let reply = meta.replyTo {
            text["m.relates_to"] = ["m.in_reply_to": ["event_id": .string(reply)]]
        }
        return ("m.room.message", .object(text))
    }
}
