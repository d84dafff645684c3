import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The runner's scheduled self-checks (docs/operator-guide.md, "Self-checks"): doctor's checks
/// of one group at a time (disk, memory, database, outbox, workspaces), each on its own
/// interval, run as a child (`vigil doctor --only G… --json`), so a slow integrity check never
/// holds up the loop. The pure `SelfChecks` decides: after three failures in a row the safe
/// repair (`vigil doctor --only G --fix`) and a message, or, with no repair, a message to a
/// person; another when it passes again. The results are kept in `selfchecks.json` (for `vigil
/// metrics`) and journaled when they change.
final class RunnerSelfChecks {
    let dir: StateDirectory
    let journal: Journal
    let executable: String
    /// Queues a chat message (set by `RunnerHooks`, which also wakes the standby).
    var notify: (_ key: String, _ text: String) -> Void = { _, _ in }
    /// Doctor's thresholds (`--max-wal`, `--min-free`) for every run.
    let doctorFlags: [String]
    private var schedule: SelfChecks
    /// The child running now: a check of these groups, or the repair of one.
    private var child: (identity: ProcessIdentity, pidfd: PidFD?, groups: [String], repair: (group: String, summary: String, failures: Int, tell: Bool)?)?
    private var repairs: [(group: String, summary: String, failures: Int, tell: Bool)] = []
    private var lastResult: [String: Bool] = [:]

    /// The default groups and how often each runs; `"self-checks"` in vigil.json changes them.
    static let defaultIntervals: [String: TimeSpan] = [
        "disk": .seconds(60), "memory": .seconds(60), "outbox": .seconds(300), "workspaces": .seconds(600), "database": .seconds(3600),
    ]

    init(dir: StateDirectory, journal: Journal, intervals: [String: TimeSpan], doctorFlags: [String] = [], executable: String = Executable.path,
         now: BootInstant = Clock.boot()) {
        self.dir = dir
        self.journal = journal
        self.executable = executable
        self.doctorFlags = doctorFlags
        schedule = SelfChecks(intervals: intervals, start: now)
    }

    var nextDeadline: BootInstant? { child == nil ? (repairs.isEmpty ? schedule.nextDeadline : Clock.boot()) : nil }
    var wakeDescriptors: [Int32] { child?.pidfd.map { [$0.fd] } ?? [] }

    func tick(now: BootInstant) {
        if let c = child {
            guard c.pidfd?.hasExited ?? true else { return }
            let status = c.pidfd?.reapIfChild()
            child = nil
            let report = Self.readReport(dir.selfCheckOutput)
            // Decoding the report runs code idle does not ("Memory" in docs/architecture.md).
            CodePages.noteWork(now)
            if let r = c.repair {
                finishRepair(r, report: report)
            } else {
                finishCheck(c.groups, report: report, exit: status.map(exitCode(fromWaitStatus:)))
            }
        }
        guard child == nil else { return }
        if !repairs.isEmpty {
            let r = repairs.removeFirst()
            start(["--only", r.group, "--fix"], groups: [r.group], repair: r)
            return
        }
        let due = schedule.due(now: now)
        guard !due.isEmpty else { return }
        schedule.started(due, now: now)
        start(["--only", due.joined(separator: ",")], groups: due, repair: nil)
    }

    private func start(_ args: [String], groups: [String], repair: (group: String, summary: String, failures: Int, tell: Bool)?) {
        FileSystem.unlink(dir.selfCheckOutput)
        var options = Spawner.Options()
        options.newSession = true
        options.workingDirectory = "/"
        options.outputPath = dir.selfCheckOutput
        do {
            let id = try Spawner.spawn([executable, "--state-dir", dir.path, "doctor", "--json"] + doctorFlags + args, options)
            child = (id, id.openPidFD(), groups, repair)
        } catch {
            journal.append(.selfCheckFailed, ["groups": .array(groups.map { .string($0) }), "error": .string("cannot start vigil doctor: \(error)")])
        }
    }

    /// The findings of a doctor run, by group: the ones that need attention.
    static func readReport(_ path: String) -> [String: [[String: JSONValue]]]? {
        guard case .bytes(let raw) = StateSlot.read(path, sizeLimit: 4 << 20),
              let line = String(decoding: raw, as: UTF8.self).split(separator: "\n").last,
              case .object(let o)? = JSONValue.parse(Data(line.utf8)), case .array(let items)? = o["findings"] else { return nil }
        var out: [String: [[String: JSONValue]]] = [:]
        for case .object(let f) in items {
            let severity = f["severity"]?.stringValue ?? ""
            // After --fix, a finding that is gone (fixed or resolved) needs nothing any more.
            guard severity == "warning" || severity == "critical", f["fixed"] != .bool(true), f["resolved"] != .bool(true),
                  let check = f["check"]?.stringValue else { continue }
            out[Doctor.group(ofCheck: check), default: []].append(f)
        }
        return out
    }

    private func finishCheck(_ groups: [String], report: [String: [[String: JSONValue]]]?, exit: Int32?) {
        for g in groups {
            let result: SelfChecks.Result
            if let report {
                if let bad = report[g], let first = bad.first {
                    let repairable = bad.contains { $0["fixable"] == .bool(true) && $0["requires"] == .null }
                    result = .failed(summary: first["what"]?.stringValue ?? "?", repairable: repairable)
                } else {
                    result = .passed
                }
            } else {
                result = .unknown
                journal.append(.selfCheckFailed, ["group": .string(g), "error": .string("vigil doctor gave no report (exit \(exit.map { "\($0)" } ?? "?"))")])
            }
            if case .failed(let summary, _) = result, lastResult[g] != false {
                journal.append(.selfCheckFailed, ["group": .string(g), "what": .string(summary)])
            }
            if result == .passed, lastResult[g] == false { journal.append(.selfCheckPassed, ["group": .string(g)]) }
            if result != .unknown { lastResult[g] = result == .passed }
            for action in schedule.record(g, result) {
                switch action {
                case .repair(let check, let failures, let summary, let tell):
                    repairs.append((check, summary, failures, tell))
                case .tellPerson(let check, let failures, let summary):
                    let action = report?[check]?.first?["action"]?.stringValue ?? "see `vigil doctor`"
                    notify("self-check-\(check)-\(Clock.bootID)-\(ThisProcess.pid)-\(Clock.boot().nanoseconds)",
                           "Self-check \(check) failed \(failures) times in a row: \(summary). It needs a person: \(action)")
                case .tellCleared(let check):
                    notify("self-check-\(check)-cleared-\(Clock.bootID)-\(ThisProcess.pid)-\(Clock.boot().nanoseconds)",
                           "Self-check \(check) passes again.")
                }
            }
        }
        saveState()
    }

    private func finishRepair(_ r: (group: String, summary: String, failures: Int, tell: Bool), report: [String: [[String: JSONValue]]]?) {
        // What doctor --fix reported for the group: what remains after its repair.
        let left = report?[r.group] ?? []
        let fixedNotes = fixNotes(dir.selfCheckOutput, group: r.group)
        let outcome: String
        if report == nil {
            outcome = "vigil doctor --fix gave no report"
        } else if left.isEmpty {
            outcome = fixedNotes.isEmpty ? "repaired" : "repaired (\(fixedNotes.joined(separator: "; ")))"
        } else {
            let why: String = left.first?["note"]?.stringValue ?? left.first?["what"]?.stringValue ?? "?"
            outcome = "not repaired: " + why
        }
        journal.append(.selfCheckRepaired, ["group": .string(r.group), "what": .string(r.summary), "failures": .int(Int64(r.failures)),
                                              "outcome": .string(outcome)])
        if r.tell {
            notify("self-check-\(r.group)-repair-\(Clock.bootID)-\(ThisProcess.pid)-\(Clock.boot().nanoseconds)",
                   "Self-check \(r.group) failed \(r.failures) times in a row: \(r.summary). Safe repair (vigil doctor --fix): \(outcome).")
        }
        saveState()
    }

    /// What `--fix` said it did for the group's findings it fixed.
    private func fixNotes(_ path: String, group: String) -> [String] {
        guard case .bytes(let raw) = StateSlot.read(path, sizeLimit: 4 << 20),
              let line = String(decoding: raw, as: UTF8.self).split(separator: "\n").last,
              case .object(let o)? = JSONValue.parse(Data(line.utf8)), case .array(let items)? = o["findings"] else { return [] }
        return items.compactMap { item in
            guard case .object(let f) = item, f["fixed"] == .bool(true), let check = f["check"]?.stringValue,
                  Doctor.group(ofCheck: check) == group else { return nil }
            return f["note"]?.stringValue
        }
    }

    /// `selfchecks.json`: each group's last result and failures in a row, for `vigil metrics`
    /// and `vigil status`.
    private func saveState() {
        var record = SelfCheckRecord(updated: Clock.iso(Clock.wall()))
        for (name, c) in schedule.checks {
            record.groups[name] = .init(ok: lastResult[name], failuresInARow: c.failuresInARow, intervalSeconds: c.interval.seconds, what: c.lastSummary)
        }
        try? StateFile.write(record, kind: SelfCheckRecord.kind, to: dir.selfCheckState)
    }
}

/// The `selfchecks.json` state file (docs/operator-guide.md, "Self-checks").
struct SelfCheckRecord: Codable, Equatable {
    static let kind = "self-checks"

    struct Group: Codable, Equatable {
        /// The last result: nil until the first run.
        var ok: Bool?
        var failuresInARow: Int
        var intervalSeconds: Double
        /// What the last failure said.
        var what: String?

        enum CodingKeys: String, CodingKey {
            case ok, what
            case failuresInARow = "failures_in_a_row"
            case intervalSeconds = "interval_s"
        }
    }

    var groups: [String: Group] = [:]
    var updated: String
}
