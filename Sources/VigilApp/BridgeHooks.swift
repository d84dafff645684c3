import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// The bridge's chat side: outbox delivery and chat commands (`ChatService`), and the
/// commands' implementations (`ChatCommandHandler`). Everything runs on the bridge's loop
/// thread; `pump` returns quickly whatever the network does.
final class BridgeHooks: ChatCommandHandler {
    let dir: StateDirectory
    let journal: Journal
    let config: Configuration
    let notifier: Notifier
    private(set) var chat: ChatService!

    init(dir: StateDirectory, journal: Journal, config: Configuration, chatConfig: ChatConfig) throws {
        self.dir = dir
        self.journal = journal
        self.config = config
        notifier = Notifier(stateDir: dir, config: chatConfig, journal: journal)
        chat = try ChatService(stateDir: dir, config: chatConfig, journal: journal, handler: self)
        chat.restartedDescription = "pid \(ThisProcess.pid), version \(VigilVersion.string)"
    }

    static func make(bridge: Bridge) throws -> BridgeHooks? {
        let chatConfig = try ChatConfig.load(configFile: bridge.ctx.dir.config)
        return try BridgeHooks(dir: bridge.ctx.dir, journal: bridge.ctx.journal, config: bridge.config, chatConfig: chatConfig)
    }

    func pump(now: BootInstant) {
        notifier.retryPending()
        chat.pump(now: now)
    }
    var nextWake: BootInstant? { chat.nextWake }
    var wakeDescriptors: [Int32] { chat.wakeDescriptors }
    func shutdown(deadline: BootInstant) { chat.shutdown(deadline: deadline) }
    func notify(key: String, text: String) { notifier.notify(key: key, text: text) }

    // MARK: - Chat commands

    func handle(_ command: ChatCommand, sender: String) -> String {
        handle(command, context: ChatCommandContext(sender: sender)).text
    }

    /// Where the command came from matters to `/mission` (its notices answer the command) and
    /// `/restart bridge` (the next bridge answers it); a refusal is `.failed` (❌).
    func handle(_ command: ChatCommand, context: ChatCommandContext) -> ChatCommandResult {
        let sender = context.sender
        func failed(_ text: String) -> ChatCommandResult { ChatCommandResult(text, outcome: .failed) }
        do {
            switch command {
            case .status:
                return ChatCommandResult(try ChatCommandActions.status(dir))
            case .missions:
                return ChatCommandResult(try ChatMissions.list(dir))
            case .mission(let text):
                // vigil.json as it is now: a changed agent command needs no bridge restart.
                let current: Configuration
                do { current = try Configuration.load(stateDir: dir, arguments: try Arguments([], valued: [])) } catch {
                    return failed("Nothing queued: \(dir.config) cannot be used now (\(error)). Fix it and ask again.")
                }
                guard let agent = current.agentCommand else {
                    return failed("No agent command is configured: set \"agent-command\" (an argv array) in vigil.json.")
                }
                return ChatCommandResult(try ChatMissions.add(dir, argv: agent + [text], by: sender, ref: context.chatRef))
            case .cancel(let id):
                return ChatCommandResult(try ChatMissions.cancel(dir, id: id, by: sender))
            case .show(let id):
                return ChatCommandResult(try ChatMissions.show(dir, id: id))
            case .restart(let which):
                guard let role = StateDirectory.Role(rawValue: which) else { return failed("Say /restart bridge or /restart runner.") }
                let files = StateFiles(dir: dir, journal: journal)
                try files.writeMarker(dir.restartMarker(role), by: "chat \(sender)", reason: "/restart \(which)")
                // The next bridge says "bridge restarted (pid, version)" in reply, and reacts ✅
                // (recorded in this turn: the bridge stops only when its loop turns again).
                let answered = role == .bridge && chat.expectRestart(context)
                if role == .runner && !Wrapper.isRunning(on: dir) { return failed("Restart marker written for the runner. Warning: \(Wrapper.missingWarning(dir))") }
                return ChatCommandResult("Restart marker written for the \(which)." + (answered ? " The new bridge will say when it is up." : ""),
                                         outcome: answered ? .pending : .ok)
            case .journal(let n):
                // The newest N (at most 200), as many as fit in one message, saying how many did not.
                let entries = Journal.readLast(path: dir.journal, count: min(max(n ?? 10, 1), 200))
                guard !entries.isEmpty else { return ChatCommandResult("The journal is empty.") }
                return ChatCommandResult(ChatText.newest(entries.map(JournalCommand.format), within: chat.config.maxMessageLength - 100) {
                    "… \($0) older entr\($0 == 1 ? "y" : "ies") not shown (the message would be too long; vigil journal --last \(entries.count) has them all):"
                })
            case .healReset:
                return ChatCommandResult(try ChatCommandActions.healReset(dir, journal: journal, sender: sender))
            case .help, .unknown:
                return ChatCommandResult("")
            }
        } catch {
            return failed("Could not do that: \(error)")
        }
    }
}
