import FoundationEssentials
import VigilStore

/// A command from chat (or `vigil say`). Parsed from text that starts with `/` or `!` (Matrix
/// clients such as Element keep `/word` for themselves, so `!status` works too).
public enum ChatCommand: Equatable, Sendable {
    case status
    case missions
    /// `/mission TEXT`: run the configured agent command with TEXT as one argv element.
    case mission(String)
    case cancel(String)
    /// `/show ID`: a mission's state and the last lines of its output.
    case show(Int64)
    /// `bridge` or `runner`.
    case restart(String)
    case journal(Int?)
    case healReset
    /// `/help`, or `/help COMMAND`: the usage of one command with an example.
    case help(String?)
    /// Not a command Vigil knows (or a known one used wrongly): the text to show in the reply.
    case unknown(String)

    /// Longest mission text accepted (argv elements have a limit too).
    public static let maxMissionLength = 8000

    /// The command in `text`, or nil when the text is not a command at all (chatter). The text
    /// is cleaned first (control characters, invisible format characters, length).
    public static func parse(_ text: String) -> ChatCommand? {
        // A command starts the message: a message that starts with a space is talk (docs/chat.md,
        // "Commands"). The name is judged before cleaning: an invisible character inside it
        // (a zero-width space, a bidi control) would otherwise be removed and the command run,
        // although what the sender's client showed was not that command.
        guard let first = text.unicodeScalars.first, first == "/" || first == "!" else { return nil }
        let rawName = text.unicodeScalars.dropFirst().prefix { !isSeparator($0) }
        if let hidden = rawName.first(where: hiddenInName) {
            let code = String(hidden.value, radix: 16, uppercase: true)
            return .unknown("The command name holds an invisible or invalid character (U+\(String(repeating: "0", count: max(0, 4 - code.count)) + code)): not run; type it again")
        }
        let cleaned = ChatText.clean(text, maxLength: maxMissionLength + 100)
        let trimmed = Substring(cleaned)
        let afterPrefix = trimmed.dropFirst()
        let wordEnd = afterPrefix.firstIndex(where: { $0.unicodeScalars.allSatisfy(isSeparator) }) ?? afterPrefix.endIndex
        let word = afterPrefix[..<wordEnd].lowercased()
        guard !word.isEmpty, word.count <= 32, word.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            return word.isEmpty ? nil : .unknown(ChatText.brief(String(first) + word, maxLength: 40))
        }
        let rest = String(afterPrefix[wordEnd...].drop(while: { $0.unicodeScalars.allSatisfy(isSeparator) })).trimmingWhitespace()
        let args = rest.split(whereSeparator: { $0.unicodeScalars.allSatisfy(isSeparator) }).map(String.init)
        let shown = "/" + word

        switch word {
        case "status": return args.isEmpty ? .status : .unknown(shown + " takes no arguments")
        case "missions": return args.isEmpty ? .missions : .unknown(shown + " takes no arguments")
        case "mission":
            guard !rest.isEmpty else { return .unknown("/mission needs the task text: /mission TEXT") }
            guard rest.count <= maxMissionLength else { return .unknown("/mission text is too long (at most \(maxMissionLength) characters)") }
            return .mission(rest)
        case "cancel":
            // `/missions` prints `#1`: `/cancel #1` is mission 1.
            guard args.count == 1, let id = args.first.map({ String($0.drop(while: { $0 == "#" })) }), !id.isEmpty, id.count <= 64,
                  id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                return .unknown("/cancel needs one mission id: /cancel ID")
            }
            return .cancel(id)
        case "show":
            guard args.count == 1, let id = Int64(args[0].drop(while: { $0 == "#" })), id > 0 else {
                return .unknown("/show needs one mission number: /show ID")
            }
            return .show(id)
        case "restart":
            guard args.count == 1, let what = args.first?.lowercased(), what == "bridge" || what == "runner" else {
                return .unknown("/restart needs bridge or runner: /restart bridge|runner")
            }
            return .restart(what)
        case "journal":
            if args.isEmpty { return .journal(nil) }
            guard args.count == 1, let n = Int(args[0]), n >= 1 else { return .unknown("/journal takes a count: /journal [N]") }
            return .journal(min(n, 200))
        case "heal":
            guard args.count == 1, args[0].lowercased() == "reset" else { return .unknown("/heal needs reset: /heal reset") }
            return .healReset
        case "help":
            guard let topic = args.first?.drop(while: { $0 == "/" || $0 == "!" }).lowercased() else { return .help(nil) }
            guard args.count == 1, usage[topic] != nil else { return .unknown("/help takes a command name: /help [COMMAND], e.g. /help mission") }
            return .help(topic)
        default:
            return .unknown(ChatText.brief(shown, maxLength: 40))
        }
    }

    /// A character that may not be in a command's name: an invisible format character (which
    /// cleaning would remove, running a command the sender's client did not show), a joiner,
    /// or U+FFFD (what `inboxBody` leaves of one, and what invalid UTF-8 becomes).
    static func hiddenInName(_ s: Unicode.Scalar) -> Bool {
        ChatText.isInvisibleFormat(s.value) || s.value == 0x200C || s.value == 0x200D || s.value == 0xFFFD
    }

    /// The text a command is stored as in the inbox (the bridge parses it again from there):
    /// cleaned like any chat text, except that a hidden character in the command's name becomes
    /// U+FFFD, which cleaning keeps, so the refusal survives into the parse that would run it.
    /// `nameFirst`: the first word is the name even without `/` (`vigil say restart bridge`).
    public static func inboxBody(_ raw: String, nameFirst: Bool = false) -> String {
        var out = String.UnicodeScalarView()
        var inName = nameFirst
        for (i, u) in raw.unicodeScalars.enumerated() {
            if i == 0, u == "/" || u == "!" {
                inName = true
                out.append(u)
                continue
            }
            if inName && isSeparator(u) { inName = false }
            out.append(inName && hiddenInName(u) ? "\u{FFFD}" : u)
        }
        return ChatText.clean(String(out), maxLength: maxMissionLength + 100)
    }

    /// What ends a command's name and separates its arguments: space, tab, newline, and the
    /// no-break spaces some clients put after a command (U+00A0, U+202F).
    static func isSeparator(_ s: Unicode.Scalar) -> Bool {
        s == " " || s == "\t" || s == "\n" || s == "\r" || s.value == 0x00A0 || s.value == 0x202F
    }

    /// `/help COMMAND`: its usage, what it does, and an example.
    public static let usage: [String: String] = [
        "status": "/status — the bridge (verdict, heartbeat), the runner, the heal tier and circuit, queue counts.\nExample: /status",
        "missions": "/missions — the last 10 missions: #ID, state, attempts, exit code, lock, command.\nExample: /missions",
        "mission": "/mission TEXT — runs the configured agent command (agent-command in vigil.json) with TEXT as one argument; the reply names the mission's id.\nExample: /mission fix the failing test in parser.swift",
        "cancel": "/cancel ID — cancels a mission: at once if it waits, with SIGTERM (SIGKILL after the grace) if it runs. ID as /missions shows it, with or without #.\nExample: /cancel #12",
        "show": "/show ID — a mission's state and the last lines of its output.\nExample: /show 12",
        "restart": "/restart bridge|runner — asks that process to restart (a restart marker; the runner re-execs within a tick).\nExample: /restart bridge",
        "journal": "/journal [N] — the newest N journal entries (default 10, at most 200), as many as fit in one message.\nExample: /journal 30",
        "heal": "/heal reset — closes an open circuit and forgets the escalation: the watchdog tries again at once.\nExample: /heal reset",
        "help": "/help [COMMAND] — the commands, or one command's usage with an example.\nExample: /help mission",
    ]

    /// The reply to `/help` or `/help COMMAND`.
    public static func helpReply(_ topic: String?) -> String {
        guard let topic, let text = usage[topic] else { return helpText }
        return text
    }

    /// The `/help` reply.
    public static let helpText = """
    Vigil commands (prefix / or !):
    /status — bridge, runner, heal state, queues
    /missions — missions and their state
    /mission TEXT — run the agent with TEXT
    /cancel ID — cancel a mission
    /show ID — a mission's state and the last lines of its output
    /restart bridge|runner — restart a process
    /journal [N] — the last N journal entries
    /heal reset — close an open circuit
    /help [COMMAND] — this list, or one command's usage
    """

    /// The reply to an unknown or malformed command: what was wrong and the short help.
    public static func unknownReply(_ what: String) -> String {
        let w = ChatText.brief(what, maxLength: 80)
        let lead = w.hasPrefix("/") && !w.contains(" ") ? "Unknown command \(w)." : w
        return lead + "\n" + helpText
    }

    /// Commands that take time (`/mission`, `/restart`): Matrix gets 👀 when they arrive and
    /// ✅ or ❌ when they are done (docs/chat.md, "Reactions").
    public var takesTime: Bool {
        switch self {
        case .mission, .restart: return true
        default: return false
        }
    }

    /// Commands whose reply is a table (fixed-width in HTML).
    public var repliesWithTable: Bool {
        switch self {
        case .status, .missions, .journal, .show: return true
        default: return false
        }
    }

    /// A short name for journals.
    public var name: String {
        switch self {
        case .status: return "status"
        case .missions: return "missions"
        case .mission: return "mission"
        case .cancel: return "cancel"
        case .show: return "show"
        case .restart: return "restart"
        case .journal: return "journal"
        case .healReset: return "heal reset"
        case .help: return "help"
        case .unknown: return "unknown"
        }
    }
}

/// Where a command came from, for a handler that answers in place (docs/chat.md, "Replies,
/// reactions, HTML"): the adapter, the sender, and for Matrix the event id and thread root.
public struct ChatCommandContext: Sendable, Equatable {
    /// The `chat_inbox` row: reaction keys and deferred replies are named after it.
    public var inboxID: Int64
    public var adapter: String
    public var sender: String
    /// The chat server's id of the message (a Matrix event id); nil for `vigil say`.
    public var originID: String?
    /// The thread root it was said in.
    public var thread: String?
    /// The room it was said in (its id): answers go there, or nowhere if the configured room
    /// changed meanwhile (docs/chat.md, "Room problems").
    public var room: String?

    public init(inboxID: Int64 = 0, adapter: String = "console", sender: String, originID: String? = nil, thread: String? = nil,
                room: String? = nil) {
        self.inboxID = inboxID
        self.adapter = adapter
        self.sender = sender
        self.originID = originID
        self.thread = thread
        self.room = room
    }

    /// What a mission queued by this command keeps (`missions.chat_ref`), so its notices answer
    /// the command: nil when there is nothing to answer (`vigil say`, console).
    public var chatRef: ChatRef? {
        guard ChatNotice.hasRelations(adapter), let originID else { return nil }
        return ChatRef(adapter: adapter, event: originID, thread: thread, sender: sender, inbox: inboxID)
    }
}

/// The message a mission (or a deferred answer) replies to: `missions.chat_ref` as JSON.
public struct ChatRef: Sendable, Equatable, Codable {
    public var adapter: String
    /// The event to reply to.
    public var event: String
    public var thread: String?
    /// Who sent it: mentioned in the notice.
    public var sender: String
    /// The command's `chat_inbox` id (reaction keys).
    public var inbox: Int64?

    public init(adapter: String, event: String, thread: String?, sender: String, inbox: Int64? = nil) {
        self.adapter = adapter
        self.event = event
        self.thread = thread
        self.sender = sender
        self.inbox = inbox
    }

    public var json: String {
        (try? JSONEncoder().encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    public static func parse(_ text: String?) -> ChatRef? {
        guard let text else { return nil }
        return try? JSONDecoder().decode(ChatRef.self, from: Data(text.utf8))
    }

    /// The relations of a message answering it (reply, thread; `mention`: its sender too).
    public func meta(mention: Bool) -> OutboxMeta {
        OutboxMeta(replyTo: event, thread: thread, mentions: mention ? [sender] : nil)
    }
}

/// A handler's answer: the reply's text, optionally its HTML, and how the command went (the
/// ✅/❌ reaction for commands that take time).
public struct ChatCommandResult: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        case ok
        /// Refused or failed: ❌.
        case failed
        /// Not finished yet: the handler answers again later (`/restart bridge`: the new bridge
        /// says it is up and reacts ✅).
        case pending
    }

    public var text: String
    public var html: String?
    public var outcome: Outcome

    public init(_ text: String, html: String? = nil, outcome: Outcome = .ok) {
        self.text = text
        self.html = html
        self.outcome = outcome
    }
}

/// Runs commands for chat: implemented by the bridge. Called on the bridge's own thread (inside
/// `ChatService.pump`), only for commands from allowed senders, never for `.help` or
/// `.unknown` (the chat service answers those itself). Returns the reply text; it is cleaned and
/// defused before it is sent, so echoing the operator's text back is safe.
public protocol ChatCommandHandler: AnyObject {
    func handle(_ command: ChatCommand, sender: String) -> String
    /// The same with where the command came from; the default calls `handle(_:sender:)`.
    func handle(_ command: ChatCommand, context: ChatCommandContext) -> ChatCommandResult
}

extension ChatCommandHandler {
    public func handle(_ command: ChatCommand, context: ChatCommandContext) -> ChatCommandResult {
        ChatCommandResult(handle(command, sender: context.sender))
    }
}
