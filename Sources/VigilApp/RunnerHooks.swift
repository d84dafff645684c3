import Foundation
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// The runner's other work: missions, notifications for people, and the console echo (new
/// chat.log lines printed to the runner's standard output, the terminal of scripts/vigil-run).
final class RunnerHooks {
    let notifier: Notifier
    let follower: ConsoleFollower?
    let missions: RunnerMissions?

    init(runner: Runner, chatConfig: ChatConfig) throws {
        let dir = runner.ctx.dir
        notifier = Notifier(stateDir: dir, config: chatConfig, journal: runner.ctx.journal)
        follower = chatConfig.adapters.contains("console") ? ConsoleFollower(stateDir: dir) : nil
        missions = RunnerMissions(runner: runner, notifier: notifier)
    }

    static func make(runner: Runner) throws -> RunnerHooks? {
        try RunnerHooks(runner: runner, chatConfig: ChatConfig.load(configFile: runner.ctx.dir.config))
    }

    func tick(now: BootInstant) {
        notifier.retryPending()
        missions?.tick(now: now)
        if let lines = follower?.poll(), !lines.isEmpty {
            for l in lines { printOut(l) }
        }
    }

    var nextDeadline: BootInstant? { missions?.nextDeadline }
    var wakeDescriptors: [Int32] { missions?.wakeDescriptors ?? [] }
    func notify(key: String, text: String) { notifier.notify(key: key, text: text) }
    func shutdown() {}
}
