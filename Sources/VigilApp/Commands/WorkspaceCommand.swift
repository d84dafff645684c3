import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil workspace …`: the pool of git checkouts per repository (docs/workspaces.md).
enum WorkspaceCommand {
    static let command = Command(name: "workspace", summary: "git checkouts (slots) per repository for missions: add, list, recover, isolate", help: """
    usage: vigil workspace add-repo NAME URL [--slots N] [--branch B]
           vigil workspace add-slot NAME
           vigil workspace remove-slot SLOT [--force]
           vigil workspace list [--json]
           vigil workspace recover SLOT [--force]
           vigil workspace isolate SLOT [--reason TEXT]
           vigil workspace auto-recover [--json] [--max-allocation-hours H] [--no-recover-corrupted]
                                        [--no-clean-locks] [--force-release-long] [--fsck]

    add-repo     Records repository NAME (letters, digits, . _ -) at URL (a path, file://, git://,
                 http(s)://, anything git clone takes) and clones N slots (default 1) under
                 <state>/workspaces/NAME/. --branch: the base branch every slot is reset to
                 (default: the remote's default branch). Prints each slot as it becomes ready.
    add-slot     One more slot of NAME.
    remove-slot  Removes an available slot and its directory (--force: also one in error or
                 still cloning). Never one a mission works in.
    list         Every slot: id, repository, state (cloning, available, allocated, cleaning,
                 error), mission, since when, reason. --json: an array of objects with slot, repo,
                 path, state, mission, reason, generation, allocated_at, error_at, isolated.
    recover      Repairs a slot: checks it, cleans it (checkout, reset --hard, clean -ffdx, stale
                 git locks removed, fetch); when it is beyond repair, deletes and clones it anew.
                 --force: the slot is available even when that fails.
    isolate      Takes a slot out of use (state error, --reason TEXT): never handed to a mission
                 until recovered; auto-recover leaves it alone.
    auto-recover One conservative pass over every slot: allocations of missions that do not run
                 are cleaned and released; damaged idle slots are repaired (--no-recover-corrupted:
                 only isolated); stale git lock files in idle slots are removed (--no-clean-locks:
                 kept); slots allocated longer than --max-allocation-hours (24) are reported, and
                 with --force-release-long their missions are cancelled. --fsck: also git fsck.
                 --json: long_allocated_released, long_allocated_seen, corrupted_recovered,
                 corrupted_isolated, orphaned_locks_cleaned, errors. The runner runs it after
                 start-up recovery and every workspace-check-interval (10m).

    Missions use a slot with: vigil mission add --workspace NAME -- CMD…
    Exit codes: 0 done; 1 a git or database failure (the reason is printed); 2 bad usage.
    """, run: run)

    static func run(_ inv: Invocation) throws {
        guard let sub = inv.arguments.first else {
            throw UsageError("vigil workspace needs a subcommand: add-repo, add-slot, remove-slot, list, recover, isolate or auto-recover")
        }
        var rest = Array(inv.arguments.dropFirst())
        // The runner hands its children its git settings (they win over vigil.json).
        var timeout: TimeSpan? = nil, backoff: TimeSpan? = nil
        for (flag, target) in [("--git-timeout", 0), ("--git-backoff", 1)] {
            guard let i = rest.firstIndex(of: flag), i + 1 < rest.count else { continue }
            let d = try Arguments.duration(rest[i + 1], name: flag)
            if target == 0 { timeout = d } else { backoff = d }
            rest.removeSubrange(i...(i + 1))
        }
        // The runner's children journal as `workspace`, people's commands as `cli`.
        let child = sub == "prepare-slot" || zip(rest, rest.dropFirst()).contains { $0 == "--by" && $1 == "runner" }
        var ctx = try Context(inv.stateDir, source: child ? "workspace" : "cli")
        if let timeout { ctx.git.timeout = timeout }
        if let backoff { ctx.git.backoff = [backoff, backoff * 2, backoff * 4] }
        switch sub {
        case "add-repo": try addRepo(rest, ctx)
        case "add-slot": try addSlot(rest, ctx)
        case "remove-slot": try removeSlot(rest, ctx)
        case "list", "ls": try list(rest, ctx)
        case "recover": try recover(rest, ctx)
        case "isolate": try isolate(rest, ctx)
        case "auto-recover": try autoRecover(rest, ctx)
        case "prepare-slot": try prepareSlot(rest, ctx)
        default:
            throw UsageError("unknown workspace subcommand \(sub.debugDescription) (use add-repo, add-slot, remove-slot, list, recover, isolate or auto-recover)")
        }
    }

    /// What every subcommand needs: the database, the journal, git as configured.
    struct Context {
        let dir: StateDirectory
        let store: WorkspaceStore
        let queue: MissionQueue
        let journal: Journal
        var git: GitSettings

        init(_ dir: StateDirectory, source: String) throws {
            self.dir = dir
            let config = try Configuration.load(stateDir: dir, arguments: try Arguments([], valued: []))
            git = config.tunables.gitSettings
            queue = try MissionCommand.withQueue(dir, doing: "nothing was changed") { $0 }
            store = WorkspaceStore(db: queue.db)
            journal = Journal(path: dir.journal, source: source)
        }

        var worker: SlotWorker { SlotWorker(stateDir: dir, store: store, journal: journal, git: git) }

        /// A slot worker holding the lock may run a whole clone: wait for it that long.
        var lockWait: TimeSpan { git.timeout * 2 }
    }

    // MARK: - Subcommands

    static func addRepo(_ argv: [String], _ ctx: Context) throws {
        let args = try Arguments(argv, valued: ["slots", "branch"])
        guard args.positional.count == 2 else { throw UsageError("usage: vigil workspace add-repo NAME URL [--slots N] [--branch B]") }
        let name = args.positional[0]
        if let p = WorkspaceStore.problem(withName: name) { throw UsageError("\(name.debugDescription): \(p)") }
        let url = absoluteURL(args.positional[1])
        guard !url.isEmpty, !url.hasPrefix("-"), !url.contains("\n") else {
            throw UsageError("\(args.positional[1].debugDescription) is not a repository URL (a URL never starts with '-')")
        }
        let slots = try args.int("slots", min: 1) ?? 1
        guard slots <= 64 else { throw UsageError("--slots \(slots): at most 64 slots at once (add more with add-slot)") }
        let branch: String
        if let b = args.value("branch") {
            guard !b.isEmpty, !b.hasPrefix("-") else { throw UsageError("--branch needs a branch name") }
            branch = b
        } else {
            do { branch = try SlotCheckout.defaultBranch(of: url, settings: ctx.git) } catch {
                throw CommandError("cannot reach \(url): \(error.reason); nothing was recorded")
            }
        }
        let ids: [Int64]
        do { ids = try ctx.store.addRepo(name: name, url: url, branch: branch, slots: slots) } catch let e as WorkspaceError {
            throw CommandError(e.description, code: 2)
        }
        ctx.journal.append(.workspaceRepoAdded, ["repo": .string(name), "url": .string(url), "branch": .string(branch), "slots": .int(Int64(slots))])
        printOut("repository \(name) recorded: \(url), branch \(branch), \(slots) slot\(slots == 1 ? "" : "s")")
        try prepareNew(ids, ctx)
    }

    static func addSlot(_ argv: [String], _ ctx: Context) throws {
        let args = try Arguments(argv, valued: [])
        guard args.positional.count == 1 else { throw UsageError("usage: vigil workspace add-slot NAME") }
        let id: Int64
        do { id = try ctx.store.addSlot(repo: args.positional[0]) } catch let e as WorkspaceError { throw CommandError(e.description, code: 2) }
        ctx.journal.append(.workspaceSlotAdded, ["slot": .int(id), "repo": .string(args.positional[0])])
        try prepareNew([id], ctx)
    }

    /// Clones fresh slots here and now (the runner would too, but the person waits for it).
    static func prepareNew(_ ids: [Int64], _ ctx: Context) throws {
        var failed = 0
        for id in ids {
            let outcome = try ctx.worker.prepare(id, generation: 0, lockWait: ctx.lockWait)
            failed += report(id, outcome, ctx) ? 0 : 1
        }
        guard failed == 0 else {
            throw CommandError("\(failed) of \(ids.count) slot\(ids.count == 1 ? "" : "s") could not be cloned (vigil workspace recover SLOT tries again)")
        }
    }

    /// Prints how a slot's preparation ended; true when it is available.
    @discardableResult
    static func report(_ id: Int64, _ outcome: SlotWorker.Outcome, _ ctx: Context) -> Bool {
        let path = (try? ctx.store.slot(id))?.map { $0.path(in: ctx.dir) } ?? "?"
        switch outcome {
        case .available:
            printOut("slot \(id): available at \(path)")
            return true
        case .error(let reason):
            printOut("slot \(id): error: \(reason)")
        case .busy:
            printOut("slot \(id): another worker holds it (\(path).lock); see vigil workspace list")
        case .stale(let phase):
            printOut("slot \(id): moved on meanwhile (now \(phase?.rawValue ?? "gone"))")
            return phase == .available
        }
        return false
    }

    static func removeSlot(_ argv: [String], _ ctx: Context) throws {
        let args = try Arguments(argv, valued: [], booleans: ["force"])
        let id = try slotID(args.positional, "remove-slot SLOT [--force]")
        switch try ctx.store.remove(id: id, force: args.has("force")) {
        case .notFound: throw CommandError("no slot \(id) (vigil workspace list)")
        case .refused(let phase):
            let hint = phase == .allocated ? "a mission works in it; cancel the mission first" : phase == .cleaning ? "it is being cleaned; try again when it is available" : "--force removes a slot in error or still cloning"
            throw CommandError("slot \(id) is \(phase.rawValue): not removed (\(hint))")
        case .removed(let s):
            // The row is gone: nothing hands it out. A worker may still run git in it; wait for its lock.
            let lock = try? FileLock.lock(s.lockPath(in: ctx.dir), attempts: max(1, Int(ctx.lockWait.milliseconds / 20)))
            let path = s.path(in: ctx.dir)
            try? FileManager.default.removeItem(atPath: path)
            FileSystem.unlink(s.lockPath(in: ctx.dir))
            lock?.release()
            try? AtomicFile.fsyncDirectory(ctx.dir.workspaceRepository(s.repo))
            ctx.journal.append(.workspaceSlotRemoved, ["slot": .int(id), "repo": .string(s.repo), "path": .string(path)])
            printOut("slot \(id) (\(s.repo)) removed")
        }
    }

    static func list(_ argv: [String], _ ctx: Context) throws {
        let args = try Arguments(argv, valued: [], booleans: ["json"])
        guard args.positional.isEmpty else { throw UsageError("workspace list takes no arguments") }
        let slots = try ctx.store.slots()
        if args.has("json") {
            printOut(JSONValue.array(slots.map { json($0, ctx.dir) }).jsonString)
            return
        }
        let repos = try ctx.store.repos()
        if repos.isEmpty {
            printOut("no workspace repositories (add one with: vigil workspace add-repo NAME URL --slots N)")
            return
        }
        for r in repos {
            printOut("\(r.name): \(r.url) (branch \(r.branch))")
            for s in slots where s.repo == r.name {
                var line = "  slot \(s.id)  \(s.record.phase.rawValue)"
                if let m = s.record.mission { line += "  mission \(m)" }
                if let at = s.record.allocatedAt { line += "  since \(Clock.iso(Date(timeIntervalSince1970: at)))" }
                if s.record.isolatedByPerson { line += "  isolated" }
                if let why = s.record.reason { line += "  — \(why)" }
                printOut(line)
            }
        }
    }

    static func json(_ s: WorkspaceSlot, _ dir: StateDirectory) -> JSONValue {
        let r = s.record
        return .object([
            "slot": .int(s.id), "repo": .string(s.repo), "path": .string(s.path(in: dir)), "state": .string(r.phase.rawValue),
            "mission": r.mission.map { .int($0) } ?? .null, "reason": r.reason.map { .string($0) } ?? .null,
            "generation": .int(Int64(r.generation)), "isolated": .bool(r.isolatedByPerson),
            "allocated_at": r.allocatedAt.map { .string(Clock.iso(Date(timeIntervalSince1970: $0))) } ?? .null,
            "error_at": r.errorAt.map { .string(Clock.iso(Date(timeIntervalSince1970: $0))) } ?? .null,
        ])
    }

    static func recover(_ argv: [String], _ ctx: Context) throws {
        let args = try Arguments(argv, valued: [], booleans: ["force"])
        let id = try slotID(args.positional, "recover SLOT [--force]")
        guard let s = try ctx.store.slot(id) else { throw CommandError("no slot \(id) (vigil workspace list)") }
        let force = args.has("force")
        guard let r = try ctx.store.apply(.recover(force: force), to: id) else {
            throw CommandError("slot \(id) is \(s.record.phase.rawValue)\(s.record.mission.map { " (mission \($0))" } ?? ""): nothing to recover; a slot a mission works in is cleaned when the mission ends")
        }
        ctx.journal.append(.workspaceSlotRecover, ["slot": .int(id), "repo": .string(s.repo), "reason": .string(s.record.reason ?? ""), "force": .bool(force), "by": "cli"])
        let outcome = try ctx.worker.prepare(id, generation: r.after.record.generation, lockWait: ctx.lockWait)
        guard report(id, outcome, ctx) else { throw CommandError("slot \(id) was not recovered") }
    }

    static func isolate(_ argv: [String], _ ctx: Context) throws {
        let args = try Arguments(argv, valued: ["reason"])
        let id = try slotID(args.positional, "isolate SLOT [--reason TEXT]")
        guard let s = try ctx.store.slot(id) else { throw CommandError("no slot \(id) (vigil workspace list)") }
        let reason = args.value("reason").map { String($0.prefix(500)) } ?? "isolated by an operator"
        guard try ctx.store.apply(.isolate(reason: reason, byPerson: true), to: id) != nil else {
            throw CommandError("slot \(id) is allocated to mission \(s.record.mission ?? 0): not isolated (cancel the mission first; its slot is cleaned when it ends)")
        }
        ctx.journal.append(.workspaceSlotIsolated, ["slot": .int(id), "repo": .string(s.repo), "reason": .string(reason), "by": "cli"])
        printOut("slot \(id) isolated: never handed out until `vigil workspace recover \(id)`")
    }

    static func autoRecover(_ argv: [String], _ ctx: Context) throws {
        let args = try Arguments(argv, valued: ["max-allocation-hours", "by"],
                                 booleans: ["json", "no-recover-corrupted", "no-clean-locks", "force-release-long", "fsck"])
        guard args.positional.isEmpty else { throw UsageError("workspace auto-recover takes no arguments") }
        var options = AutoRecoverOptions()
        if let h = args.value("max-allocation-hours") {
            guard let hours = Double(h), hours > 0, hours.isFinite else { throw UsageError("--max-allocation-hours \(h.debugDescription): a positive number of hours") }
            options.maxAllocation = .seconds(hours * 3600)
        }
        options.recoverCorrupted = !args.has("no-recover-corrupted")
        options.cleanLocks = !args.has("no-clean-locks")
        options.forceReleaseLong = args.has("force-release-long")
        let by = args.value("by") == "runner" ? "runner" : "cli"
        let check = WorkspaceCheck(stateDir: ctx.dir, store: ctx.store, queue: ctx.queue, journal: ctx.journal, git: ctx.git)
        let report = try check.run(options: options, fsck: args.has("fsck"), by: by)
        if args.has("json") {
            var fields = report.fields
            fields["text"] = .string(report.text)
            printOut(JSONValue.object(fields).jsonString)
        } else {
            printOut(report.foundAnything ? report.text : "Workspaces: \(report.slots) slot\(report.slots == 1 ? "" : "s") looked at, nothing found.")
        }
    }

    /// `prepare-slot SLOT GENERATION`: internal, the runner's worker child.
    static func prepareSlot(_ argv: [String], _ ctx: Context) throws {
        let args = try Arguments(argv, valued: [])
        guard args.positional.count == 2, let id = Int64(args.positional[0]), let generation = Int(args.positional[1]) else {
            throw UsageError("usage: vigil workspace prepare-slot SLOT GENERATION (started by the runner)")
        }
        // Nothing printed: the outcome is journaled (workspace-slot-ready / -failed), and what the
        // runner's children print goes to a log that would otherwise grow with every mission.
        _ = try ctx.worker.prepare(id, generation: generation)
    }

    // MARK: - Helpers

    static func slotID(_ positional: [String], _ usage: String) throws -> Int64 {
        guard positional.count == 1, let id = Int64(positional[0].trimming({ $0 == "#" })), id > 0 else {
            throw UsageError("usage: vigil workspace \(usage) (SLOT: a slot id from vigil workspace list)")
        }
        return id
    }

    /// A local path is stored absolute (workers do not run in the caller's directory); URLs
    /// and `host:path` are kept as given.
    static func absoluteURL(_ url: String) -> String {
        if url.contains("://") || url.hasPrefix("/") { return url }
        if FileSystem.exists(url) { return Path.standardized(FileManager.default.currentDirectoryPath + "/" + url) }
        return url
    }
}
