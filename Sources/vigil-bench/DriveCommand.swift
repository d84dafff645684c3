import Foundation
// Tooling, not product: the benchmark acts on processes and sockets from outside with libc
// directly (kill, SIGSTOP, a socket server), as a second program would; the product does that
// only through VigilSystem (docs/architecture.md, "One syscall edge").
import Glibc
import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `vigil-bench drive` and `vigil-bench fill`: the drivers tests and the mission benchmark
/// start (and kill -9) instead of the real runner.
enum DriveCommand {
    static let drive = Command(name: "drive", summary: "a runner loop that only runs missions (tests kill -9 it)", help: """
    usage: vigil-bench [--state-dir DIR] drive [--max-parallel N] [--tick D] [--term-grace D]

    Runs a runner loop that only runs missions, no watchdog, until SIGTERM or SIGINT (running
    missions are left alone). Reads mission-output-cap and mission-env from vigil.json, like the
    runner. Its missions' shims are the real `vigil shim` (the `vigil` beside this executable).
    """, run: { inv in
        let args = try Arguments(inv.arguments, valued: ["max-parallel", "tick", "term-grace"])
        let config = try Configuration.load(stateDir: inv.stateDir, arguments: try Arguments([], valued: []))
        try StandaloneRunner.run(stateDir: inv.stateDir, maxParallel: try args.int("max-parallel", min: 1) ?? 1,
                                 tick: try args.duration("tick") ?? .seconds(1),
                                 termGrace: try args.duration("term-grace") ?? .seconds(5),
                                 shimExecutable: Binaries.vigil, settings: config.missionSettings)
    })

    static let fill = Command(name: "fill", summary: "queue COUNT missions in one transaction, then kill -9 itself", help: """
    usage: vigil-bench [--state-dir DIR] fill COUNT

    Adds COUNT pending missions in one transaction, then kills itself with SIGKILL (the
    benchmark's "100,000 queued missions after kill -9").
    """, run: { inv in
        guard let text = inv.arguments.first, let count = Int(text), count >= 1 else { throw UsageError("fill needs a COUNT of at least 1") }
        try MissionBench.fill(stateDir: inv.stateDir, count: count)
        kill(getpid(), SIGKILL)
    })
}
