import FoundationEssentials

/// The environment a mission's command starts with (docs/missions.md, "Environment"): a few
/// variables of the runner's environment that programs expect, the names the configuration
/// lists in `mission-env`, and the `VIGIL_*` variables of the mission. Nothing else: the
/// runner's own secrets (`VIGIL_WEBHOOK_URL`, `VIGIL_MATRIX_PASSWORD`, …) and test switches
/// (`VIGIL_TEST_FAULTS`, `VIGIL_MISSIONS_CRASH_AT`) stay with the runner.
enum MissionEnvironment {
    /// Passed on when the runner has them.
    static let passed: Set<String> = ["PATH", "HOME", "LANG", "LANGUAGE", "USER", "LOGNAME", "TERM", "TZ", "TMPDIR"]
    /// Locale variables (`LC_ALL`, `LC_CTYPE`, …) are passed on too.
    static let passedPrefix = "LC_"
    /// When the runner has no PATH.
    static let defaultPath = "/usr/local/bin:/usr/bin:/bin"

    /// - Parameters:
    ///   - parent: the shim's environment (which is the runner's).
    ///   - names: `mission-env` of the configuration.
    ///   - mission: the `VIGIL_*` variables of this attempt; they win over everything.
    static func make(from parent: [String: String], passing names: [String], mission: [String: String]) -> [String: String] {
        var env: [String: String] = [:]
        let extra = Set(names)
        for (k, v) in parent where passed.contains(k) || k.hasPrefix(passedPrefix) || extra.contains(k) { env[k] = v }
        if env["PATH"] == nil { env["PATH"] = defaultPath }
        for (k, v) in mission { env[k] = v }
        return env
    }
}
