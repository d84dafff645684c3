import FoundationEssentials
import Synchronization
import VigilCore
import VigilStore
import VigilSystem

/// The metrics that count journal events (heal actions, recoveries, time to heal, retries),
/// and where in the journal they were counted up to. A pure function of the journal from
/// where counting began: so `vigil metrics` and the runner's `/metrics` agree, and a restart
/// changes nothing. The runner keeps it in memory and saves it to `metrics.json`
/// (`MetricsKeeper`); a reader loads that file and counts on from its cursor, reading only
/// what was appended since (docs/operator-guide.md, "Probes and metrics").
struct MetricsTotals: Codable, Sendable, Equatable {
    static let kind = "metrics-totals"
    /// Upper bounds of the time-to-heal histogram, in seconds (`+Inf` besides).
    static let healBounds: [Double] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]

    /// The journal file (by inode) and offset counted up to; nil: nothing read yet.
    var cursorInode: UInt64?
    var cursorOffset: Int = 0
    /// CRC-32 of the first line of the cursor's file: a file with that inode but another first
    /// line is a new file that reused the inode of one rotated out.
    var cursorHead: String?
    /// `heal` events by "tier|verdict|action".
    var heals: [String: Int] = [:]
    /// `recovered` events by "tier|verdict".
    var recoveries: [String: Int] = [:]
    var bounds: [Double] = MetricsTotals.healBounds
    /// Recoveries per bucket (not cumulative; the last is above every bound).
    var healBuckets: [Int] = Array(repeating: 0, count: MetricsTotals.healBounds.count + 1)
    var healSeconds: Double = 0
    var missionRetries = 0
    var respawnFailures = 0
    var circuitOpens = 0
    /// Journal lines that failed their checksum.
    var unreadableLines = 0

    enum CodingKeys: String, CodingKey {
        case cursorInode = "cursor_inode", cursorOffset = "cursor_offset", heals, recoveries, bounds
        case healBuckets = "heal_buckets", healSeconds = "heal_seconds", missionRetries = "mission_retries"
        case respawnFailures = "respawn_failures", circuitOpens = "circuit_opens", unreadableLines = "unreadable_lines"
    }

    var cursor: Journal.Cursor? { cursorInode.map { Journal.Cursor(inode: $0, offset: cursorOffset) } }

    /// The saved totals, or none: absent, corrupt, or counted with other histogram bounds
    /// (then counting starts again from the oldest journal file there is).
    static func load(_ dir: StateDirectory) -> MetricsTotals {
        if case .ok(let t) = StateFile.read(dir.metricsTotals, kind: kind, as: MetricsTotals.self),
           t.bounds == healBounds, t.healBuckets.count == healBounds.count + 1 { return t }
        return MetricsTotals()
    }

    func save(_ dir: StateDirectory) throws {
        try StateFile.write(self, kind: MetricsTotals.kind, to: dir.metricsTotals)
    }

    /// Counts what the journal got since the cursor, across rotated files (`Journal.readAll`
    /// finds the cursor's file by inode wherever rotation moved it; a file rotated out before it
    /// was read is lost to the counts, which then only miss what it held after the cursor).
    /// Returns whether anything was read.
    @discardableResult
    mutating func advance(journal path: String) -> Bool {
        var from = cursor
        // Its file rotated out and the inode now names another journal file: every file there is
        // came after it (`readAll` reads them all for a cursor whose file is gone).
        if let c = from, let head = cursorHead, let now = MetricsTotals.firstLineCRC(inode: c.inode, journal: path), now != head {
            from = Journal.Cursor(inode: 0, offset: 0)
        }
        let span = Journal.readAll(path: path, after: from, events: MetricsTotals.counted)
        for e in span.entries { count(e) }
        unreadableLines += span.skipped
        guard let c = span.cursor, c != cursor else { return !span.entries.isEmpty }
        if c.inode != cursorInode || cursorHead == nil { cursorHead = MetricsTotals.firstLineCRC(inode: c.inode, journal: path) }
        cursorInode = c.inode
        cursorOffset = c.offset
        return true
    }

    /// The CRC-32 of the first line of the journal file (`path`, `path.1`, …) with this inode;
    /// nil when none has it (or it is empty).
    static func firstLineCRC(inode: UInt64, journal path: String) -> String? {
        for name in [path] + (1...Journal.maxKeep).map({ "\(path).\($0)" }) {
            guard let st = FileStatus.at(name, followSymlinks: false), st.inode == inode else { continue }
            guard case .file(let fd, _) = StateSlot.openForReading(name, sizeLimit: nil) else { return nil }
            defer { FileDescriptor(rawValue: fd).close() }
            guard let bytes = try? FileDescriptor(rawValue: fd).readAll(limit: 65536, from: 0), !bytes.isEmpty else { return nil }
            return CRC32.hex(Array(bytes.prefix { $0 != 0x0A }))
        }
        return nil
    }

    /// The events counted (only their lines are decoded).
    static let counted: [JournalEvent] = [.heal, .recovered, .missionRetryScheduled, .respawnFailed, .circuitOpen]

    mutating func count(_ e: [String: JSONValue]) {
        switch e["event"]?.stringValue {
        case JournalEvent.heal.rawValue?:
            let key = "\(e["tier"]?.intValue ?? 0)|\(e["verdict"]?.stringValue ?? "")|\(e["action"]?.stringValue ?? "")"
            heals[key, default: 0] += 1
        case JournalEvent.recovered.rawValue?:
            recoveries["\(e["tier"]?.intValue ?? 0)|\(e["verdict"]?.stringValue ?? "")", default: 0] += 1
            let s = (e["after_ms"]?.doubleValue ?? 0) / 1000
            healBuckets[bounds.firstIndex { s <= $0 } ?? bounds.count] += 1
            healSeconds += s
        case JournalEvent.missionRetryScheduled.rawValue?: missionRetries += 1
        case JournalEvent.respawnFailed.rawValue?: respawnFailures += 1
        case JournalEvent.circuitOpen.rawValue?: circuitOpens += 1
        default: break
        }
    }

    /// The totals as the exposition's counter and histogram families.
    func write(to x: inout Exposition) {
        x.family("vigil_heal_actions_total", .counter, "Heal actions the runner took (journal `heal` events), by tier, the verdict acted on and the action.")
        for (key, n) in heals.sorted(by: { $0.key < $1.key }) {
            let p = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            x.sample("vigil_heal_actions_total", [("tier", p[0]), ("verdict", p[1]), ("action", p[2])], Double(n))
        }
        x.family("vigil_recoveries_total", .counter, "Incidents that ended with the bridge healthy and stable again (journal `recovered`), by the highest tier used and the verdict that started them.")
        for (key, n) in recoveries.sorted(by: { $0.key < $1.key }) {
            let p = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            x.sample("vigil_recoveries_total", [("tier", p[0]), ("verdict", p[1])], Double(n))
        }
        x.family("vigil_time_to_heal_seconds", .histogram, "From the first bad verdict of an incident to the bridge healthy again (journal `recovered`, after_ms).")
        var cumulative = 0
        for (i, b) in bounds.enumerated() {
            cumulative += healBuckets[i]
            x.sample("vigil_time_to_heal_seconds_bucket", [("le", Exposition.number(b))], Double(cumulative))
        }
        cumulative += healBuckets[bounds.count]
        x.sample("vigil_time_to_heal_seconds_bucket", [("le", "+Inf")], Double(cumulative))
        x.sample("vigil_time_to_heal_seconds_sum", [], healSeconds)
        x.sample("vigil_time_to_heal_seconds_count", [], Double(cumulative))
        x.family("vigil_respawn_failures_total", .counter, "Respawned bridges that died or hung on their own (journal `respawn-failed`).")
        x.sample("vigil_respawn_failures_total", [], Double(respawnFailures))
        x.family("vigil_circuit_opens_total", .counter, "Times the heal circuit opened (journal `circuit-open`).")
        x.sample("vigil_circuit_opens_total", [], Double(circuitOpens))
        x.family("vigil_mission_retries_total", .counter, "Mission attempts that failed and were scheduled again (journal `mission-retry-scheduled`).")
        x.sample("vigil_mission_retries_total", [], Double(missionRetries))
        x.family("vigil_journal_unreadable_lines_total", .counter, "Journal lines naming a counted event that failed their checksum (torn by a crash, or not written by Vigil): not counted.")
        x.sample("vigil_journal_unreadable_lines_total", [], Double(unreadableLines))
    }
}

/// The runner's copy of the totals, behind a lock (its metrics thread refreshes it; the
/// runner's loop never touches it): counts on from `metrics.json` at start and saves it again
/// at most every `saveEvery` while it changes, and at shutdown.
final class MetricsKeeper: Sendable {
    let dir: StateDirectory
    static let saveEvery = TimeSpan.seconds(30)

    private struct State {
        var totals: MetricsTotals
        var saved: MetricsTotals?
        var savedAt: BootInstant?
        var lastSaveProblem: String?
    }
    private let state: Mutex<State>

    init(dir: StateDirectory) {
        self.dir = dir
        let t = MetricsTotals.load(dir)
        state = Mutex(State(totals: t, saved: t))
    }

    /// Reads what the journal got since the last refresh; returns the totals.
    func refresh() -> MetricsTotals {
        state.withLock { s in
            // Decoding new entries runs code idle does not ("Memory" in docs/architecture.md).
            if s.totals.advance(journal: dir.journal) { CodePages.noteWork() }
            return s.totals
        }
    }

    /// Saves when changed and not saved for `saveEvery` (or `force`). Returns a problem to
    /// journal when a save failed where the last one had not (nil otherwise).
    func saveIfDue(now: BootInstant, force: Bool = false) -> String? {
        state.withLock { s in
            guard s.totals != s.saved, force || s.savedAt.map({ now - $0 >= MetricsKeeper.saveEvery }) ?? true else { return nil }
            do {
                try s.totals.save(dir)
                s.saved = s.totals
                s.savedAt = now
                s.lastSaveProblem = nil
                return nil
            } catch {
                let p = "\(error)"
                defer { s.lastSaveProblem = p }
                s.savedAt = now
                return s.lastSaveProblem == nil ? p : nil
            }
        }
    }
}
