import FoundationEssentials
import VigilCore
import VigilStore

/// The tunables of the supervised pair (docs/operator-guide.md, "Configuration"): flags of `vigil
/// runner` (and `vigil bridge`), or the same keys in `vigil.json` in the state directory.
/// Flags win over the file; the file wins over the defaults.
public struct Tunables: Equatable, Sendable {
    public var tick: TimeSpan = .seconds(1)
    public var heartbeatInterval: TimeSpan = .seconds(1)
    public var staleAfter: TimeSpan = .seconds(20)
    public var cooldown: TimeSpan = .seconds(10)
    public var termGrace: TimeSpan = .seconds(5)
    public var startGrace: TimeSpan = .seconds(10)
    public var circuitLimit: Int = 3
    public var circuitCooloff: TimeSpan = .seconds(600)
    /// How long a respawned bridge must stay healthy for its respawn to count as a success.
    /// Default: 3 × cooldown.
    public var stableAfter: TimeSpan? = nil
    public var circuitReminder: TimeSpan = .seconds(3600)
    public var rssLimit: UInt64? = nil
    public var maxParallel: Int = 1
    public var versionFile: String? = nil
    public var versionCommand: String? = nil
    /// The most output kept per mission (docs/missions.md, "Output cap").
    public var missionOutputCap: Int64 = MissionSettings.defaultOutputCap
    /// Defaults for missions added without `--timeout` / `--silence-limit` (docs/missions.md,
    /// "Timeouts and silence"); nil: none.
    public var missionTimeout: TimeSpan?
    public var missionSilenceLimit: TimeSpan?
    /// The breaker per lock key: failed missions in a row that pause a key (0: off), and the
    /// cool-off before one is tried again.
    public var keyBreakerLimit = KeyBreakerPolicy.defaultLimit
    public var keyBreakerCoolOff = KeyBreakerPolicy.defaultCoolOff
    /// When the runner and the bridge rotate `journal.jsonl` (docs/operator-guide.md, "Reading
    /// the journal"): past this size, keeping `journalKeep` old files.
    public var journalMaxBytes: Int64 = Journal.Rotation.defaultMaxBytes
    public var journalKeep: Int = Journal.Rotation.defaultKeep

    /// Workspaces (docs/workspaces.md): how often the runner runs a conservative auto-recover
    /// pass, how often that pass includes `git fsck` (slow on large repositories), and the
    /// bound and first backoff of every git command.
    public var workspaceCheckInterval: TimeSpan = .seconds(600)
    public var workspaceFsckInterval: TimeSpan = .seconds(6 * 3600)
    public var workspaceGitTimeout: TimeSpan = .seconds(120)
    public var workspaceGitBackoff: TimeSpan = .seconds(1)

    /// Git as every workspace worker runs it: 3 attempts for network operations, backoff
    /// `workspace-git-backoff` doubled (1 s, 2 s, 4 s by default).
    public var gitSettings: GitSettings {
        var g = GitSettings()
        g.timeout = workspaceGitTimeout
        g.backoff = [workspaceGitBackoff, workspaceGitBackoff * 2, workspaceGitBackoff * 4]
        return g
    }

    public var journalRotation: Journal.Rotation { Journal.Rotation(maxBytes: journalMaxBytes, keep: journalKeep) }

    public init() {}

    static let durationKeys = ["tick", "heartbeat-interval", "stale-after", "cooldown", "term-grace", "start-grace",
                               "circuit-cooloff", "stable-after", "circuit-reminder"]
    static let otherKeys = ["circuit-limit", "rss-limit", "max-parallel", "version-file", "version-command", "mission-output-cap",
                            "journal-max-bytes", "journal-keep", "mission-timeout", "mission-silence-limit",
                            "key-breaker-limit", "key-breaker-cooloff",
                            "workspace-check-interval", "workspace-fsck-interval", "workspace-git-timeout", "workspace-git-backoff"]
    /// Flag names (without `--`) that take a value.
    public static let flagNames: Set<String> = Set(durationKeys + otherKeys)
    /// Keys of vigil.json that are not tunables but belong to other parts.
    static let passThroughKeys: Set<String> = ["chat", "agent-command", "mission-env", "self-checks", "metrics"]

    public var policy: HealPolicy {
        HealPolicy(cooldown: cooldown, termGrace: termGrace, startGrace: startGrace, circuitLimit: circuitLimit,
                   circuitCooloff: circuitCooloff, stableAfter: stableAfter ?? cooldown * 3, reminderEvery: circuitReminder)
    }

    /// Sets one tunable from text (a flag value or a config value).
    mutating func set(_ key: String, _ text: String, source: String) throws {
        let name = "\(source)\(key)"
        switch key {
        case "tick": tick = try Arguments.duration(text, name: name)
        case "heartbeat-interval": heartbeatInterval = try Arguments.duration(text, name: name)
        case "stale-after": staleAfter = try Arguments.duration(text, name: name)
        case "cooldown": cooldown = try Arguments.duration(text, name: name)
        case "term-grace": termGrace = try Arguments.duration(text, name: name)
        case "start-grace": startGrace = try Arguments.duration(text, name: name)
        case "circuit-cooloff": circuitCooloff = try Arguments.duration(text, name: name)
        case "stable-after": stableAfter = try Arguments.duration(text, name: name)
        case "circuit-reminder": circuitReminder = try Arguments.duration(text, name: name)
        case "circuit-limit":
            guard let n = Int(text), n >= 1 else { throw UsageError("\(name) must be a whole number ≥ 1 (got \(text))") }
            circuitLimit = n
        case "max-parallel":
            guard let n = Int(text), n >= 1, n <= 256 else { throw UsageError("\(name) must be a whole number from 1 to 256 (got \(text))") }
            maxParallel = n
        case "rss-limit":
            if text == "off" || text.isEmpty { rssLimit = nil; return }
            guard let b = ByteSize.parse(text) else { throw UsageError("\(name) \(text.debugDescription): not a size (use 512MB, 1GB, or off)") }
            rssLimit = b
        case "version-file":
            guard !text.isEmpty else { throw UsageError("\(name) is empty") }
            versionFile = text
        case "mission-output-cap":
            guard let b = ByteSize.parse(text), b >= UInt64(MissionSettings.minimumOutputCap), b <= UInt64(Int64.max) else {
                throw UsageError("\(name) \(text.debugDescription): not a size of at least 128KiB (131072 bytes; use e.g. 64MB or 1GB)")
            }
            missionOutputCap = Int64(b)
        case "mission-timeout":
            missionTimeout = text == "off" ? nil : try Arguments.duration(text, name: name)
        case "key-breaker-limit":
            guard let n = Int(text), n >= 0, n <= 1000 else { throw UsageError("\(name) must be a whole number from 0 (off) to 1000 (got \(text))") }
            keyBreakerLimit = n
        case "key-breaker-cooloff":
            keyBreakerCoolOff = try Arguments.duration(text, name: name)
        case "mission-silence-limit":
            missionSilenceLimit = text == "off" ? nil : try Arguments.duration(text, name: name)
        case "workspace-check-interval": workspaceCheckInterval = try Arguments.duration(text, name: name)
        case "workspace-fsck-interval": workspaceFsckInterval = try Arguments.duration(text, name: name)
        case "workspace-git-timeout": workspaceGitTimeout = try Arguments.duration(text, name: name)
        case "workspace-git-backoff": workspaceGitBackoff = try Arguments.duration(text, name: name)
        case "journal-max-bytes":
            guard let b = ByteSize.parse(text), b >= 4096, b <= UInt64(Int64.max) else {
                throw UsageError("\(name) \(text.debugDescription): not a size of at least 4KiB (use e.g. 16MiB or 1GB)")
            }
            journalMaxBytes = Int64(b)
        case "journal-keep":
            guard let n = Int(text), n >= 1, n <= Journal.maxKeep else {
                throw UsageError("\(name) must be a whole number from 1 to \(Journal.maxKeep) (got \(text))")
            }
            journalKeep = n
        case "version-command":
            guard !text.trimmingWhitespace(keepingNewlines: true).isEmpty else { throw UsageError("\(name) is empty") }
            versionCommand = text
        default:
            throw UsageError("unknown tunable \(name)")
        }
    }

    /// Checks relations between values; every problem is a clear sentence.
    func validate() throws {
        guard staleAfter > heartbeatInterval else {
            throw UsageError("--stale-after (\(staleAfter)) must be larger than --heartbeat-interval (\(heartbeatInterval)), or every bridge would look hung")
        }
        if versionFile != nil && versionCommand != nil {
            throw UsageError("give either --version-file or --version-command, not both")
        }
    }

    /// The flags that reproduce these tunables (the runner hands them to the bridges it spawns).
    public var flags: [String] {
        // Durations as `decimalSeconds`, which the bridge's parser reads back exactly.
        var f = ["--tick", tick.decimalSeconds, "--heartbeat-interval", heartbeatInterval.decimalSeconds,
                 "--stale-after", staleAfter.decimalSeconds, "--cooldown", cooldown.decimalSeconds,
                 "--term-grace", termGrace.decimalSeconds, "--start-grace", startGrace.decimalSeconds,
                 "--circuit-limit", "\(circuitLimit)", "--circuit-cooloff", circuitCooloff.decimalSeconds,
                 "--circuit-reminder", circuitReminder.decimalSeconds, "--max-parallel", "\(maxParallel)",
                 "--journal-max-bytes", "\(journalMaxBytes)b", "--journal-keep", "\(journalKeep)"]
        if let s = stableAfter { f += ["--stable-after", s.decimalSeconds] }
        if let r = rssLimit { f += ["--rss-limit", "\(r)b"] }
        if let v = versionFile { f += ["--version-file", v] }
        if let v = versionCommand { f += ["--version-command", v] }
        return f
    }
}

/// `vigil.json` plus flags: the configuration of one process.
public struct Configuration: Sendable {
    public var tunables: Tunables
    /// The `chat` object of vigil.json (decoded by VigilChat), if any.
    public var chat: JSONValue?
    /// The agent command that `/mission TEXT` runs (TEXT appended as one argument).
    public var agentCommand: [String]?
    /// `mission-env`: variables of the runner's environment passed on to missions.
    public var missionEnv: [String] = []
    /// `metrics`: where the runner serves `/metrics` (nil: it does not listen).
    public var metrics: MetricsConfig? = nil
    /// `self-checks`: the groups of doctor's checks the runner runs on a schedule, and how often
    /// (docs/operator-guide.md, "Self-checks"); `false` turns them off, `"off"` one group.
    public var selfCheckIntervals: [String: TimeSpan] = RunnerSelfChecks.defaultIntervals
    /// Doctor's thresholds for the self-checks (`"max-wal"`, `"min-free"` in `self-checks`), as
    /// `vigil doctor` flags.
    public var selfCheckDoctorFlags: [String] = []

    /// What every mission gets (docs/missions.md, "Environment" and "Output cap").
    public var missionSettings: MissionSettings {
        var s = MissionSettings(outputCap: tunables.missionOutputCap, passEnv: missionEnv,
                                timeout: tunables.missionTimeout, silenceLimit: tunables.missionSilenceLimit,
                                keyBreaker: KeyBreakerPolicy(limit: tunables.keyBreakerLimit, coolOff: tunables.keyBreakerCoolOff))
        s.workspaceCheckInterval = tunables.workspaceCheckInterval
        s.workspaceFsckInterval = tunables.workspaceFsckInterval
        s.git = tunables.gitSettings
        return s
    }

    /// Loads vigil.json from the state directory (if present), then applies flags. The state
    /// directory and the file are checked first, at every load (`verifyConfig`): vigil.json
    /// names commands Vigil runs (docs/operator-guide.md, "Security of the state directory").
    public static func load(stateDir: StateDirectory, arguments: Arguments) throws -> Configuration {
        try stateDir.verifyConfig()
        var t = Tunables()
        var chat: JSONValue? = nil
        var agent: [String]? = nil
        var missionEnv: [String] = []
        var metrics: MetricsConfig? = nil
        var selfChecks = (intervals: RunnerSelfChecks.defaultIntervals, doctorFlags: [String]())
        let file: Data?
        do { file = try ConfigFile.read(stateDir.config) } catch { throw CommandError(error.message, code: 2) }
        if let data = file {
            guard case .object(let obj)? = JSONValue.parse(data) else {
                throw CommandError("\(stateDir.config) is not a JSON object; fix or remove it (see docs/operator-guide.md, \"Configuration\")", code: 2)
            }
            for (key, value) in obj.sorted(by: { $0.key < $1.key }) {
                if key == "chat" { chat = value; continue }
                if key == "agent-command" {
                    guard case .array(let items) = value, !items.isEmpty,
                          let argv = Optional(items.compactMap(\.stringValue)), argv.count == items.count else {
                        throw CommandError("\(stateDir.config): \"agent-command\" must be a non-empty array of strings (argv)", code: 2)
                    }
                    agent = argv
                    continue
                }
                if key == "metrics" {
                    metrics = try MetricsConfig.parse(value, file: stateDir.config)
                    continue
                }
                if key == "self-checks" {
                    selfChecks = try Configuration.selfChecks(value, file: stateDir.config)
                    continue
                }
                if key == "mission-env" {
                    guard case .array(let items) = value, let names = Optional(items.compactMap(\.stringValue)),
                          names.count == items.count, names.allSatisfy(MissionSettings.isVariableName) else {
                        throw CommandError("\(stateDir.config): \"mission-env\" must be an array of variable names (letters, digits, _)", code: 2)
                    }
                    missionEnv = names
                    continue
                }
                guard Tunables.flagNames.contains(key) else {
                    throw CommandError("\(stateDir.config): unknown key \(key.debugDescription) (known: \((Tunables.flagNames.union(Tunables.passThroughKeys)).sorted().joined(separator: ", ")))", code: 2)
                }
                let text: String
                switch value {
                case .string(let s): text = s
                case .int(let i): text = "\(i)"
                case .double(let d): text = "\(d)"
                default: throw CommandError("\(stateDir.config): \(key) must be a string or a number", code: 2)
                }
                do { try t.set(key, text, source: "\(stateDir.config): ") } catch let e as UsageError {
                    throw CommandError(e.message, code: 2)
                }
            }
        }
        for key in Tunables.flagNames.sorted() {
            if let v = arguments.value(key) { try t.set(key, v, source: "--") }
        }
        try t.validate()
        var c = Configuration(tunables: t, chat: chat, agentCommand: agent, missionEnv: missionEnv, metrics: metrics)
        c.selfCheckIntervals = selfChecks.intervals
        c.selfCheckDoctorFlags = selfChecks.doctorFlags
        return c
    }

    /// `"self-checks": false` (none), or an object of group → interval (`"1m"`, seconds as a
    /// number, or `"off"`); groups not named keep their default.
    static func selfChecks(_ value: JSONValue, file: String) throws -> (intervals: [String: TimeSpan], doctorFlags: [String]) {
        if value == .bool(false) { return ([:], []) }
        if value == .bool(true) { return (RunnerSelfChecks.defaultIntervals, []) }
        guard case .object(let o) = value else {
            throw CommandError("\(file): \"self-checks\" must be false or an object of group to interval (e.g. {\"disk\": \"30s\", \"database\": \"off\"})", code: 2)
        }
        var out = RunnerSelfChecks.defaultIntervals
        var flags: [String] = []
        for (group, v) in o.sorted(by: { $0.key < $1.key }) {
            if group == "max-wal" || group == "min-free" {
                guard let text = v.stringValue, ByteSize.parse(text) != nil else {
                    throw CommandError("\(file): \"self-checks\".\(group) must be a size such as \"64MiB\"", code: 2)
                }
                flags += ["--" + group, text]
                continue
            }
            guard Doctor.groups.contains(group) else {
                throw CommandError("\(file): \"self-checks\" names an unknown group \(group.debugDescription) (groups: \(Doctor.groups.joined(separator: ", ")); thresholds: max-wal, min-free)", code: 2)
            }
            let text: String
            switch v {
            case .string(let s): text = s
            case .int(let i): text = "\(i)"
            case .double(let d): text = "\(d)"
            default: throw CommandError("\(file): \"self-checks\".\(group) must be an interval or \"off\"", code: 2)
            }
            if text == "off" { out[group] = nil; continue }
            do { out[group] = try Arguments.duration(text, name: "\"self-checks\".\(group)") } catch let e as UsageError {
                throw CommandError("\(file): \(e.message)", code: 2)
            }
        }
        return (out, flags)
    }
}
