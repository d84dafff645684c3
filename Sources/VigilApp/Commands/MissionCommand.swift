import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil mission add|list|show|cancel`: the durable mission queue for people and scripts.
enum MissionCommand {
    static let command = Command(name: "mission", summary: "add, list, show or cancel missions (durable, run by the runner)", help: """
    usage: vigil mission add [--lock KEY] [--workspace REPO] [--max-attempts N] [--let-daemons-go] [--timeout D] [--silence-limit D] [--at-most-once]
                             [--retries N] [--retry-backoff D] -- CMD [ARG…]
           vigil mission list [--json] [--last N]
           vigil mission show ID [--json] [--follow]
           vigil mission cancel ID
           vigil mission retry ID
           vigil mission resume-key KEY

    add      Enqueues CMD with its arguments, run as given (never through a shell), in the
             current directory. Prints the mission id only after the commit returned: a printed
             id is never lost (with a note on stderr when no runner runs on the state dir:
             it waits until the pair is started). --lock KEY: one running mission per KEY, the others wait in
             order. --workspace REPO: it waits (in order) for a free slot of REPO (vigil workspace
             add-repo) and runs in it ($VIGIL_WORKSPACE, its working directory); at its end the
             slot is cleaned and handed on. --max-attempts N: how often a mission whose shim died is started (default 3);
             a mission's own non-zero exit is final. Processes the mission leaves behind are
             killed at its end (the lock key is free only then); --let-daemons-go: those that
             left its session (setsid, daemons) are let go instead, and nothing kills them later.
             --timeout D: ended (SIGTERM, SIGKILL after the runner's grace) D after its attempt
             started; --silence-limit D: ended when it wrote no output for D; either way it
             ends failed with a reason saying which. Defaults: mission-timeout and
             mission-silence-limit in vigil.json (none unless set). --at-most-once: an attempt
             that may have started its command is never started again after a crash (its shim
             died): the mission ends failed, "interrupted: may have run" (default: at least
             once, so a crash between the command's end and its result runs it again).
             --retries N: an attempt that failed (non-zero exit, killed, timed out, silent) is
             run again, up to N times, after --retry-backoff D (default 1s; doubled for each
             retry, at most 60s or D, jittered); the retry gets the newest checkpoint.
    list     Every mission (--last N: the newest N) with its state (pending, waiting, running,
             done, failed, cancelled), attempts, exit code and lock. --json: an array of objects
             with id, state, attempts, max_attempts, exit_code, signal, reason, output, lock,
             argv, cwd, cancel_requested, let_daemons_go, timeout_s, silence_limit_s, at_most_once,
             retries, retried, retry_at, queued_by, shim_pid, workspace, slot,
             created, started, finished.
    show     State, attempts, exit status and reason, then the output (control bytes other
             than newline and tab shown as \\xNN). --follow streams the output as it grows until
             the mission has ended. Its checkpoints are listed. --json: the object of list
             --json, plus checkpoints (seq, size, attempt, saved, path, ok).
    retry    A failed mission is queued again with fresh budgets (attempt numbers go on); not one
             that ended "interrupted: may have run" (--at-most-once: add it anew instead).
    resume-key  Closes the breaker of lock key KEY: after key-breaker-limit (default 5)
             missions on a key failed in a row, the key is paused (missions on it wait; one is
             tried again after key-breaker-cooloff, default 10m); this resumes it now.
    cancel   A waiting or pending mission is cancelled at once; a running one gets SIGTERM
             (its process groups), then SIGKILL after the runner's grace.

    The database waits for another writer up to $VIGIL_BUSY_TIMEOUT (default 5s); past that the
    command says so, changes nothing, and exits 75.
    """, run: run)

    static func run(_ inv: Invocation) throws {
        guard let sub = inv.arguments.first else {
            throw UsageError("vigil mission needs a subcommand: add, list, show or cancel")
        }
        let rest = Array(inv.arguments.dropFirst())
        switch sub {
        case "add": try add(rest, inv.stateDir)
        case "list", "ls": try list(rest, inv.stateDir)
        case "show": try show(rest, inv.stateDir)
        case "cancel": try cancel(rest, inv.stateDir)
        case "retry": try retry(rest, inv.stateDir)
        case "resume-key":
            let args = try Arguments(rest, valued: [])
            guard args.positional.count == 1, let key = args.positional.first, !key.isEmpty else { throw UsageError("usage: vigil mission resume-key KEY") }
            let was = try withQueue(inv.stateDir, doing: "nothing was resumed") { q in try q.resumeKey(key) }
            if was {
                Journal(path: inv.stateDir.journal, source: "cli").append(.missionKeyResumed, ["key": .string(key), "by": "vigil mission resume-key"])
            }
            MissionRunner.poke(inv.stateDir)
            printOut(was ? "lock key \(key) resumed: missions on it start again" : "lock key \(key) was not paused")
        default: throw UsageError("unknown mission subcommand \(sub.debugDescription) (use add, list, show, cancel, retry or resume-key)")
        }
    }

    // MARK: - Subcommands

    static func add(_ argv: [String], _ stateDir: StateDirectory) throws {
        let args = try Arguments(argv, valued: ["lock", "max-attempts", "timeout", "silence-limit", "retries", "retry-backoff", "workspace"],
                                 booleans: ["let-daemons-go", "at-most-once"])
        let command = args.rest ?? args.positional
        guard !command.isEmpty, !command[0].isEmpty else {
            throw UsageError("mission add needs a command after --, e.g. vigil mission add -- make test")
        }
        if let rest = args.rest, !args.positional.isEmpty {
            throw UsageError("unexpected \(args.positional[0].debugDescription) before --; put the whole command after -- (got \(rest.count) arguments after it)")
        }
        let lock = args.value("lock")
        if let lock, lock.isEmpty { throw UsageError("--lock needs a non-empty key") }
        let workspace = args.value("workspace")
        if let workspace, let p = WorkspaceStore.problem(withName: workspace) { throw UsageError("--workspace \(workspace.debugDescription): \(p)") }
        if workspace != nil && args.has("let-daemons-go") {
            throw UsageError("--workspace and --let-daemons-go do not go together: daemons left in a slot would work in a checkout that is cleaned and handed to the next mission")
        }
        let maxAttempts = try args.int("max-attempts", min: 1) ?? MissionQueue.defaultMaxAttempts
        let cwd = FileManager.default.currentDirectoryPath
        let timeout = try args.duration("timeout"), silenceLimit = try args.duration("silence-limit")
        let retries = try args.int("retries", min: 0) ?? 0
        let backoff = try args.duration("retry-backoff")
        if let backoff, backoff > .seconds(3600) { throw UsageError("--retry-backoff \(backoff) is too long (at most 1h)") }
        let id = try withQueue(stateDir, doing: "the mission was not added") { q in
            try refusingUnknownWorkspace { try q.enqueue(argv: command, cwd: cwd, lockKey: lock, maxAttempts: maxAttempts, letDaemonsGo: args.has("let-daemons-go"),
                          timeout: timeout, silenceLimit: silenceLimit, atMostOnce: args.has("at-most-once"),
                          retries: retries, retryBackoff: backoff, queuedBy: "vigil mission add (uid \(ThisProcess.userID))", workspace: workspace) }
        }
        MissionRunner.poke(stateDir)
        // Queued either way (it is durable); but say so when nothing will run it yet.
        if FileLock.isFree(stateDir.missionsLock) {
            printErr("vigil: note: no runner is running on \(stateDir.path): mission \(id) waits until the pair is started (scripts/vigil-run --state-dir \(stateDir.path))\n")
        }
        guard printOut("\(id)") else {
            // Committed, so exit 0 (a script that retries on failure would add it twice); the
            // id is journaled instead (docs/operator-guide.md, "Bad input").
            Journal(path: stateDir.journal, source: "cli").append(.missionIdUnprinted, [
                "mission": .int(id), "why": .string(Console.out.isGone ? "standard output is closed" : "writing to standard output failed"),
            ])
            printErr("vigil: mission \(id) was added, but its id could not be printed (standard output is closed or failing); it is in `vigil journal`\n")
            return
        }
    }

    static func list(_ argv: [String], _ stateDir: StateDirectory) throws {
        let args = try Arguments(argv, valued: ["last"], booleans: ["json"])
        guard args.positional.isEmpty else { throw UsageError("mission list takes no arguments (got \(args.positional[0].debugDescription))") }
        let last = try args.int("last", min: 1)
        let (missions, view) = try withQueue(stateDir, doing: "nothing was listed") { q in
            try q.db.read { (try q.missions(last: last), try q.lockView()) }
        }
        if args.has("json") {
            printOut(JSONValue.array(missions.map { json($0, view, stateDir) }).jsonString)
            return
        }
        if missions.isEmpty {
            printOut("no missions (add one with: vigil mission add -- CMD ARG…)")
            return
        }
        var lines = [row("ID", "STATE", "ATTEMPTS", "EXIT", "LOCK", "COMMAND")]
        for m in missions {
            lines.append(row("\(m.id)", view.state(of: m).rawValue + (m.cancelRequested && m.state == .running ? "*" : ""),
                             "\(m.attempts)/\(m.maxAttempts)", m.exitCode.map { "\($0)" } ?? "-", m.lockKey ?? "-", display(m.argv)))
        }
        let paused = (try? withQueue(stateDir, doing: "") { q in try q.pausedKeys() }) ?? []
        for p in paused {
            lines.append("lock key \(p.key) paused since \(Clock.iso(p.since)) (\(p.failures) failed in a row): vigil mission resume-key \(p.key)")
        }
        printOut(lines.joined(separator: "\n"))
    }

    static func show(_ argv: [String], _ stateDir: StateDirectory) throws {
        let args = try Arguments(argv, valued: [], booleans: ["json", "follow"])
        let id = try missionID(args.positional, "show")
        let (found, view) = try withQueue(stateDir, doing: "nothing was shown") { q in
            try q.db.read { (try q.mission(id), try q.lockView()) }
        }
        guard let m = found else { throw CommandError("no mission \(id) in \(stateDir.path) (see vigil mission list)") }
        if args.has("json") {
            printOut(json(m, view, stateDir, checkpoints: true).jsonString)
            return
        }
        let paths = MissionPaths(stateDir: stateDir, id: id)
        var out = ["mission \(m.id)",
                   "  state:     \(view.state(of: m).rawValue)\(m.cancelRequested && m.state == .running ? " (cancel requested)" : "")",
                   "  command:   \(display(m.argv))",
                   "  cwd:       \(m.cwd)",
                   "  lock:      \(m.lockKey ?? "-")",
                   "  workspace: \(m.workspace.map { w in m.slot.map { "\(w), slot \($0) (\(stateDir.workspaceSlot(repo: w, id: $0)))" } ?? "\(w), no slot yet" } ?? "-")",
                   "  daemons:   \(m.letDaemonsGo ? "let go at its end (--let-daemons-go)" : "killed at its end")",
                   "  delivery:  \(m.atMostOnce ? "at most once (--at-most-once)" : "at least once")",
                   "  limits:    timeout \(m.timeout.map(\.description) ?? "default"), silence \(m.silenceLimit.map(\.description) ?? "default")",
                   "  attempts:  \(m.attempts) of \(m.maxAttempts)\(m.retries > 0 ? ", retries \(m.retried) of \(m.retries)" : "")\(m.retryAt.map { ", next at \(Clock.iso($0))" } ?? "")",
                   "  exit:      \(m.exitCode.map { "\($0)" } ?? "-")\(m.signal.map { " (\(SignalName.of($0)))" } ?? "")"]
        if let r = m.reason { out.append("  reason:    \(r)") }
        if let b = m.queuedBy { out.append("  queued by: \(b)") }
        if let s = m.shim { out.append("  shim:      \(s.identity)") }
        out.append("  created:   \(Clock.iso(m.createdAt))")
        if let d = m.startedAt { out.append("  started:   \(Clock.iso(d))") }
        if let d = m.finishedAt { out.append("  finished:  \(Clock.iso(d))") }
        out.append("  output:    \(paths.output)")
        for c in CheckpointStore(stateDir: stateDir, mission: id).list() {
            let what = c.meta.map { "\($0.size) bytes, attempt \($0.attempt), \($0.saved)" } ?? "-"
            out.append("  checkpoint \(c.seq): \(what)\(c.problem.map { " — unusable: \($0)" } ?? "")")
        }
        out.append("--- output ---")
        printOut(out.joined(separator: "\n"))
        // The older part first (once the output reached half its cap), then the live file;
        // control bytes escaped (docs/missions.md, "Output cap").
        var carry: [UInt8] = []
        _ = copyOutput(paths.previousOutput, from: 0, carry: &carry)
        var offset = copyOutput(paths.output, from: 0, carry: &carry)
        defer { flushCarry(&carry) }
        guard args.has("follow") else { return }
        // Follow: poll the file and the row until the mission has ended.
        let q = try withQueue(stateDir, doing: "cannot follow") { $0 }
        var final = m.state.isFinal
        while !final && !Console.out.isGone {
            ThisProcess.pause(.milliseconds(100))
            offset = follow(paths, from: offset, carry: &carry)
            if let now = try? q.mission(id) { final = now.state.isFinal }
        }
        _ = follow(paths, from: offset, carry: &carry)
    }

    /// The next piece of a growing output from `offset` in `output.log`. When the file is
    /// shorter than `offset`, it was moved to `output.log.1`: what came after `offset` there
    /// is printed first, then the new `output.log` from its start.
    static func follow(_ paths: MissionPaths, from offset: Int, carry: inout [UInt8]) -> Int {
        if let st = FileStatus.at(paths.output), st.size < offset {
            _ = copyOutput(paths.previousOutput, from: offset + MissionOutput.cutLineLength(paths.previousOutput), carry: &carry)
            return copyOutput(paths.output, from: 0, carry: &carry)
        }
        return copyOutput(paths.output, from: offset, carry: &carry)
    }

    static func flushCarry(_ carry: inout [UInt8]) {
        let rest = MissionOutput.escapeForTerminal([], carry: &carry, final: true)
        if !rest.isEmpty { rest.withUnsafeBytes { _ = Console.out.write($0) } }
    }

    static func retry(_ argv: [String], _ stateDir: StateDirectory) throws {
        let args = try Arguments(argv, valued: [])
        let id = try missionID(args.positional, "retry")
        let outcome = try withQueue(stateDir, doing: "nothing was retried") { q in try q.retry(id: id) }
        MissionRunner.poke(stateDir)
        switch outcome {
        case .queued: printOut("mission \(id) queued again")
        case .notFailed(let s): throw CommandError("mission \(id) is \(s.rawValue), not failed: only a failed mission is retried")
        case .mayHaveRun: throw CommandError("mission \(id) ended \"interrupted: may have run\" (--at-most-once): it is never started again; add it anew if it must run")
        case .notFound: throw CommandError("there is no mission \(id)")
        }
    }

    static func cancel(_ argv: [String], _ stateDir: StateDirectory) throws {
        let args = try Arguments(argv, valued: [])
        let id = try missionID(args.positional, "cancel")
        let outcome = try withQueue(stateDir, doing: "nothing was cancelled") { q in try q.requestCancel(id: id) }
        switch outcome {
        case .cancelled:
            MissionRunner.poke(stateDir)
            printOut("mission \(id) cancelled (it had not started)")
        case .requested:
            MissionRunner.poke(stateDir)
            printOut("mission \(id): cancel requested; the runner sends SIGTERM to it now and SIGKILL after its grace")
        case .alreadyRequested:
            printOut("mission \(id): cancel was already requested; the runner is stopping it")
        case .alreadyFinished(let state):
            if state == .cancelled {
                printOut("mission \(id) is already cancelled")
            } else {
                throw CommandError("mission \(id) already ended (\(state.rawValue)); there is nothing to cancel")
            }
        case .notFound:
            throw CommandError("no mission \(id) in \(stateDir.path) (see vigil mission list)")
        }
    }

    // MARK: - Helpers

    /// Opens the queue and runs `body`, turning database trouble into a sentence: what happened,
    /// that nothing was done, and what to do.
    static func withQueue<T>(_ stateDir: StateDirectory, doing consequence: String, _ body: (MissionQueue) throws -> T) throws -> T {
        let timeout = busyTimeout()
        do {
            try AtomicFile.makeDirectory(stateDir.path)
        } catch {
            throw CommandError("cannot create the state directory \(stateDir.path): \(error); \(consequence). Check the path and its permissions, or pass --state-dir.")
        }
        do {
            let q = MissionQueue(db: try Database(path: stateDir.database, busyTimeout: timeout.seconds))
            return try body(q)
        } catch let e as Database.Error where e.isBusy {
            throw CommandError("the database \(stateDir.database) is locked by another process and stayed locked past the busy timeout (\(timeout)); \(consequence). Try again; if it stays locked, find the holder with `fuser \(stateDir.database)`.", code: 75)
        } catch let e as Database.Error {
            throw CommandError("\(e); \(consequence).")
        }
    }

    /// A mission for a repository nobody added is refused (exit 2), never queued to wait forever.
    static func refusingUnknownWorkspace<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as WorkspaceError { throw CommandError("\(e); the mission was not added", code: 2) }
    }

    static func busyTimeout() -> TimeSpan {
        if let text = ProcessInfo.processInfo.environment["VIGIL_BUSY_TIMEOUT"], let t = TimeSpan.parse(text), t.nanoseconds >= 0 { return t }
        return .seconds(5)
    }

    static func missionID(_ positional: [String], _ verb: String) throws -> Int64 {
        guard positional.count == 1 else {
            throw UsageError("mission \(verb) needs one mission id (see vigil mission list)")
        }
        guard let id = Int64(positional[0]), id > 0 else {
            throw UsageError("\(positional[0].debugDescription) is not a mission id (a positive number; see vigil mission list)")
        }
        return id
    }

    /// - Parameter checkpoints: list its checkpoints too (`show --json`; not for every row of `list`).
    static func json(_ m: Mission, _ view: MissionQueue.LockView, _ stateDir: StateDirectory, checkpoints: Bool = false) -> JSONValue {
        func date(_ d: Date?) -> JSONValue { d.map { .string(Clock.iso($0)) } ?? .null }
        var o: [String: JSONValue] = [
            "id": .int(m.id),
            "state": .string(view.state(of: m).rawValue),
            "attempts": .int(Int64(m.attempts)),
            "max_attempts": .int(Int64(m.maxAttempts)),
            "exit_code": m.exitCode.map { .int(Int64($0)) } ?? .null,
            "signal": m.signal.map { .int(Int64($0)) } ?? .null,
            "reason": m.reason.map { .string($0) } ?? .null,
            "output": .string(MissionPaths(stateDir: stateDir, id: m.id).output),
            "lock": m.lockKey.map { .string($0) } ?? .null,
            "argv": .array(m.argv.map { .string($0) }),
            "cwd": .string(m.cwd),
            "cancel_requested": .bool(m.cancelRequested),
            "let_daemons_go": .bool(m.letDaemonsGo),
            "timeout_s": m.timeout.map { .double($0.seconds) } ?? .null,
            "at_most_once": .bool(m.atMostOnce),
            "retries": .int(Int64(m.retries)), "retried": .int(Int64(m.retried)),
            "retry_at": m.retryAt.map { .string(Clock.iso($0)) } ?? .null,
            "silence_limit_s": m.silenceLimit.map { .double($0.seconds) } ?? .null,
            "shim_pid": m.shim.map { .int(Int64($0.identity.pid)) } ?? .null,
            "queued_by": m.queuedBy.map { .string($0) } ?? .null,
            "workspace": m.workspace.map { .string($0) } ?? .null, "slot": m.slot.map { .int($0) } ?? .null,
            "created": date(m.createdAt),
            "started": date(m.startedAt),
            "finished": date(m.finishedAt),
        ]
        if checkpoints {
            o["checkpoints"] = .array(CheckpointStore(stateDir: stateDir, mission: m.id).list().map { c in
                .object(["seq": .int(Int64(c.seq)), "size": c.meta.map { .int(Int64($0.size)) } ?? .null,
                         "attempt": c.meta.map { .int(Int64($0.attempt)) } ?? .null, "saved": c.meta.map { .string($0.saved) } ?? .null,
                         "path": .string(c.data), "ok": .bool(c.problem == nil)])
            })
        }
        return .object(o)
    }

    static func row(_ cells: String...) -> String {
        let widths = [6, 11, 9, 5, 14]
        var line = ""
        for (i, c) in cells.enumerated() {
            line += i < widths.count ? c.padded(toLength: max(widths[i], c.count + 1)) : c
        }
        return line
    }

    /// argv for people: words quoted when they hold anything a shell would read (display only;
    /// missions never pass through a shell).
    static func display(_ argv: [String]) -> String {
        argv.map { word in
            let plain = !word.isEmpty && word.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:@%+,".contains($0) }
            return plain ? word : "'" + word.replacing("'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }

    /// Copies the output file from `offset` to stdout, control bytes escaped
    /// (`MissionOutput.escapeForTerminal`); returns the new offset.
    static func copyOutput(_ path: String, from offset: Int, carry: inout [UInt8]) -> Int {
        // Through `StateSlot`: a FIFO or symlink in its place is not opened (docs/operator-guide.md, "Bad input").
        guard case .file(let fd, _) = StateSlot.openForReading(path, sizeLimit: nil) else { return offset }
        let file = FileDescriptor(rawValue: fd)
        defer { file.close() }
        var pos = offset
        // To the end of the file (a read error ends it too), or until nobody reads stdout.
        _ = try? file.readChunks(from: offset) { chunk in
            let shown = MissionOutput.escapeForTerminal(Array(chunk), carry: &carry)
            guard shown.withUnsafeBytes({ Console.out.write($0) }) else { return false }
            pos += chunk.count
            return true
        }
        return pos
    }
}
