import VigilCore

/// The runner's other work: missions, notifications, the console echo. Filled in when those
/// parts are wired.
final class RunnerHooks {
    static func make(runner: Runner) throws -> RunnerHooks? { nil }
    func tick(now: BootInstant) {}
    var nextDeadline: BootInstant? { nil }
    var wakeDescriptors: [Int32] { [] }
    func notify(key: String, text: String) {}
    func shutdown() {}
}
