import Foundation
import VigilApp
import VigilCore
import VigilStore
import VigilSystem

/// A minimal runner loop that only runs missions: what tests and the benchmark drive (and
/// kill -9) without the watchdog. `vigil-bench drive` runs it. Returns on SIGTERM or SIGINT,
/// leaving running missions alone.
enum StandaloneRunner {
    ///
    /// The loop is the model for the real runner's: `tick` in do/catch with database errors
    /// journaled at a low rate; poll the signal pipe, an inotify watch of the state directory
    /// (the CLI's wake file) and `wakeDescriptors`, with a timeout of the tick period or
    /// `nextDeadline`; after a failed tick, wait a whole period before the next.
    static func run(stateDir: StateDirectory, maxParallel: Int, tick period: TimeSpan,
                    termGrace: TimeSpan, shimExecutable: String, settings: MissionSettings = .init()) throws {
        try stateDir.prepare()
        let journal = Journal(path: stateDir.journal, source: "runner")
        let signals = try WakePipe(signals: [.terminate, .interrupt])
        let inotify = try Inotify()
        try inotify.watch(directory: stateDir.path)
        let runner = try MissionRunner(stateDir: stateDir, journal: journal, maxParallel: maxParallel, shimExecutable: shimExecutable,
                                       notify: { _, _ in }, termGrace: termGrace, settings: settings)
        journal.append(.missionRunnerStarted, ["pid": .int(Int64(ThisProcess.pid)), "max_parallel": .int(Int64(maxParallel))])
        var lastErrorJournaled: BootInstant? = nil
        var failing = false
        while true {
            let now = Clock.boot()
            var ok = true
            do {
                try runner.tick(now: now)
                if failing {
                    journal.append(.missionsDbAvailable, [:])
                    failing = false
                }
            } catch {
                ok = false
                failing = true
                if lastErrorJournaled.map({ now - $0 >= .seconds(2) }) ?? true {
                    journal.append(.missionsDbUnavailable, ["error": .string("\(error)")])
                    lastErrorJournaled = now
                }
            }
            var timeout = period
            if ok, let due = runner.nextDeadline { timeout = min(timeout, max(.zero, due - Clock.boot())) }
            let fds = [signals.readFD, inotify.fd] + (ok ? runner.wakeDescriptors : [])
            let ready = pollReadable(fds, timeoutMilliseconds: Int32(min(60_000, timeout.milliseconds.rounded(.up))))
            if ready.contains(signals.readFD), !signals.drain().isEmpty {
                journal.append(.missionRunnerStopped, ["running": .int(Int64(runner.runningCount))])
                return
            }
            if ready.contains(inotify.fd) { _ = inotify.drain() }
        }
    }
}
