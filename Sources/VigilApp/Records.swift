import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The PID file of a running bridge or runner (`bridge.json`, `runner.json`): identity,
/// version stamp and heartbeat in one atomically replaced state file.
public struct ProcessRecord: Codable, Sendable, Equatable {
    public static let kind = "process"

    public var role: String
    public var identity: ProcessIdentity
    /// The version this process runs (its stamp).
    public var version: String
    public var exe: String
    /// When this image started (after a re-exec: when the new image started).
    public var started: BootInstant
    public var startedWall: String
    /// The last heartbeat.
    public var beat: BootInstant
    public var beatWall: String
    public var seq: UInt64
    public var bootID: String
    /// Runner only: its last verdict on the bridge and the version it saw on disk.
    public var lastVerdict: Verdict?
    public var currentVersion: String?
    /// Runner only: the median CPU time of one probe-and-decide over the last 64, in microseconds.
    public var probeCPUMicros: Double?
    /// Runner only: the wrapper (scripts/vigil-run) that started it and relaunches it after
    /// exit 42; nil when started some other way (docs/operator-guide.md, "The wrapper gone").
    public var wrapper: ProcessIdentity? = nil
    /// Runner only: its `stale-after` and `tick`, so that readers (`vigil status`, `vigil probe`,
    /// the metrics) judge the bridge's heartbeat as this runner does and the runner's own with
    /// its bound (`Runner.ownStaleAfter`), whether flags or vigil.json set them
    /// (docs/operator-guide.md, "Probes and metrics"). Nil in records of older runners.
    public var staleAfter: TimeSpan? = nil
    public var tick: TimeSpan? = nil

    enum CodingKeys: String, CodingKey {
        case role, identity, version, exe, started, seq
        case startedWall = "started_wall"
        case beat
        case beatWall = "beat_wall"
        case bootID = "boot_id"
        case lastVerdict = "last_verdict"
        case currentVersion = "current_version"
        case probeCPUMicros = "probe_cpu_us"
        case wrapper
        case staleAfter = "stale_after"
        case tick
    }
}

/// A restart or stop request (`bridge.restart`, `runner.restart`, `stop`, `heal.reset`). A
/// process honours only a marker written after it started, and removes only its own marker.
public struct Marker: Codable, Sendable, Equatable {
    public static let kind = "marker"

    public var requested: BootInstant
    public var requestedWall: String
    public var bootID: String
    public var by: String
    public var reason: String

    enum CodingKeys: String, CodingKey {
        case requested, by, reason
        case requestedWall = "requested_wall"
        case bootID = "boot_id"
    }

    public static func now(by: String, reason: String) -> Marker {
        Marker(requested: Clock.boot(), requestedWall: Clock.iso(Clock.wall()), bootID: Clock.bootID, by: by, reason: reason)
    }

    /// True when this marker was written in this boot after `started`.
    public func applies(toProcessStartedAt started: BootInstant) -> Bool {
        bootID == Clock.bootID && requested > started
    }
}

/// `heal.json`: the watchdog's escalation state, valid for one boot.
struct HealFile: Codable, Sendable {
    static let kind = "heal"
    var bootID: String
    var state: HealState
    /// The chat message of the current (or last) incident: its key and lines so far, so a
    /// restarted runner edits the same message (docs/chat.md, "One message per incident").
    var incident: IncidentReport?

    enum CodingKeys: String, CodingKey {
        case state, incident
        case bootID = "boot_id"
    }
}

extension StateFiles {
    package func loadRecord(_ role: StateDirectory.Role) -> ProcessRecord? {
        load(dir.pidFile(role), kind: ProcessRecord.kind, as: ProcessRecord.self)
    }

    package func loadMarker(_ path: String) -> Marker? {
        load(path, kind: Marker.kind, as: Marker.self)
    }

    func writeMarker(_ path: String, by: String, reason: String) throws {
        try save(Marker.now(by: by, reason: reason), kind: Marker.kind, to: path)
    }
}

extension StateFiles {
    /// The PID file without the corrupt-file policy (for computing deadlines; the probe
    /// quarantines).
    func loadRecordQuietly(_ role: StateDirectory.Role) -> ProcessRecord? {
        if case .ok(let r) = StateFile.read(dir.pidFile(role), kind: ProcessRecord.kind, as: ProcessRecord.self) { return r }
        return nil
    }
}
