import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The `chat` object of `vigil.json`: which adapters get messages for people, and how hard to
/// try. Every key is optional; an absent `chat` object means the console adapter only.
///
///     "chat": {
///       "adapters": ["console", "matrix"],
///       "max_attempts": 10, "max_age": "72h", "backoff_initial": "1s", "backoff_max": "5m",
///       "circuit_failures": 3, "circuit_cooloff": "5s", "circuit_cooloff_max": "2m",
///       "command_max_age": "10m",
///       "webhook": { "url": "https://chat.example/hooks/…", "headers": { "Authorization": "…" } },
///       "matrix": { "homeserver": "https://matrix.example", "user": "@vigil:example",
///                   "password_env": "VIGIL_MATRIX_PASSWORD", "room": "!abc:example",
///                   "allow": ["@alice:example"] }
///     }
///
/// Durations take seconds as numbers or strings with a suffix (`"200ms"`, `"2s"`, `"5m"`).
/// Secrets may be given inline or, better, by naming an environment variable (`*_env`) or a
/// file (`*_file`); they are never written to logs or the journal.
public struct ChatConfig: Decodable, Sendable, Equatable {
    /// The adapters messages go to, in order. Default: `console`, plus `webhook` and `matrix`
    /// when their sections are present.
    public var adapters: [String]
    /// Attempts after which a message still not out is reported stuck (journal
    /// `chat-delivery-stuck`, `vigil status`); it keeps being retried until `maxAge`.
    public var maxAttempts: Int
    /// A message that could not be delivered for this long (retryable failures only: network,
    /// timeout, 5xx, 429) is marked failed. A refusal for good (another 4xx) fails it at once.
    public var maxAge: TimeSpan
    /// First retry delay; doubles per attempt, with jitter, up to `backoffMax`.
    public var backoffInitial: TimeSpan
    public var backoffMax: TimeSpan
    /// Fraction of each delay that is random (0…1).
    public var backoffJitter: Double
    /// Consecutive failed calls that open an adapter's circuit.
    public var circuitFailures: Int
    /// How long an open circuit waits before one trial call (doubles while trials fail).
    public var circuitCooloff: TimeSpan
    public var circuitCooloffMax: TimeSpan
    /// Longest body sent (longer ones are cut with an ellipsis).
    public var maxMessageLength: Int
    /// A command said longer ago than this (chat server timestamp, or `vigil say` time) is
    /// answered "too old, not run" instead of being run late (docs/chat.md).
    public var commandMaxAge: TimeSpan
    public var webhook: Webhook?
    public var matrix: Matrix?

    public struct Webhook: Decodable, Sendable, Equatable {
        public var url: String
        /// Extra request headers (e.g. `Authorization`). Values are secrets: never logged.
        public var headers: [String: String]
        /// Optional `username` field of the JSON body (Mattermost shows it; Slack ignores it).
        public var username: String?
        /// One request's time limit.
        public var timeout: TimeSpan

        public init(url: String, headers: [String: String] = [:], username: String? = nil, timeout: TimeSpan = .seconds(10)) {
            self.url = url
            self.headers = headers
            self.username = username
            self.timeout = timeout
        }

        enum CodingKeys: String, CodingKey { case url, urlEnv = "url_env", headers, username, timeout }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let url = try ChatConfig.secret(c, .url, env: .urlEnv, file: nil)
            guard let url, !url.isEmpty else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "chat.webhook needs \"url\" (or \"url_env\")"))
            }
            self.url = url
            headers = try c.decodeIfPresent([String: String].self, forKey: .headers) ?? [:]
            username = try c.decodeIfPresent(String.self, forKey: .username)
            timeout = try ChatConfig.duration(c, .timeout) ?? .seconds(10)
        }
    }

    public struct Matrix: Decodable, Sendable, Equatable {
        /// Base URL, e.g. `https://matrix.example` or `http://127.0.0.1:8008`.
        public var homeserver: String
        /// Full user id (`@vigil:example`) or localpart; needed for password login, and to
        /// recognise the bot's own messages.
        public var user: String?
        public var accessToken: String?
        public var password: String?
        /// Device id used for password login; transaction ids are scoped to it, so keep it fixed.
        public var deviceID: String
        /// Room id (`!abc:example`) or alias (`#ops:example`).
        public var room: String
        /// Operators: user ids whose commands are all obeyed (exact match).
        public var allow: [String]
        /// Viewers: user ids that may run the read-only commands only (`ChatRole.viewerCommands`);
        /// another command of theirs is refused with a short reply (docs/chat.md, "Roles").
        public var viewers: [String] = []
        /// Answer a sender on neither list once ("not allowed"), remembered in `chat_state`
        /// across restarts. Default false: strangers get nothing.
        public var tellStrangers = false
        /// `mention`: user ids the circuit-open alert mentions (`m.mentions`), so it wakes
        /// someone; absent: the `allow` list (docs/chat.md, "One message per incident").
        public var mention: [String]?
        /// Who the alert mentions: `mention`, or everyone on `allow`.
        public var operators: [String] { mention ?? allow }
        /// Long-poll time of one /sync (the call runs off the bridge's loop).
        public var syncTimeout: TimeSpan
        /// One request's time limit (a /sync gets `syncTimeout` on top).
        public var timeout: TimeSpan
        /// `m.notice` (default, the convention for bots) or `m.text`.
        public var msgtype: String
        /// The cap on a /sync (and /messages) reply's body, `max_sync_bytes` (default 16 MiB);
        /// a longer reply is not read and is retried (docs/chat.md, "Reply size caps").
        public var maxSyncBytes: Int = 16 << 20

        public init(homeserver: String, user: String? = nil, accessToken: String? = nil, password: String? = nil,
                    deviceID: String = "VIGIL", room: String, allow: [String] = [],
                    syncTimeout: TimeSpan = .seconds(5), timeout: TimeSpan = .seconds(10), msgtype: String = "m.notice") {
            self.homeserver = homeserver
            self.user = user
            self.accessToken = accessToken
            self.password = password
            self.deviceID = deviceID
            self.room = room
            self.allow = allow
            self.syncTimeout = syncTimeout
            self.timeout = timeout
            self.msgtype = msgtype
        }

        enum CodingKeys: String, CodingKey {
            case homeserver, user, room, allow, mention, msgtype, timeout
            case accessToken = "access_token", accessTokenEnv = "access_token_env", accessTokenFile = "access_token_file"
            case password, passwordEnv = "password_env", passwordFile = "password_file"
            case deviceID = "device_id", syncTimeout = "sync_timeout", maxSyncBytes = "max_sync_bytes"
            case viewers, tellStrangers = "tell_strangers"
        }

        /// What `sender` may do here.
        public func role(of sender: String) -> ChatRole {
            if allow.contains(sender) { return .operator }
            if viewers.contains(sender) { return .viewer }
            return .stranger
        }

        /// A Matrix user id: `@localpart:server` (an ASCII localpart, a non-empty server name).
        public static func isUserID(_ s: String) -> Bool {
            guard s.hasPrefix("@"), let colon = s.firstIndex(of: ":") else { return false }
            let local = s[s.index(after: s.startIndex)..<colon]
            let server = s[s.index(after: colon)...]
            guard !local.isEmpty, !server.isEmpty, s.utf8.count <= 255 else { return false }
            let okLocal = local.unicodeScalars.allSatisfy { c in
                c.isASCII && (("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) || "._=-/+".unicodeScalars.contains(c))
            }
            let okServer = server.unicodeScalars.allSatisfy { c in c.isASCII && c.value > 0x20 && c.value < 0x7F && c != "/" }
            return okLocal && okServer
        }


        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            homeserver = try c.decode(String.self, forKey: .homeserver)
            while homeserver.hasSuffix("/") { homeserver.removeLast() }
            user = try c.decodeIfPresent(String.self, forKey: .user)
            accessToken = try ChatConfig.secret(c, .accessToken, env: .accessTokenEnv, file: .accessTokenFile)
            password = try ChatConfig.secret(c, .password, env: .passwordEnv, file: .passwordFile)
            guard accessToken != nil || (password != nil && user != nil) else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription:
                    "chat.matrix needs \"access_token\" (or _env/_file), or \"user\" with \"password\" (or _env/_file)"))
            }
            deviceID = try c.decodeIfPresent(String.self, forKey: .deviceID) ?? "VIGIL"
            room = try c.decode(String.self, forKey: .room)
            let allow = try c.decodeIfPresent([String].self, forKey: .allow) ?? []
            let viewers = try c.decodeIfPresent([String].self, forKey: .viewers) ?? []
            self.allow = allow
            self.viewers = viewers
            tellStrangers = try c.decodeIfPresent(Bool.self, forKey: .tellStrangers) ?? false
            for (key, list) in [(CodingKeys.allow, allow), (.viewers, viewers)] {
                if let bad = list.first(where: { !Matrix.isUserID($0) }) {
                    throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [key], debugDescription:
                        "chat.matrix.\(key.stringValue): \(bad.debugDescription) is not a Matrix user id (like @alice:example.org)"))
                }
            }
            if let both = viewers.first(where: { allow.contains($0) }) {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.viewers], debugDescription:
                    "chat.matrix: \(both) is in both \"allow\" and \"viewers\" (an operator can already do everything a viewer can)"))
            }
            if let m = try c.decodeIfPresent([String].self, forKey: .mention) {
                if let bad = m.first(where: { !Matrix.isUserID($0) }) {
                    throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.mention], debugDescription:
                        "chat.matrix.mention: \"\(ChatText.brief(bad, maxLength: 80))\" is not a Matrix user id (@user:server)"))
                }
                mention = m
            }
            syncTimeout = try ChatConfig.duration(c, .syncTimeout) ?? .seconds(5)
            timeout = try ChatConfig.duration(c, .timeout) ?? .seconds(10)
            msgtype = try c.decodeIfPresent(String.self, forKey: .msgtype) ?? "m.notice"
            if let n = try c.decodeIfPresent(Int.self, forKey: .maxSyncBytes) {
                guard n >= 64 << 10 else {
                    throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.maxSyncBytes], debugDescription:
                        "chat.matrix.max_sync_bytes must be a whole number of bytes ≥ 65536 (got \(n))"))
                }
                maxSyncBytes = n
            }
        }
    }

    public init(adapters: [String] = ["console"], maxAttempts: Int = 10, backoffInitial: TimeSpan = .seconds(1),
                backoffMax: TimeSpan = .seconds(300), backoffJitter: Double = 0.5, circuitFailures: Int = 3,
                circuitCooloff: TimeSpan = .seconds(5), circuitCooloffMax: TimeSpan = .seconds(120),
                maxMessageLength: Int = 4000, webhook: Webhook? = nil, matrix: Matrix? = nil, maxAge: TimeSpan = .seconds(72 * 3600),
                commandMaxAge: TimeSpan = .seconds(600)) {
        self.adapters = adapters
        self.maxAttempts = maxAttempts
        self.maxAge = maxAge
        self.backoffInitial = backoffInitial
        self.backoffMax = backoffMax
        self.backoffJitter = backoffJitter
        self.circuitFailures = circuitFailures
        self.circuitCooloff = circuitCooloff
        self.circuitCooloffMax = circuitCooloffMax
        self.maxMessageLength = maxMessageLength
        self.commandMaxAge = commandMaxAge
        self.webhook = webhook
        self.matrix = matrix
    }

    /// The embedded default: the console adapter only.
    public static let console = ChatConfig()

    public static let knownAdapters = ["console", "webhook", "matrix"]

    enum CodingKeys: String, CodingKey {
        case adapter, adapters, webhook, matrix
        case maxAttempts = "max_attempts", backoffInitial = "backoff_initial", backoffMax = "backoff_max"
        case backoffJitter = "backoff_jitter", circuitFailures = "circuit_failures"
        case circuitCooloff = "circuit_cooloff", circuitCooloffMax = "circuit_cooloff_max"
        case maxMessageLength = "max_message_length", commandMaxAge = "command_max_age"
        case maxAge = "max_age"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ChatConfig()
        webhook = try c.decodeIfPresent(Webhook.self, forKey: .webhook)
        matrix = try c.decodeIfPresent(Matrix.self, forKey: .matrix)
        if let list = try c.decodeIfPresent([String].self, forKey: .adapters) {
            adapters = list
        } else if let one = try c.decodeIfPresent(String.self, forKey: .adapter) {
            adapters = [one]
        } else {
            adapters = ["console"] + (webhook != nil ? ["webhook"] : []) + (matrix != nil ? ["matrix"] : [])
        }
        var seen = Set<String>()
        adapters = adapters.filter { seen.insert($0).inserted }
        for a in adapters {
            guard ChatConfig.knownAdapters.contains(a) else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription:
                    "unknown chat adapter \(a.debugDescription) (known: \(ChatConfig.knownAdapters.joined(separator: ", ")))"))
            }
        }
        if adapters.contains("webhook") && webhook == nil {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "chat adapter \"webhook\" needs a \"webhook\" object with \"url\""))
        }
        if adapters.contains("matrix") && matrix == nil {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "chat adapter \"matrix\" needs a \"matrix\" object"))
        }
        maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? d.maxAttempts
        backoffInitial = try ChatConfig.duration(c, .backoffInitial) ?? d.backoffInitial
        backoffMax = try ChatConfig.duration(c, .backoffMax) ?? d.backoffMax
        backoffJitter = min(1, max(0, try c.decodeIfPresent(Double.self, forKey: .backoffJitter) ?? d.backoffJitter))
        circuitFailures = try c.decodeIfPresent(Int.self, forKey: .circuitFailures) ?? d.circuitFailures
        circuitCooloff = try ChatConfig.duration(c, .circuitCooloff) ?? d.circuitCooloff
        circuitCooloffMax = try ChatConfig.duration(c, .circuitCooloffMax) ?? d.circuitCooloffMax
        maxMessageLength = try c.decodeIfPresent(Int.self, forKey: .maxMessageLength) ?? d.maxMessageLength
        maxAge = try ChatConfig.duration(c, .maxAge) ?? d.maxAge
        commandMaxAge = try ChatConfig.duration(c, .commandMaxAge) ?? d.commandMaxAge
        guard maxAttempts >= 1, circuitFailures >= 1, maxMessageLength >= 100 else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription:
                "chat: max_attempts and circuit_failures must be at least 1, max_message_length at least 100"))
        }
    }

    /// Reads the `chat` object of a `vigil.json` file. An absent file or key gives `.console`.
    public static func load(configFile path: String) throws -> ChatConfig {
        let file: Data?
        do { file = try ConfigFile.read(path) } catch { throw ChatConfigError(message: error.message) }
        guard let data = file else { return .console }
        struct Root: Decodable { var chat: ChatConfig? }
        do {
            return try JSONDecoder().decode(Root.self, from: data).chat ?? .console
        } catch let e as DecodingError {
            throw ChatConfigError(message: "\(path): chat: \(ChatConfig.describe(e))")
        }
    }

    static func describe(_ e: DecodingError) -> String {
        switch e {
        case .dataCorrupted(let c): return c.debugDescription
        case .keyNotFound(let k, let c): return "missing \"\(k.stringValue)\" in \((c.codingPath.map(\.stringValue) + [""]).joined(separator: "."))"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "wrong type at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        @unknown default: return "\(e)"
        }
    }

    // MARK: - Decoding helpers

    struct Seconds: Decodable {
        var span: TimeSpan
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let d = try? c.decode(Double.self) {
                span = .seconds(d)
            } else {
                let s = try c.decode(String.self)
                guard let t = TimeSpan.parse(s) else {
                    throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "\(s.debugDescription) is not a duration (use 0.2, 200ms, 2s, 5m)"))
                }
                span = t
            }
            guard span.nanoseconds > 0 else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "durations must be greater than zero"))
            }
            guard span >= .shortestSetting else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "durations are at least 1ms (e.g. 0.001, 1ms, 200ms)"))
            }
        }
    }

    static func duration<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K) throws -> TimeSpan? {
        try c.decodeIfPresent(Seconds.self, forKey: key)?.span
    }

    /// A secret given inline, by environment variable name, or by file path (trimmed).
    static func secret<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K, env: K?, file: K?) throws -> String? {
        if let v = try c.decodeIfPresent(String.self, forKey: key) { return v }
        if let env, let name = try c.decodeIfPresent(String.self, forKey: env) {
            guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [env], debugDescription: "environment variable \(name) is not set"))
            }
            return v
        }
        if let file, let path = try c.decodeIfPresent(String.self, forKey: file) {
            // An operator's path (a link is fine), read without blocking (docs/operator-guide.md, "Bad input").
            guard case .bytes(let data) = StateSlot.read(path, followSymlinks: true, sizeLimit: 64 << 10) else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [file], debugDescription: "cannot read \(path) (missing, not a regular file, or over 64 KiB)"))
            }
            return String(decoding: data, as: UTF8.self).trimmingWhitespace()
        }
        return nil
    }
}

/// What a Matrix sender may do (docs/chat.md, "Roles").
public enum ChatRole: String, Sendable, Equatable {
    /// On `allow`: every command.
    case `operator`
    /// On `viewers`: the read-only commands only.
    case viewer
    /// On neither: nothing runs; answered once at most (`tell_strangers`).
    case stranger

    /// The commands a viewer may run (by `ChatCommand.name`): they change nothing.
    public static let viewerCommands: Set<String> = ["status", "missions", "show", "journal", "help"]

    /// Whether this role may run `command` (unknown or malformed commands are answered with the
    /// help for everyone who may run anything).
    public func may(_ command: ChatCommand) -> Bool {
        switch self {
        case .operator: return true
        case .stranger: return false
        case .viewer:
            if case .unknown = command { return true }
            return ChatRole.viewerCommands.contains(command.name)
        }
    }

    /// The reply to a viewer's command that viewers may not run.
    public static func refusal(_ command: ChatCommand) -> String {
        "not allowed for viewers: /\(command.name)"
    }
}

public struct ChatConfigError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}
