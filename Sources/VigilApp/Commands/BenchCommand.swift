import Foundation
import VigilStore

/// `vigil bench heal|missions|chat`: the shipped benchmarks. Each prints a table of figures
/// beside their targets (docs/performance.md). Not tests: numbers go in notes and docs.
enum BenchCommand {
    static let command = Command(
        name: "bench",
        summary: "benchmarks: heal | missions | chat | alert | checkpoint | journal (prints a table)",
        help: """
        usage: vigil bench heal [--trials N] [--idle D] [--out FILE]
               vigil bench missions [OPTIONS]
               vigil bench chat [OPTIONS]
               vigil bench alert [--trials N] [--no-matrix] [--venv DIR]
               vigil bench checkpoint [--rounds N]
               vigil bench journal [--records N] | --append N [--writer W] [--max-bytes SIZE] [--keep K]

        Runs a benchmark in a temporary state directory and prints a table: each figure beside
        its target. Build with `swift build -c release` first: a debug build is much slower.
        heal: a live pair at the default tick and heartbeat (1 s): N trials each of kill -9,
        SIGSTOP (at --stale-after 3), version drift and a crash loop; probe CPU per tick;
        idle CPU and RSS of runner and bridge.
        alert: a crash loop with no live bridge; circuit open → alert seen in console chat.log,
        at a local webhook receiver and in a Synapse room (the runner delivers it).
        checkpoint: save and restore of a 64 KB mission checkpoint, in process and through
        `vigil checkpoint save`.
        """,
        run: { inv in
            guard let which = inv.arguments.first else { throw UsageError("say which benchmark: vigil bench heal|missions|chat") }
            let rest = Array(inv.arguments.dropFirst())
            switch which {
            case "heal": try HealBench.run(rest)
            case "probe": try ProbeBench.run(inv.stateDir)
            case "missions": try BenchRegistry.missions(rest, inv.stateDir)
            case "chat": try ChatBench.run(rest, stateDir: inv.stateDir)
            case "alert": try AlertBench.run(rest)
            case "checkpoint": try CheckpointBench.run(rest)
            case "journal": try JournalBench.run(rest, stateDir: inv.stateDir)
            default: throw UsageError("unknown benchmark \(which.debugDescription): heal, missions, chat, alert, checkpoint or journal")
            }
        })
}

/// Benchmarks provided by other parts, wired here.
enum BenchRegistry {
    static func missions(_ args: [String], _ dir: StateDirectory) throws { try MissionBench.run(args, stateDir: dir) }
}

/// A printed table of benchmark figures.
struct BenchTable {
    var title: String
    var rows: [(figure: String, measured: String, target: String, anchor: String)] = []

    mutating func add(_ figure: String, _ measured: String, _ target: String, _ anchor: String = "") {
        rows.append((figure, measured, target, anchor))
    }

    var text: String {
        let headers = ("figure", "measured", "target", "anchor")
        let w0 = max(headers.0.count, rows.map(\.figure.count).max() ?? 0)
        let w1 = max(headers.1.count, rows.map(\.measured.count).max() ?? 0)
        let w2 = max(headers.2.count, rows.map(\.target.count).max() ?? 0)
        func line(_ a: String, _ b: String, _ c: String, _ d: String) -> String {
            "| \(a.padding(toLength: w0, withPad: " ", startingAt: 0)) | \(b.padding(toLength: w1, withPad: " ", startingAt: 0)) | \(c.padding(toLength: w2, withPad: " ", startingAt: 0)) | \(d) |"
        }
        var out = ["### \(title)", "", line(headers.0, headers.1, headers.2, headers.3),
                   "|\(String(repeating: "-", count: w0 + 2))|\(String(repeating: "-", count: w1 + 2))|\(String(repeating: "-", count: w2 + 2))|---|"]
        out += rows.map { line($0.figure, $0.measured, $0.target, $0.anchor) }
        return out.joined(separator: "\n")
    }
}

/// Median, p95 and max of a sample.
struct Stats {
    var values: [Double]
    init(_ v: [Double]) { values = v.sorted() }
    func quantile(_ q: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let i = Swift.min(values.count - 1, Swift.max(0, Int((q * Double(values.count - 1)).rounded(.up))))
        return values[i]
    }
    var median: Double { quantile(0.5) }
    var p95: Double { quantile(0.95) }
    var max: Double { values.last ?? .nan }
    /// "median / p95 / max" in seconds or milliseconds.
    func seconds() -> String { String(format: "%.3f / %.3f / %.3f s (n=%d)", median, p95, max, values.count) }
}
