import FoundationEssentials
import Synchronization
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// The runner's other work: missions, notifications for people, the console echo (new
/// chat.log lines printed to the runner's standard output, the terminal of scripts/vigil-run),
/// and standing in for the bridge in chat: a `ChatService` in standby mode that delivers the
/// outbox and answers `/heal reset` and `/status` while the bridge cannot (docs/chat.md,
/// "Delivery").
final class RunnerHooks {
    let notifier: Notifier
    let follower: ConsoleFollower?
    let missions: RunnerMissions?
    let selfChecks: RunnerSelfChecks?
    /// Nil when it could not be set up (journaled); the runner goes on without it.
    let standby: ChatService?
    let need: StandbyNeed
    /// The journal totals and `/metrics` (docs/operator-guide.md, "Probes and metrics"), on a
    /// thread of their own.
    let metrics: MetricsService
    private let commands: RunnerChatCommands

    init(runner: Runner, chatConfig: ChatConfig) throws {
        let dir = runner.ctx.dir
        notifier = Notifier(stateDir: dir, config: chatConfig, journal: runner.ctx.journal)
        follower = chatConfig.adapters.contains("console") ? ConsoleFollower(stateDir: dir, persist: true) : nil
        if let f = follower, f.skipped > 0 { printOut("[chat] (\(f.skipped) bytes written while the runner was down are not shown here: see \(dir.chatLog))") }
        missions = RunnerMissions(runner: runner, notifier: notifier)
        metrics = MetricsService(dir: dir, tunables: runner.config.tunables, config: runner.config.metrics, journal: runner.ctx.journal,
                                 anchorToken: runner.ctx.anchor.token)
        let intervals = runner.config.selfCheckIntervals
        selfChecks = intervals.isEmpty ? nil : RunnerSelfChecks(dir: dir, journal: runner.ctx.journal, intervals: intervals,
                                                                doctorFlags: runner.config.selfCheckDoctorFlags)
        let need = StandbyNeed()
        self.need = need
        commands = RunnerChatCommands(dir: dir, journal: runner.ctx.journal)
        let mode = ChatService.Mode.standby(
            role: { .standby(active: need.needed, after: StandbyNeed.helpAfter) },
            accepts: { RunnerChatCommands.accepts($0) })
        do {
            standby = try ChatService(stateDir: dir, config: chatConfig, journal: runner.ctx.journal, handler: commands, mode: mode)
        } catch {
            standby = nil
            runner.ctx.journal.append(.chatStandbyUnavailable, ["error": .string(ChatText.brief("\(error)", maxLength: 300))])
        }
        selfChecks?.notify = { [weak self] key, text in self?.notify(key: key, text: text) }
    }

    static func make(runner: Runner) throws -> RunnerHooks? {
        try RunnerHooks(runner: runner, chatConfig: ChatConfig.load(configFile: runner.ctx.dir.config))
    }

    func tick(now: BootInstant) {
        notifier.retryPending()
        standby?.pump(now: now)
        missions?.tick(now: now)
        selfChecks?.tick(now: now)
        if let lines = follower?.poll(), !lines.isEmpty {
            for l in lines { printOut(l) }
            follower?.commit()
        }
    }

    /// What the last probe found: the standby delivers (and takes commands) while the bridge is
    /// not beating or the circuit is open.
    func observe(verdict: Verdict?, circuit: Circuit) {
        let needed = circuit == .open || !(verdict.map(StandbyNeed.bridgeDelivers) ?? false)
        if need.set(needed) && needed { standby?.wakeWorkers() }
    }

    var nextDeadline: BootInstant? { [missions?.nextDeadline, selfChecks?.nextDeadline].compactMap { $0 }.min() }
    /// The standby's descriptors only while it is needed (otherwise every message the bridge
    /// sends would wake the runner).
    var wakeDescriptors: [Int32] {
        (missions?.wakeDescriptors ?? []) + (selfChecks?.wakeDescriptors ?? []) + (need.needed ? standby?.wakeDescriptors ?? [] : [])
    }
    func notify(key: String, text: String) {
        notify(ChatNotice(key: key, text: text))
    }
    func notify(_ notice: ChatNotice) {
        notifier.notify(notice)
        if need.needed { standby?.wakeWorkers() }
    }
    func shutdown() {
        standby?.shutdown(deadline: Clock.boot() + .milliseconds(300))
        metrics.shutdown()
    }
}

/// Whether the runner's standby chat is needed, shared with its delivery threads.
final class StandbyNeed: Sendable {
    /// A message the bridge has not got out after this long is delivered by the runner too
    /// (whoever claims it first sends it).
    static let helpAfter = TimeSpan.seconds(3)

    private let state = Mutex(true)

    var needed: Bool { state.withLock { $0 } }

    /// Returns true when it changed.
    func set(_ value: Bool) -> Bool {
        state.withLock { old in
            defer { old = value }
            return old != value
        }
    }

    /// A bridge with these verdicts is alive and beating: its own chat service delivers.
    static func bridgeDelivers(_ v: Verdict) -> Bool {
        switch v {
        case .healthy, .drifted, .bloated: return true
        case .hung, .dead, .missing: return false
        }
    }
}

/// The commands the runner answers itself while the bridge is down. Everything else waits in
/// the inbox for the bridge.
final class RunnerChatCommands: ChatCommandHandler {
    let dir: StateDirectory
    let journal: Journal

    init(dir: StateDirectory, journal: Journal) {
        self.dir = dir
        self.journal = journal
    }

    static func accepts(_ c: ChatCommand) -> Bool {
        switch c {
        case .healReset, .status: return true
        default: return false
        }
    }

    func handle(_ command: ChatCommand, sender: String) -> String {
        do {
            switch command {
            case .status: return try ChatCommandActions.status(dir) + "\n(answered by the runner: the bridge is down)"
            case .healReset: return try ChatCommandActions.healReset(dir, journal: journal, sender: sender)
            default: return ""
            }
        } catch {
            return "Could not do that: \(error)"
        }
    }
}

/// The chat commands both processes answer, in one place.
enum ChatCommandActions {
    static func status(_ dir: StateDirectory) throws -> String {
        StatusCommand.human(try StatusCommand.gather(dir))
    }

    static func healReset(_ dir: StateDirectory, journal: Journal, sender: String) throws -> String {
        let files = StateFiles(dir: dir, journal: journal)
        try files.writeMarker(dir.healReset, by: "chat \(sender)", reason: "/heal reset")
        return "Heal reset requested; the runner applies it within a tick."
    }
}
