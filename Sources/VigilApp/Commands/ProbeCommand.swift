import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil probe [--liveness]`: exit 0 or 1 for a container's readiness and liveness probes
/// (docs/operator-guide.md, "Probes and metrics"). Reads the PID files, the heartbeats and
/// `heal.json` (`PairHealth`), and vigil.json for the tunables; never the database or the
/// journal, and writes nothing.
enum ProbeCommand {
    static let command = Command(
        name: "probe",
        summary: "exit 0/1: ready (bridge up, runner beating) or, with --liveness, live (runner beating, circuit not open)",
        help: """
        usage: vigil probe [--state-dir DIR] [--liveness]

        Readiness (default): exit 0 when the bridge runs and beats (healthy, or drifted/bloated
        until the runner restarts it) and the runner runs and beats; else exit 1.
        --liveness: exit 0 when the runner runs and beats and the heal circuit is not open
        (open: the watchdog gave up on the bridge and needs a person); else exit 1.
        One line says why: on stderr, and on stdout too when the answer is 0. Reads only the
        PID, heartbeat and heal files: no database, no journal, nothing written.
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: [], booleans: ["liveness"])
            guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0])") }
            let answer = run(inv.stateDir, liveness: args.has("liveness"))
            if answer.ok { printOut(answer.reason) }
            printErr(answer.reason + "\n")
            if !answer.ok { throw ExitCode(1) }
        })

    static func run(_ dir: StateDirectory, liveness: Bool) -> PairHealth.Answer {
        guard FileSystem.exists(dir.path) else {
            return PairHealth.Answer(ok: false, reason: "not \(liveness ? "live" : "ready"): no state directory at \(dir.path) (nothing has run here)")
        }
        // A vigil.json that does not load leaves the defaults: the probe answers for the pair
        // that runs, whose own tunables are in its records (the runner's stale bound).
        let t = (try? Configuration.load(stateDir: dir, arguments: try Arguments([], valued: [])))?.tunables ?? Tunables()
        let pair = PairHealth.read(dir, tunables: t, versionWhenRunnerDown: false)
        return liveness ? pair.liveness : pair.readiness
    }
}
