import FoundationEssentials
import VigilCore
import VigilSystem

/// The state of a mission as people see it. `waiting` is derived (see `MissionQueue.LockView`),
/// the others are stored.
public enum MissionState: String, Sendable, Codable, CaseIterable {
    case pending
    case waiting
    case running
    case done
    case failed
    case cancelled

    /// Done, failed or cancelled: nothing will change any more.
    public var isFinal: Bool { self == .done || self == .failed || self == .cancelled }
}

/// The shim that runs (or ran) the current attempt of a mission.
public struct MissionShim: Sendable, Equatable {
    public var identity: ProcessIdentity
    /// The kernel boot id when it was recorded: start ticks only mean something within one boot.
    public var bootID: String

    public init(identity: ProcessIdentity, bootID: String) {
        self.identity = identity
        self.bootID = bootID
    }

    /// Alive with this identity, in this boot.
    public var isAlive: Bool { bootID == Clock.bootID && identity.isAlive }
}

/// One row of the `missions` table.
public struct Mission: Sendable, Equatable {
    public var id: Int64
    public var argv: [String]
    public var cwd: String
    public var lockKey: String?
    /// The stored state (never `.waiting`; see `MissionQueue.LockView.state(of:)`).
    public var state: MissionState
    public var attempts: Int
    public var maxAttempts: Int
    public var cancelRequested: Bool
    public var exitCode: Int32?
    public var signal: Int32?
    public var reason: String?
    public var shim: MissionShim?
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// `--let-daemons-go`: at its end the shim leaves its processes outside its session alone.
    public var letDaemonsGo: Bool = false
    /// `--timeout` / `--silence-limit`; nil: the runner's default.
    public var timeout: TimeSpan?
    public var silenceLimit: TimeSpan?
    /// Why the runner is ending the running attempt (set before its SIGTERM).
    public var stopCause: StopCause?
    /// `--at-most-once`: never started again once an attempt may have started its command.
    public var atMostOnce: Bool = false
    /// `--retries` / `--retry-backoff`, and the retries used since `attemptBase`.
    public var retries: Int = 0
    public var retryBackoff: TimeSpan?
    public var retried: Int = 0
    /// A retry is not claimed before this.
    public var retryAt: Date?
    public var attemptBase: Int = 0
    /// Ended "interrupted: may have run" (at most once): never started again.
    public var mayHaveRun: Bool = false
    /// Who queued it, for its notices.
    public var queuedBy: String?
    /// `--workspace REPO`: it runs in a slot of that repository (docs/workspaces.md).
    public var workspace: String?
    /// The slot its current (or last) attempt got.
    public var slot: Int64?
    /// For a mission queued from chat: the command's message as JSON (`ChatRef`: adapter,
    /// event, thread, sender), so its notices reply to it.
    public var chatRef: String? = nil

    /// Its policy as `MissionLifecycle` takes it (limits the runner adds: `MissionRunner`).
    public var policy: MissionPolicy {
        MissionPolicy(maxAttempts: maxAttempts, retries: retries, retryBackoff: retryBackoff ?? .seconds(1), atMostOnce: atMostOnce,
                      timeout: timeout, silenceLimit: silenceLimit)
    }

    /// Its durable record as `MissionLifecycle` takes it.
    public var record: MissionRecord {
        var r = MissionRecord()
        r.phase = MissionPhase(rawValue: state.rawValue) ?? .pending
        r.attempts = attempts
        r.retried = retried
        r.attemptBase = attemptBase
        r.cancelRequested = cancelRequested
        r.retryAt = retryAt?.timeIntervalSince1970
        r.reason = reason
        r.exitCode = exitCode
        r.signal = signal
        r.mayHaveRun = mayHaveRun
        return r
    }
}

/// Where a mission's files live: `<state>/missions/<id>/`.
public struct MissionPaths: Sendable {
    public let directory: String

    public init(stateDir: StateDirectory, id: Int64) {
        directory = stateDir.missionDirectory(id)
    }

    /// stdout and stderr of every attempt, appended as they are produced.
    public var output: String { directory + "/output.log" }
    /// The older part of the output once `output.log` reached half the output cap (see
    /// docs/missions.md, "Output cap"); it may start with a line saying how much was cut.
    public var previousOutput: String { directory + "/output.log.1" }
    /// The shim's record of how the attempt ended (`MissionResult`, a `StateFile`).
    public var result: String { directory + "/result" }
    /// The mission's scratch directory (`$VIGIL_MISSION_SCRATCH`), removed after the attempt.
    public var scratch: String { directory + "/scratch" }
    /// Which row the directory belongs to (`MissionOwner`, a `StateFile`), written by the runner
    /// when it makes the directory: a directory an older row of the same id left (a database
    /// restored from a backup) is never reused (docs/missions.md, "Files of a mission").
    public var owner: String { directory + "/owner" }
    /// The mission's checkpoints (`CheckpointStore`, docs/missions.md, "Checkpoints").
    public var checkpoints: String { directory + "/checkpoints" }
}

/// The `owner` state file of a mission directory: the row it was made for, by id and creation
/// time (`created_at`, wall seconds), which together tell two rows of the same id apart.
public struct MissionOwner: Codable, Sendable, Equatable {
    public static let kind = "mission-owner"

    public var mission: Int64
    public var created: Double

    public init(_ m: Mission) {
        mission = m.id
        created = m.createdAt.timeIntervalSince1970
    }

    /// Whether the directory is `m`'s (creation times compared to the microsecond: the value
    /// goes through `Date` and JSON).
    public func owns(_ m: Mission) -> Bool {
        mission == m.id && abs(created - m.createdAt.timeIntervalSince1970) < 1e-6
    }
}

/// What a shim writes when its child has ended: the `result` state file of a mission.
public struct MissionResult: Codable, Sendable, Equatable {
    public static let kind = "mission-result"

    public var mission: Int64
    public var attempt: Int
    /// Exit code, or 128 + signal when the child was killed (as a shell reports it).
    public var exitCode: Int32
    public var signal: Int32?
    /// Set when the child could not be started (then `exitCode` is 127).
    public var reason: String?
    public var childPID: Int32?
    public var started: String
    public var finished: String
    /// Processes of the mission outside its session at its end (docs/missions.md, "Every
    /// process of a mission"): SIGKILLed, let go (`--let-daemons-go`), or still there after
    /// SIGKILL. Nil when there were none (and in results of older shims).
    public var outsideKilled: Int?
    public var outsideLetGo: Int?
    public var outsideLeft: Int?

    public init(mission: Int64, attempt: Int, exitCode: Int32, signal: Int32?, reason: String?, childPID: Int32?, started: String, finished: String,
                outsideKilled: Int? = nil, outsideLetGo: Int? = nil, outsideLeft: Int? = nil) {
        self.outsideKilled = outsideKilled
        self.outsideLetGo = outsideLetGo
        self.outsideLeft = outsideLeft
        self.mission = mission
        self.attempt = attempt
        self.exitCode = exitCode
        self.signal = signal
        self.reason = reason
        self.childPID = childPID
        self.started = started
        self.finished = finished
    }

    enum CodingKeys: String, CodingKey {
        case mission, attempt, signal, reason, started, finished
        case exitCode = "exit_code"
        case childPID = "child_pid"
        case outsideKilled = "outside_killed"
        case outsideLetGo = "outside_let_go"
        case outsideLeft = "outside_left"
    }
}
