import Foundation
import VigilApp
import VigilCore
import VigilStore

/// `vigil-bench`: the shipped benchmarks and the test drivers. Each benchmark prints a table
/// of figures beside their targets (docs/performance.md); with `--json`, one JSON object
/// instead (each figure with its measured value, its target and whether it was met), which
/// scripts/reports reads. Not tests: numbers go in notes and docs.
enum BenchCLI {
    static let usage = """
    usage: vigil-bench [--state-dir DIR] COMMAND [OPTIONS] [--json]

    Vigil's benchmarks and test drivers, outside the product (the `vigil` executable links none
    of this). Each benchmark runs in a temporary state directory and prints a table: each
    figure beside its target; --json prints {"title", "figures": [{"figure", "measured",
    "value", "target", "met", "anchor"}]} instead ("met" is null for a figure without a target
    of its own). Build with `swift build -c release` first: a debug build is much slower.
      heal        a live pair at the default tick and heartbeat (1 s): N trials each of kill -9,
                  SIGSTOP (at --stale-after 3), version drift and a crash loop; probe CPU per
                  tick; idle CPU and RSS of runner and bridge
      alert       a crash loop with no live bridge; circuit open → alert seen in console
                  chat.log, at a local webhook receiver and in a Synapse room
      checkpoint  save and restore of a 64 KB mission checkpoint, in process and through
                  `vigil checkpoint save`
      workspace   a workspace slot of a 10k-file repository: fresh clone, clean after a
                  mission, inspect with and without fsck
      metrics     `vigil probe` (both), GET /metrics and `vigil metrics` against a live pair,
                  and the scrape with a large journal

    """

    static let benchmarks: [Command] = [
        bench("heal", "fault → healthy times, crash loop, probe cost, idle CPU/RSS", """
        usage: vigil-bench heal [--trials N] [--idle D] [--out FILE] [--json]
        """) { inv, json in try HealBench.run(inv.arguments, json: json) },
        bench("probe", "the cost of each part of one probe, against a live pair (--state-dir)", """
        usage: vigil-bench --state-dir DIR probe
        """) { inv, _ in try ProbeBench.run(inv.stateDir) },
        bench("missions", "durable enqueue, recovery with 100k missions, cycles", MissionBench.help) { inv, json in
            try MissionBench.run(inv.arguments, stateDir: inv.stateDir, json: json)
        },
        bench("chat", "heal action → message in a Synapse room", ChatBench.help) { inv, json in
            try ChatBench.run(inv.arguments, stateDir: inv.stateDir, json: json)
        },
        bench("alert", "circuit open → alert with no live bridge", AlertBench.help) { inv, json in try AlertBench.run(inv.arguments, json: json) },
        bench("checkpoint", "save and restore of a 64 KB mission checkpoint", """
        usage: vigil-bench checkpoint [--rounds N] [--json]
        """) { inv, json in try CheckpointBench.run(inv.arguments, json: json) },
        bench("workspace", "slot clone, clean after a mission, inspect (10k files)", WorkspaceBench.help) { inv, json in
            try WorkspaceBench.run(inv.arguments, json: json)
        },
        bench("metrics", "vigil probe, GET /metrics, vigil metrics; a large journal", MetricsBench.help) { inv, json in
            try MetricsBench.run(inv.arguments, json: json)
        },
        bench("journal", "the cost of one journal append; --append N as one writer", JournalBench.help) { inv, json in
            try JournalBench.run(inv.arguments, stateDir: inv.stateDir, json: json)
        },
    ]

    static var commands: [Command] { benchmarks + [DriveCommand.drive, DriveCommand.fill] }

    /// A benchmark command: `--json` (anywhere before `--`) is taken out of its arguments.
    static func bench(_ name: String, _ summary: String, _ help: String, _ run: @escaping @Sendable (Invocation, Bool) throws -> Void) -> Command {
        Command(name: name, summary: summary, help: help) { inv in
            var inv = inv
            let end = inv.arguments.firstIndex(of: "--") ?? inv.arguments.endIndex
            let json = inv.arguments[..<end].contains("--json")
            if json { inv.arguments.remove(at: inv.arguments.firstIndex(of: "--json")!) }
            try run(inv, json)
        }
    }

    static func main(_ argv: [String]) -> Int32 {
        CLI.main(argv, program: "vigil-bench", usage: usage, commands: commands) { command, _ in
            // The drivers write the state directory they are given; the benchmarks make their own.
            command == "drive" || command == "fill" ? .writes : .none
        }
    }
}

/// A benchmark's figures: printed as a markdown table (each figure beside its target), or with
/// `--json` as one object scripts/reports reads: each figure with its measured text, the
/// number its target is judged on (`value`), the target, and whether it was met (`met`: null
/// when the figure has no target of its own, e.g. a reference figure).
struct BenchTable {
    struct Row {
        var figure: String
        var measured: String
        var target: String
        var anchor: String
        var value: Double?
        var met: Bool?
    }

    var title: String
    var rows: [Row] = []

    /// `value` is the number `met` was judged on (in the unit `measured` shows first).
    mutating func add(_ figure: String, _ measured: String, _ target: String, _ anchor: String = "", value: Double? = nil, met: Bool? = nil) {
        rows.append(Row(figure: figure, measured: measured, target: target, anchor: anchor, value: value.flatMap { $0.isFinite ? $0 : nil }, met: met))
    }

    /// Adds a figure whose target is `value ≤ limit`.
    mutating func add(_ figure: String, _ measured: String, _ target: String, _ anchor: String = "", value: Double, atMost limit: Double) {
        add(figure, measured, target, anchor, value: value, met: value.isFinite ? value <= limit : false)
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

    var json: JSONValue {
        .object(["title": .string(title), "figures": .array(rows.map { r in
            .object(["figure": .string(r.figure), "measured": .string(r.measured), "target": .string(r.target), "anchor": .string(r.anchor),
                     "value": r.value.map { .double($0) } ?? .null, "met": r.met.map { .bool($0) } ?? .null])
        })])
    }

    /// Prints the table, or its JSON (one line) with `--json`.
    func print(json asJSON: Bool) {
        printOut(asJSON ? json.jsonString : text)
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
