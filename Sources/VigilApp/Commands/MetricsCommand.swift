import FoundationEssentials
import VigilStore
import VigilSystem

/// `vigil metrics`: the Prometheus text exposition of this state directory, printed once
/// (docs/operator-guide.md, "Probes and metrics"). Read-only: the journal totals are those the
/// runner saved in `metrics.json`, counted on from there in memory, never written back.
enum MetricsCommand {
    static let command = Command(
        name: "metrics",
        summary: "print the metrics in Prometheus text format",
        help: """
        usage: vigil metrics [--state-dir DIR]

        Prints the metrics in the Prometheus text exposition format (version 0.0.4): heal
        actions, recoveries, time to heal, circuit, bridge and runner up, missions, retries,
        outbox, chat circuits, probe CPU, workspace slots. The runner serves the same at
        GET /metrics when vigil.json has "metrics": {"listen": "127.0.0.1:9464"}. Read-only.
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: [])
            guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0])") }
            guard FileSystem.exists(inv.stateDir.path) else {
                throw CommandError("no state directory at \(inv.stateDir.path): nothing has run here (start with scripts/vigil-run, or pass --state-dir)")
            }
            let t = (try? Configuration.load(stateDir: inv.stateDir, arguments: args))?.tunables ?? Tunables()
            var totals = MetricsTotals.load(inv.stateDir)
            totals.advance(journal: inv.stateDir.journal)
            Console.out.write(MetricsReport.render(inv.stateDir, tunables: t, totals: totals))
        })
}
