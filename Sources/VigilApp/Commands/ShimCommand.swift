import Foundation
import VigilCore
import VigilStore
import VigilSystem

/// `vigil shim`: internal. The detached process that owns one attempt of a mission (started by
/// the runner), plus two drivers for tests and the benchmark.
enum ShimCommand {
    static let command = Command(name: "shim", summary: "", help: """
    usage: vigil shim --mission ID --attempt N --max-attempts M --cwd DIR [--output-cap BYTES]
                      [--pass-env NAME,…] [--let-daemons-go] -- CMD [ARG…]
           vigil shim --drive [--max-parallel N] [--tick D] [--term-grace D]
           vigil shim --bench-fill COUNT
           vigil shim --bench [-- BENCH-OPTIONS]   (same as vigil bench missions)

    Internal; not for people. The first form is how the runner starts a mission: a shim in its
    own session runs CMD in its own process group (argv as given, never through a shell, in a
    clean environment plus the variables --pass-env names) with output appended to the
    mission's output file (newest --output-cap bytes kept), then writes the exit status to the
    mission's result file atomically; --let-daemons-go: the mission's processes outside its session
    are left alone at its end. See docs/missions.md.

    --drive reads mission-output-cap and mission-env from vigil.json, like the runner.

    --drive runs a runner loop that only runs missions (tests kill -9 it).
    --bench-fill adds COUNT pending missions in one transaction, then kills itself with SIGKILL
    (the benchmark's "100,000 queued missions after kill -9").
    """, run: run)

    static func run(_ inv: Invocation) throws {
        let args = try Arguments(inv.arguments, valued: ["mission", "attempt", "max-attempts", "cwd", "max-parallel", "tick", "term-grace", "bench-fill",
                                                           "output-cap", "pass-env"],
                                 booleans: ["drive", "bench", "let-daemons-go"])
        if args.has("bench") {
            // Until `vigil bench missions` is wired: the same benchmark.
            try MissionBench.run(args.rest ?? [], stateDir: inv.stateDir)
            return
        }
        if args.has("drive") {
            let config = try Configuration.load(stateDir: inv.stateDir, arguments: try Arguments([], valued: []))
            try MissionRunner.runStandalone(stateDir: inv.stateDir, maxParallel: try args.int("max-parallel", min: 1) ?? 1,
                                            tick: try args.duration("tick") ?? .seconds(1),
                                            termGrace: try args.duration("term-grace") ?? .seconds(5),
                                            settings: config.missionSettings)
            return
        }
        if let count = try args.int("bench-fill", min: 1) {
            try MissionBench.fill(stateDir: inv.stateDir, count: count)
            ThisProcess.raise(.kill)
            return
        }
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
                                         letDaemonsGo: args.has("let-daemons-go")))
        if code != 0 { throw ExitCode(code) }
    }
}
