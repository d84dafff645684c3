import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// `vigil outbox`: the notifications and their delivery state.
enum OutboxCommand {
    static let help = """
    usage: vigil outbox [--json] [--state STATE] [--adapter NAME] [--limit N]
           vigil outbox --retry ID|failed

    Lists messages for people (heal actions, recoveries, alerts, command replies) and their
    delivery: pending (waiting for its turn or retry), sending (a bridge is calling the chat
    server), delivered, failed (given up: refused, or out of attempts; never dropped silently).

    options:
      --json           a JSON array of {id, key, adapter, state, attempts, body, last_error, ...}
      --state STATE    only pending, sending, delivered or failed messages
      --adapter NAME   only one adapter's (console, webhook, matrix)
      --limit N        the newest N (default 50; 0 for all)
      --retry ID       put failed message ID back to pending with its attempts reset
      --retry failed   the same for every failed message
    """

    static let command = Command(name: "outbox", summary: "notifications and their delivery state", help: help, run: run)

    static func run(_ inv: Invocation) throws {
        let args = try Arguments(inv.arguments, valued: ["state", "adapter", "limit", "retry"], booleans: ["json"])
        guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0].debugDescription)") }
        var state: OutboxState?
        if let s = args.value("state") {
            guard let st = OutboxState(rawValue: s) else {
                throw UsageError("--state \(s.debugDescription): use pending, sending, delivered or failed")
            }
            state = st
        }
        let limit = try args.int("limit", min: 0) ?? 50
        guard FileManager.default.fileExists(atPath: inv.stateDir.path) else {
            throw CommandError("no state directory at \(inv.stateDir.path) (pass --state-dir or set VIGIL_STATE_DIR)")
        }
        guard FileManager.default.fileExists(atPath: inv.stateDir.database) else {
            if args.has("json") { printOut("[]") } else { printOut("The outbox is empty (no database yet at \(inv.stateDir.database)).") }
            return
        }
        let outbox: Outbox
        do {
            outbox = Outbox(try Database(path: inv.stateDir.database))
        } catch {
            throw CommandError("cannot open the outbox: \(error)")
        }

        if let r = args.value("retry") {
            let n: Int
            if r == "failed" { n = try outbox.retryFailed() } else {
                guard let id = Int64(r) else { throw UsageError("--retry \(r.debugDescription): give a message id or \"failed\"") }
                n = try outbox.retryFailed(id: id)
                if n == 0 { throw CommandError("message \(id) is not a failed message (see `vigil outbox --state failed`)") }
            }
            ChatKick.poke(inv.stateDir)
            printOut("Queued \(n) failed message\(n == 1 ? "" : "s") again; the bridge delivers \(n == 1 ? "it" : "them") on its next turn.")
            return
        }

        let rows = try outbox.list(limit: limit == 0 ? Int.max : limit, state: state, adapter: args.value("adapter"))
        if args.has("json") {
            printOut(JSONValue.array(rows.map(\.json)).jsonString)
            return
        }
        let counts = try outbox.counts()
        let summary = OutboxState.allCases.map { "\(counts[$0.rawValue] ?? 0) \($0.rawValue)" }.joined(separator: ", ")
        if rows.isEmpty {
            printOut("No messages\(state.map { " in state \($0.rawValue)" } ?? ""). (\(summary))")
            return
        }
        let now = Clock.wall()
        var lines = [pad("ID", 6) + pad("STATE", 11) + pad("ADAPTER", 9) + pad("TRIES", 6) + pad("AGE", 7) + "MESSAGE"]
        for m in rows {
            let body = ChatText.brief(m.body, maxLength: 70)
            lines.append(pad("\(m.id)", 6) + pad(m.state.rawValue, 11) + pad(m.adapter, 9) + pad("\(m.attempts)", 6)
                         + pad(age(now.timeIntervalSince(m.created)), 7) + body)
            if m.state != .delivered, let e = m.lastError {
                var note = "      last error: " + ChatText.brief(e, maxLength: 150)
                if let next = m.nextAttempt {
                    let wait = (next - Clock.boot()).seconds
                    if wait > 0 { note += " (next try in \(age(wait)))" }
                }
                lines.append(note)
            }
        }
        lines.append("\(summary)\(rows.count < (counts.values.reduce(0, +)) ? " (showing \(rows.count); --limit 0 for all)" : "")")
        printOut(lines.joined(separator: "\n"))
    }

    static func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s + " " : s.padded(toLength: n)
    }

    static func age(_ seconds: TimeInterval) -> String {
        let s = max(0, seconds)
        if s < 60 { return "\(Int(s))s" }
        if s < 3600 { return "\(Int(s / 60))m" }
        if s < 86400 { return "\(Int(s / 3600))h" }
        return "\(Int(s / 86400))d"
    }
}
