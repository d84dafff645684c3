import VigilCore

/// The thresholds and permissions of one `vigil doctor` run.
public struct DoctorOptions: Sendable {
    /// Repair what is safe.
    public var fix = false
    /// With `fix`: cancel missions running longer than `maxRuntime`.
    public var releaseLongRunning = false
    /// With `fix`: delete files in `quarantine/` older than `quarantineAge`.
    public var purgeQuarantine = false
    public var maxRuntime = TimeSpan.seconds(6 * 3600)
    /// Outbox messages undelivered (or in flight) longer than this are stuck.
    public var stuckAfter = TimeSpan.seconds(600)
    public var quarantineAge = TimeSpan.seconds(30 * 86400)
    /// A WAL file larger than this is checkpointed by `--fix`.
    public var maxWAL: UInt64 = 64 << 20
    /// Free space below this, or below `minFreePercent`, is low.
    public var minFreeBytes: UInt64 = 100 << 20
    public var minFreePercent = 5.0
    /// Available memory (`MemAvailable`) below this, or below `minAvailableMemoryPercent` of
    /// the total, is low; a runner or bridge larger than `maxProcessMemory` is reported.
    public var minAvailableMemory: UInt64 = 64 << 20
    public var minAvailableMemoryPercent = 3.0
    public var maxProcessMemory: UInt64 = 256 << 20
    /// Only these groups of checks (`Doctor.groups`); nil: all. The runner's self-checks run
    /// one group at a time (docs/operator-guide.md, "Self-checks").
    public var only: Set<String>?
    /// How long a database statement waits for another writer.
    public var busyTimeout = TimeSpan.seconds(2)

    public init() {}
}
