import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// `vigil say TEXT`: the console adapter's way in. Hands a command to the bridge durably (a
/// row in the chat inbox, committed before the confirmation is printed) and wakes it.
enum SayCommand {
    static let help = """
    usage: vigil say [--wait DURATION] TEXT...

    Sends a command to the bridge as the local operator, as if typed in chat: status, missions,
    mission TEXT, cancel ID, restart bridge|runner, journal [N], heal reset, help (the leading
    / is optional here). The command is stored durably before this returns; the bridge runs it
    on its next loop turn and its reply appears in the chat log (and the runner's output).

    options:
      --wait DURATION   wait up to DURATION (e.g. 5s) for the bridge's reply and print it
    """

    static let command = Command(name: "say", summary: "send a command to the bridge (console chat)", help: help, run: run)

    static func run(_ inv: Invocation) throws {
        let args = try Arguments(inv.arguments, valued: ["wait"])
        let words = args.positional + (args.rest ?? [])
        let text = ChatCommand.inboxBody(words.joined(separator: " ").trimmingWhitespace(), nameFirst: true).trimmingWhitespace()
        guard !text.isEmpty else { throw UsageError("say what? e.g. `vigil say status` or `vigil say mission fix the tests`") }
        let wait = try args.duration("wait")
        guard FileManager.default.fileExists(atPath: inv.stateDir.path) else {
            throw CommandError("no state directory at \(inv.stateDir.path): is Vigil running here? (pass --state-dir or set VIGIL_STATE_DIR)")
        }
        let db: Database
        let id: Int64
        do {
            db = try Database(path: inv.stateDir.database)
            guard let newID = try ChatInbox(db).add(adapter: "console", sender: "console", body: text) else {
                throw CommandError("the command was not stored (duplicate?)")
            }
            id = newID
        } catch let e as CommandError {
            throw e
        } catch {
            throw CommandError("cannot hand the command to the bridge: \(error)")
        }
        ChatKick.poke(inv.stateDir)
        let shown = ChatText.brief(text, maxLength: 120)
        guard let wait else {
            printOut("Sent to the bridge (command #\(id)): \(shown)\nThe reply will appear in \(inv.stateDir.chatLog) and the runner's output; `vigil say --wait 5s …` waits for it here.")
            return
        }
        printOut("Sent to the bridge (command #\(id)): \(shown)")
        let outbox = Outbox(db)
        let end = Clock.boot() + wait
        while Clock.boot() < end {
            if let reply = try? outbox.message(key: "reply:\(id)", adapter: "console") {
                printOut(reply.body)
                return
            }
            if let c = try? ChatInbox(db).command(id: id), c.state == "ignored" || c.state == "interrupted" {
                throw CommandError("the bridge did not run it (\(c.state))")
            }
            ThisProcess.pause(.milliseconds(50))
        }
        throw CommandError("no reply within \(wait): is the bridge running? (`vigil status`); the command stays queued and runs when it is")
    }
}
