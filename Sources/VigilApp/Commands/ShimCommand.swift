import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil shim`: internal. The detached process that owns one attempt of a mission (started by
/// the runner). The drivers tests and the benchmark use (`--drive`, `--bench-fill`) are
/// `vigil-bench drive` and `vigil-bench fill`, not part of the product.
enum ShimCommand {
    static let command = Command(name: "shim", summary: "", help: """
    usage: vigil shim --mission ID --attempt N --max-attempts M --cwd DIR [--output-cap BYTES]
                      [--pass-env NAME,…] [--let-daemons-go] -- CMD [ARG…]

    Internal; not for people. The first form is how the runner starts a mission: a shim in its
    own session runs CMD in its own process group (argv as given, never through a shell, in a
    clean environment plus the variables --pass-env names) with output appended to the
    mission's output file (newest --output-cap bytes kept), then writes the exit status to the
    mission's result file atomically; --let-daemons-go: the mission's processes outside its session
    are left alone at its end. See docs/missions.md.
    """, run: run)

    static func run(_ inv: Invocation) throws {
        let args = try Arguments(inv.arguments, valued: ["mission", "attempt", "max-attempts", "cwd", "output-cap", "pass-env", "workspace"],
                                 booleans: ["let-daemons-go"])
        guard let mission = try args.int("mission", min: 1), let attempt = try args.int("attempt", min: 1),
              let maxAttempts = try args.int("max-attempts", min: 1), let cwd = args.value("cwd"),
              let argv = args.rest, !argv.isEmpty else {
            throw UsageError("vigil shim is started by the runner: it needs --mission, --attempt, --max-attempts, --cwd and -- CMD")
        }
        var settings = MissionSettings()
        if let text = args.value("output-cap") {
            guard let cap = Int64(text), cap > 0 else { throw UsageError("--output-cap must be a number of bytes (got \(text))") }
            settings.outputCap = cap
        }
        settings.passEnv = (args.value("pass-env") ?? "").split(separator: ",").map(String.init)
        let code = ShimMain.run(.init(stateDir: inv.stateDir, mission: Int64(mission), attempt: attempt,
                                         maxAttempts: maxAttempts, cwd: cwd, argv: argv, settings: settings,
                                         letDaemonsGo: args.has("let-daemons-go"), workspace: args.value("workspace")))
        if code != 0 { throw ExitCode(code) }
    }
}
