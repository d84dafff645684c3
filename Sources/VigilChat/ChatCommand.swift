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
    case help
    /// Not a command Vigil knows (or a known one used wrongly): the text to show in the reply.
    case unknown(String)

    /// Longest mission text accepted (argv elements have a limit too).
    public static let maxMissionLength = 8000

    /// The command in `text`, or nil when the text is not a command at all (chatter). The text
    /// is cleaned first (control characters, invisible format characters, length).
    public static func parse(_ text: String) -> ChatCommand? {
        let cleaned = ChatText.clean(text, maxLength: maxMissionLength + 100)
        let trimmed = cleaned.drop(while: { $0 == " " || $0 == "\t" || $0 == "\n" })
        guard let first = trimmed.first, first == "/" || first == "!" else { return nil }
        let afterPrefix = trimmed.dropFirst()
        let wordEnd = afterPrefix.firstIndex(where: { $0 == " " || $0 == "\t" || $0 == "\n" }) ?? afterPrefix.endIndex
        let word = afterPrefix[..<wordEnd].lowercased()
        guard !word.isEmpty, word.count <= 32, word.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            return word.isEmpty ? nil : .unknown(ChatText.brief(String(first) + word, maxLength: 40))
        }
        let rest = afterPrefix[wordEnd...].trimmingWhitespace()
        let args = rest.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
        let shown = "/" + word

        switch word {
        case "status": return args.isEmpty ? .status : .unknown(shown + " takes no arguments")
        case "missions": return args.isEmpty ? .missions : .unknown(shown + " takes no arguments")
        case "mission":
            guard !rest.isEmpty else { return .unknown("/mission needs the task text: /mission TEXT") }
            guard rest.count <= maxMissionLength else { return .unknown("/mission text is too long (at most \(maxMissionLength) characters)") }
            return .mission(rest)
        case "cancel":
            guard args.count == 1, let id = args.first, id.count <= 64,
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
        case "help": return .help
        default:
            return .unknown(ChatText.brief(shown, maxLength: 40))
        }
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
    /help — this list
    """

    /// The reply to an unknown or malformed command: what was wrong and the short help.
    public static func unknownReply(_ what: String) -> String {
        let w = ChatText.brief(what, maxLength: 80)
        let lead = w.hasPrefix("/") && !w.contains(" ") ? "Unknown command \(w)." : w
        return lead + "\n" + helpText
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

/// Runs commands for chat: implemented by the bridge. Called on the bridge's own thread (inside
/// `ChatService.pump`), only for commands from allowed senders, never for `.help` or
/// `.unknown` (the chat service answers those itself). Returns the reply text; it is cleaned and
/// defused before it is sent, so echoing the operator's text back is safe.
public protocol ChatCommandHandler: AnyObject {
    func handle(_ command: ChatCommand, sender: String) -> String
}
