import VigilCore
import VigilStore
import VigilChat

/// Missions as the runner and chat see them. Filled in when the mission engine lands.
final class RunnerMissions {
    init?(runner: Runner, notifier: Notifier) { return nil }
    func tick(now: BootInstant) {}
    var nextDeadline: BootInstant? { nil }
    var wakeDescriptors: [Int32] { [] }
}

enum ChatMissions {
    static func list(_ dir: StateDirectory) throws -> String { "Missions are not available in this build." }
    static func add(_ dir: StateDirectory, argv: [String], by: String) throws -> String { "Missions are not available in this build." }
    static func cancel(_ dir: StateDirectory, id: String, by: String) throws -> String { "Missions are not available in this build." }
}

enum MissionCounts {
    static func gather(_ db: Database) throws -> JSONValue? { nil }
}
