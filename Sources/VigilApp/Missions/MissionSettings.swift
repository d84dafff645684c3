import FoundationEssentials
import VigilCore
import VigilStore

/// What the configuration says about every mission (docs/missions.md, "Environment" and
/// "Output cap"): `mission-output-cap` and `mission-env` in vigil.json. The runner hands them
/// to each shim on its command line.
public struct MissionSettings: Sendable, Equatable {
    /// `mission-output-cap` when vigil.json has none: 64 MiB.
    public static let defaultOutputCap: Int64 = 64 << 20
    /// The smallest cap accepted (the shim reads 64 KiB at a time; half the cap must hold one read).
    public static let minimumOutputCap: Int64 = 128 << 10

    /// The most bytes of output kept per mission (`output.log` + `output.log.1`).
    public var outputCap: Int64 = MissionSettings.defaultOutputCap
    /// Names of variables of the runner's environment passed on to missions, besides the
    /// fixed few (`MissionEnvironment.passed`).
    public var passEnv: [String] = []
    /// `mission-timeout` / `mission-silence-limit`: for missions added without their own.
    public var timeout: TimeSpan?
    public var silenceLimit: TimeSpan?
    /// `key-breaker-limit` / `key-breaker-cooloff` (docs/missions.md, "A breaker per key").
    public var keyBreaker = KeyBreakerPolicy()
    /// Workspaces (docs/workspaces.md): the runner's auto-recover pass, its `git fsck`, and git
    /// as the runner's workspace children run it.
    public var workspaceCheckInterval: TimeSpan = .seconds(600)
    public var workspaceFsckInterval: TimeSpan = .seconds(6 * 3600)
    public var git = GitSettings()

    public init(outputCap: Int64 = MissionSettings.defaultOutputCap, passEnv: [String] = [], timeout: TimeSpan? = nil, silenceLimit: TimeSpan? = nil,
                keyBreaker: KeyBreakerPolicy = KeyBreakerPolicy()) {
        self.keyBreaker = keyBreaker
        self.outputCap = outputCap
        self.passEnv = passEnv
        self.timeout = timeout
        self.silenceLimit = silenceLimit
    }

    /// Whether `name` can be passed on: a shell-style variable name (letters, digits, `_`,
    /// not starting with a digit).
    static func isVariableName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return false }
        return name.utf8.allSatisfy { $0 == UInt8(ascii: "_") || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
            || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }
}
