import FoundationEssentials
import VigilSystem

/// The layout of a state directory. One place for every name, so the bridge, the runner, the
/// CLI and the tests agree. See docs/operator-guide.md, "The state directory".
public struct StateDirectory: Sendable {
    public let path: String

    public init(_ path: String) {
        let abs = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        self.path = Path.standardized(abs)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public var config: String { file("vigil.json") }
    public var journal: String { file("journal.jsonl") }
    public var database: String { file("vigil.db") }
    public var quarantine: String { file("quarantine") }
    public var missions: String { file("missions") }
    public var chatLog: String { file("chat.log") }
    public var wrapperLock: String { file("wrapper.lock") }
    /// `vigil stop` in effect: the watchdog does not resurrect the bridge.
    public var stopMarker: String { file("stop") }
    /// `vigil heal reset` asked for: the runner closes the circuit and removes it.
    public var healReset: String { file("heal.reset") }
    public var healState: String { file("heal.json") }
    /// The metrics' journal totals and where in the journal they were counted up to (written by
    /// the runner; `vigil metrics` reads it and counts on from there). See docs/operator-guide.md,
    /// "Probes and metrics".
    public var metricsTotals: String { file("metrics.json") }
    /// The kept copy of the last program that ran a healthy pair, and its record (what it is a
    /// copy of, whether a rollback to it was announced). See docs/operator-guide.md, "Rollback
    /// of a broken update"; scripts/vigil-run names the same `program/good`.
    public var programDir: String { file("program") }
    public var keptProgram: String { file("program/good") }
    public var keptProgramRecord: String { file("program/good.json") }

    public func lock(_ role: Role) -> String { file("\(role.rawValue).lock") }
    /// Held by the mission runner (inside the runner, or `shim --drive`): one runner of missions
    /// per state directory.
    public var missionsLock: String { file("missions.lock") }
    /// Touched after a mission is queued or cancelled: the mission runner watches the directory
    /// with inotify and looks at once.
    public var missionsWake: String { file("missions.wake") }
    /// `<state>/missions/<id>/`: one mission's files (`MissionPaths`).
    public func missionDirectory(_ id: Int64) -> String { file("missions/\(id)") }
    /// The runner's self-checks (docs/operator-guide.md, "Self-checks"): what the last `vigil
    /// doctor` child printed, and each group's last result.
    public var selfCheckOutput: String { file("selfcheck.out") }
    public var selfCheckState: String { file("selfchecks.json") }
    /// `<state>/workspaces/`: the workspace slots (docs/workspaces.md).
    public var workspaces: String { file("workspaces") }
    /// `<state>/workspaces/REPO/`: one repository's slots.
    public func workspaceRepository(_ repo: String) -> String { file("workspaces/\(repo)") }
    /// `<state>/workspaces/REPO/ID/`: one slot's clone (ids are never reused).
    public func workspaceSlot(repo: String, id: Int64) -> String { file("workspaces/\(repo)/\(id)") }
    /// `<state>/workspaces/REPO/ID.lock`: held by whoever runs git in that slot (a cleaner, a clone).
    public func workspaceSlotLock(repo: String, id: Int64) -> String { StateDirectory.workspaceSlotLock(ofSlot: workspaceSlot(repo: repo, id: id)) }
    /// The lock of the slot at `slotPath` (a shim knows its slot by path): held by a worker
    /// while it runs git there, and by a mission's shim while the mission runs there.
    public static func workspaceSlotLock(ofSlot slotPath: String) -> String { slotPath + ".lock" }
    /// `<state>/workspaces/worker.log`: errors of the slot workers the runner started (their
    /// outcomes are journaled, not printed).
    public var workspaceWorkerLog: String { file("workspaces/worker.log") }
    /// `<state>/workspaces/check.json`: what the runner's last auto-recover pass printed (`--json`).
    public var workspaceCheckOutput: String { file("workspaces/check.json") }
    /// One entry of `quarantine/` (`StateFiles.moveToQuarantine` names them `NAME.MS.PID.RANDOM`).
    public func quarantineEntry(_ name: String) -> String { file("quarantine/" + name) }
    /// Where `vigil restore` keeps the database it replaced.
    public func databaseBeforeRestore(stamp: String) -> String { file("vigil.db.before-restore.\(stamp)") }

    /// `<state>/chat/`: the kick file, the notification spool, the chat service's status.
    public var chatDirectory: String { file("chat") }
    /// Touched (opened for writing and closed) after anything is queued for the bridge; the
    /// bridge's chat workers watch the directory with inotify and wake at once.
    public var chatKick: String { file("chat/kick") }
    /// Notifications that could not go into the database (locked, corrupt): an fsync'd append-only
    /// file, moved into the outbox as soon as the database can be written.
    public var chatSpool: String { file("chat/spool.jsonl") }
    public var chatSpoolLock: String { file("chat/spool.lock") }
    /// Where the runner's console echo is in chat.log (`ConsoleFollower`).
    public var consoleEchoPosition: String { file("chat/echo.json") }
    /// Held by a console deliverer (bridge or runner) while it checks and appends `chat.log`.
    public var chatConsoleLock: String { file("chat/console.lock") }
    /// The chat service's status (a state file of kind `chat-status`), read by `vigil status` and doctor.
    public var chatStatus: String { file("chat/status.json") }

    /// Test fault injection (only with `VIGIL_TEST_FAULTS=1`): the fault the bridge acts on, the
    /// one the runner reads at its start, and the mark a delivery worker leaves when its fault
    /// fired (see `FaultInjection`).
    public var fault: String { file("fault") }
    public var runnerFault: String { file("runner-fault") }
    public var chatFaultFired: String { file("chat/fault-fired") }

    /// Creates a directory inside this state directory (and those between), never the state
    /// directory itself: gone, it stays gone (`AtomicFile.makeDirectory(_:below:)`).
    public func makeDirectory(_ sub: String) throws(SystemError) {
        try AtomicFile.makeDirectory(sub, below: path)
    }
    /// Identity, version stamp and heartbeat of a running process ("PID file").
    public func pidFile(_ role: Role) -> String { file("\(role.rawValue).json") }
    public func restartMarker(_ role: Role) -> String { file("\(role.rawValue).restart") }
    public func log(_ role: Role) -> String { file("\(role.rawValue).log") }
    /// The heartbeat a process rewrites in place between its PID-file writes (`Heartbeat`).
    public func beatFile(_ role: Role) -> String { file("\(role.rawValue).beat") }

    public enum Role: String, Sendable, CaseIterable {
        case bridge
        case runner
    }

    /// Checks who may change the directory (`verify()`, before anything is created or written),
    /// creates it (durably, 0700) unless `create` is false, and checks that it is writable;
    /// cleans temp files of dead writers. A process started for one directory (the runner's
    /// bridges) passes `create: false`: gone, it stays gone.
    public func prepare(create: Bool = true) throws {
        try verify()
        do {
            if create { try AtomicFile.makeDirectory(path) }
            else if !FileSystem.exists(path) { throw StateDirectoryError(path: path, reason: "it was removed") }
        } catch let e as StateDirectoryError {
            throw e
        } catch {
            throw StateDirectoryError(path: path, reason: "cannot create it: \(error)")
        }
        guard FileSystem.isAccessible(path, [.write, .execute]) else {
            throw StateDirectoryError(path: path, reason: "it is not writable by this user")
        }
        AtomicFile.sweepTemps(in: path)
    }
}

public struct StateDirectoryError: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    /// The exit code: 2 for a directory refused for its owner or permissions (the wrapper does
    /// not relaunch then), 1 otherwise.
    public var code: Int32

    public init(path: String, reason: String, code: Int32 = 1) {
        self.path = path
        self.reason = reason
        self.code = code
    }

    public var description: String { "state directory \(path): \(reason)" }
}
