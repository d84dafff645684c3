import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil journal [--json] [--follow] [--since D]`.
enum JournalCommand {
    static let command = Command(
        name: "journal",
        summary: "the heal journal (--json, --follow, --since 10m)",
        help: """
        usage: vigil journal [--state-dir DIR] [--json] [--follow] [--since D] [--last N]
               vigil journal --events [--json]

        Prints the heal journal: every heal action, recovery, circuit change, restart and
        quarantined file, across the rotated files (journal.jsonl.1 …) oldest first. --json prints one object per line (fields ts, event, and for heal
        actions tier and verdict). --since 10m shows entries of the last ten minutes;
        --follow keeps printing new entries until interrupted.

        --events prints the name of every event the journal can hold, one a line (--json: one
        JSON array), and reads no state directory: scripts take the names from here.
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: ["since", "last"], booleans: ["json", "follow", "events"])
            guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0])") }
            if args.has("events") {
                let names = JournalEvent.allCases.map(\.rawValue)
                if args.has("json") { printOut(JSONValue.array(names.map { .string($0) }).jsonString) }
                else { for n in names { printOut(n) } }
                return
            }
            let since = try args.duration("since")
            let last = try args.int("last", min: 1)
            let path = try existing(inv.stateDir).journal
            guard args.has("follow") || FileManager.default.fileExists(atPath: path) || FileManager.default.fileExists(atPath: path + ".1") else {
                throw CommandError("no journal at \(path): nothing has run on this state dir yet")
            }
            let cutoff = since.map { Clock.wall().addingTimeInterval(-$0.seconds) }
            let json = args.has("json")
            // Every file, rotated ones too (docs/operator-guide.md, "Reading the journal").
            let result = Journal.readAll(path: path, modifiedSince: cutoff)
            var cursor = result.cursor
            var entries = result.entries
            if let cutoff { entries = entries.filter { (parseISO($0["ts"]?.stringValue) ?? .distantPast) >= cutoff } }
            if let last { entries = Array(entries.suffix(last)) }
            for e in entries { printOut(json ? JSONValue.object(e).jsonString : format(e)) }
            if result.skipped > 0 && !json {
                printErr("(\(result.skipped) damaged line(s) skipped: torn by a crash or not written by Vigil)\n")
            }
            guard args.has("follow") else { return }
            let inotify = try Inotify()
            try inotify.watch(directory: inv.stateDir.path)
            let signals = try WakePipe(signals: [.interrupt, .terminate])
            while true {
                let ready = pollReadable([inotify.fd, signals.readFD], timeoutMilliseconds: 1000)
                if ready.contains(signals.readFD) { return }
                _ = inotify.drain()
                // A rotation meanwhile: the rest of the file we were in (now `.1`), then the new one.
                let next = Journal.readAll(path: path, after: cursor)
                for e in next.entries { printOut(json ? JSONValue.object(e).jsonString : format(e)) }
                cursor = next.cursor
                if Console.out.isGone { return } // `| head -1` has what it wanted
            }
        })

    static func parseISO(_ s: String?) -> Date? {
        guard let s else { return nil }
        return try? Date(s, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt))
    }

    /// One human line: time, event, then the other fields as key=value.
    static func format(_ e: [String: JSONValue]) -> String {
        let skip: Set<String> = ["ts", "event", "boot", "crc", "source"]
        let fields = e.filter { !skip.contains($0.key) }.sorted { $0.key < $1.key }.map { k, v -> String in
            switch v {
            case .string(let s): return "\(k)=\(s.contains(" ") ? s.debugDescription : s)"
            default: return "\(k)=\(v.jsonString)"
            }
        }
        let ts = e["ts"]?.stringValue ?? "?"
        let src = e["source"]?.stringValue ?? "?"
        return "\(ts) \(src.padded(toLength: 6)) \(e["event"]?.stringValue ?? "?")  \(fields.joined(separator: " "))"
    }
}
