import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// The runner's missions: recovery once (retried until the database answers), then a tick
/// on every loop turn. A locked or unavailable database never stops the watchdog: the error is
/// journaled at a low rate and the next try waits a tick. When another process holds
/// `missions.lock` at start (e.g. `vigil doctor --fix` running the same recovery), taking it is
/// retried every tick, so a runner started in that moment still runs missions.
final class RunnerMissions {
    private var engine: MissionRunner?
    private let makeEngine: () throws -> MissionRunner
    let journal: Journal
    let tickPeriod: TimeSpan
    private var recovered = false
    private var retryAt = BootInstant.zero
    /// Database failures, journaled at a bounded rate (docs/architecture.md, "Repeated failures").
    private var failures = RepeatLimiter()

    init(runner: Runner, notifier: Notifier) {
        let t = runner.config.tunables
        let dir = runner.ctx.dir
        let journal = runner.ctx.journal
        let chat = notifier.config
        let settings = runner.config.missionSettings
        makeEngine = {
            let engine = try MissionRunner(stateDir: dir, journal: journal, maxParallel: t.maxParallel,
                                           shimExecutable: Executable.path, notify: { notifier.notify(key: $0, text: $1) },
                                           termGrace: t.termGrace, settings: settings)
            // "Mission N done" is queued in the transaction that records the end.
            engine.endNoticesInOutbox = (chat.adapters, { ChatText.clean($0, maxLength: chat.maxMessageLength) })
            return engine
        }
        self.journal = journal
        tickPeriod = t.tick
        do {
            engine = try makeEngine()
        } catch {
            let report = failures.failure(now: Clock.boot())
            journal.append(.missionsUnavailable, ["error": .string("\(error)")].merging(report?.fields ?? [:]) { a, _ in a })
        }
    }

    func tick(now: BootInstant) {
        guard now >= retryAt else { return }
        do {
            let engine = try self.engine ?? makeEngine()
            self.engine = engine
            if !recovered {
                _ = try engine.recover()
                recovered = true
            }
            try engine.tick(now: now)
            if let report = failures.success(now: now) {
                journal.append(.missionsDbAvailable, report.fields)
            }
        } catch {
            retryAt = now + tickPeriod
            if let report = failures.failure(now: now) {
                journal.append(.missionsDbUnavailable, ["error": .string("\(error)"), "recovered": .bool(recovered)]
                    .merging(report.fields) { a, _ in a })
            }
        }
    }

    var nextDeadline: BootInstant? {
        if failures.isFailing { return retryAt }
        return recovered ? engine?.nextDeadline : nil
    }
    /// Missions this runner's engine is running now, as it knows them without asking the
    /// database (nil before recovery, or while the database fails).
    var running: Int? { recovered && !failures.isFailing ? engine?.tracked.count : nil }
    var wakeDescriptors: [Int32] { recovered && !failures.isFailing ? engine?.wakeDescriptors ?? [] : [] }
}

/// Missions from chat (`/missions`, `/mission TEXT`, `/cancel ID`), on the bridge's thread.
enum ChatMissions {
    static func queue(_ dir: StateDirectory) throws -> MissionQueue {
        MissionQueue(db: try Database(path: dir.database, busyTimeout: 0.5))
    }

    static func list(_ dir: StateDirectory) throws -> String {
        let q = try queue(dir)
        let view = try q.lockView()
        let ms = try q.missions(last: 10)
        guard !ms.isEmpty else { return "No missions yet." }
        return ms.map { m in
            var line = "#\(m.id) \(view.state(of: m).rawValue) attempts \(m.attempts)"
            if let c = m.exitCode { line += " exit \(c)" }
            if let k = m.lockKey { line += " lock \(k)" }
            return line + ": " + m.argv.joined(separator: " ").prefix(80)
        }.joined(separator: "\n")
    }

    /// `ref`: the chat message that asked (its notices reply to it and mention the sender).
    static func add(_ dir: StateDirectory, argv: [String], by: String, ref: ChatRef? = nil) throws -> String {
        let id = try queue(dir).enqueue(argv: argv, cwd: FileManager.default.currentDirectoryPath, queuedBy: "chat \(by)",
                                        chatRef: ref?.json)
        MissionRunner.poke(dir)
        return "Mission \(id) queued."
    }

    /// `/show ID`: the state line and the last lines of the output (control bytes escaped),
    /// within `maxOutput` characters, saying how much came before.
    static func show(_ dir: StateDirectory, id: Int64, lines maxLines: Int = 20, maxOutput: Int = 3000) throws -> String {
        let q = try queue(dir)
        guard let m = try q.mission(id) else { return "There is no mission \(id)." }
        var head = "#\(m.id) \(try q.lockView().state(of: m).rawValue) attempts \(m.attempts)"
        if let c = m.exitCode { head += " exit \(c)" }
        if let r = m.reason { head += " — \(r)" }
        head += "\n" + m.argv.joined(separator: " ").prefix(200)
        let path = MissionPaths(stateDir: dir, id: id).output
        guard let raw = try? PrivateFile.open(path, .readOnly) else { return head + "\n(no output yet)" }
        let fd = FileDescriptor(rawValue: raw)
        defer { fd.close() }
        let size = (try? fd.seekToEnd()) ?? 0
        let start = max(0, size - 16384)
        let buf = (try? fd.readAll(limit: size - start, from: start)) ?? []
        let n = buf.count
        guard n > 0 else { return head + "\n(no output yet)" }
        var carry: [UInt8] = []
        let text = String(decoding: MissionOutput.escapeForTerminal(Array(buf[0..<n]), carry: &carry)
                          + MissionOutput.escapeForTerminal([], carry: &carry, final: true), as: UTF8.self)
        var all = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if all.last == "" { all.removeLast() }
        if start > 0, !all.isEmpty { all.removeFirst() } // cut mid-line
        var shown: [String] = []
        var used = 0
        for line in all.reversed() {
            let l = line.count > 300 ? String(line.prefix(300)) + "…" : line
            if shown.count == maxLines || used + l.count + 1 > maxOutput { break }
            shown.insert(l, at: 0)
            used += l.count + 1
        }
        let before = all.count - shown.count
        let lead = start > 0 ? "… (earlier output not shown; vigil mission show \(id) has it all)" : (before > 0 ? "… (\(before) earlier lines)" : "")
        return head + "\n" + (lead.isEmpty ? "" : lead + "\n") + shown.joined(separator: "\n")
    }

    static func cancel(_ dir: StateDirectory, id text: String, by: String) throws -> String {
        guard let id = Int64(text.trimmingWhitespace(keepingNewlines: true).trimming({ $0 == "#" })) else {
            return "Say /cancel ID with a mission number."
        }
        let outcome = try queue(dir).requestCancel(id: id)
        MissionRunner.poke(dir)
        switch outcome {
        case .cancelled: return "Mission \(id) cancelled (it had not started)."
        case .requested: return "Mission \(id) is being stopped (SIGTERM, then SIGKILL after the grace)."
        case .alreadyRequested: return "Mission \(id) is already being stopped."
        case .alreadyFinished(let s): return "Mission \(id) already ended (\(s.rawValue))."
        case .notFound: return "There is no mission \(id)."
        }
    }
}

enum MissionCounts {
    static func gather(_ db: Database) throws -> JSONValue? {
        .object(try MissionQueue(db: db).counts().reduce(into: [:]) { $0[$1.key.rawValue] = .int(Int64($1.value)) })
    }
}
