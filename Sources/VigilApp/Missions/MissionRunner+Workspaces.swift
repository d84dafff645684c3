import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The runner's part of the workspaces (docs/workspaces.md): it journals what claims and ends
/// did to slots, starts a worker child for every slot being cleaned or cloned that nobody works
/// on, and runs the periodic auto-recover pass as a child. It never runs git itself: a slow
/// fetch never holds up the loop.
extension MissionRunner {
    /// A worker child (`vigil workspace prepare-slot ID GEN`) or the auto-recover pass.
    final class WorkspaceChild {
        let identity: ProcessIdentity
        let pidfd: PidFD?
        init(identity: ProcessIdentity, pidfd: PidFD?) {
            self.identity = identity
            self.pidfd = pidfd
        }
        var hasExited: Bool { pidfd?.hasExited ?? true }
    }

    /// What the runner keeps about workspaces between ticks.
    struct WorkspaceTending {
        var workers: [Int64: WorkspaceChild] = [:]
        /// A worker that ended without moving its slot on (killed, database busy) is started
        /// again for that generation only after this (doubling from 5 s to 5 min).
        var retry: [Int64: (generation: Int, notBefore: BootInstant, failures: Int)] = [:]
        var scanNeeded = true
        var lastScan: BootInstant?
        var check: WorkspaceChild?
        var nextCheck: BootInstant?
        var lastFsck: BootInstant?
        /// The last auto-recover message sent to chat: the same findings are not sent again.
        var lastCheckText: String?
    }

    static let workspaceRescan = TimeSpan.seconds(5)

    /// Journals the slot changes of the transactions just committed and, when a slot was
    /// released, looks for work.
    func journalSlotChanges(_ q: MissionQueue) {
        for c in q.takeSlotChanges() {
            var fields: [String: JSONValue] = ["slot": .int(c.slot), "repo": .string(c.repo), "generation": .int(Int64(c.generation))]
            if let m = c.mission { fields["mission"] = .int(m) }
            journal.append(c.to == .allocated ? .workspaceSlotAllocated : .workspaceSlotReleased, fields)
            if c.to != .allocated { workspaces.scanNeeded = true }
        }
    }

    /// Start-up recovery's slot step (after the missions' ended attempts, which released
    /// theirs, and after orphans, where an adopted shim took its slot back): a slot allocated
    /// to a mission that is not running goes to the cleaner. Then workers are started.
    func recoverSlots(_ q: MissionQueue) throws -> Int {
        let store = WorkspaceStore(db: q.db)
        var n = 0
        for s in try store.slots() where s.record.phase == .allocated {
            if let m = try store.releaseIfOrphaned(s.id) {
                journal.append(.workspaceSlotOrphaned, ["slot": .int(s.id), "repo": .string(s.repo), "mission": .int(m), "by": "runner"])
                n += 1
            }
        }
        workspaces.scanNeeded = true
        workspaces.nextCheck = Clock.boot() // a conservative pass right after recovery
        return n
    }

    /// At the start of a tick: workers that ended (their slot may be free: claim).
    func reapWorkspaceWorkers() {
        for (id, w) in workspaces.workers where w.hasExited {
            _ = w.pidfd?.reapIfChild()
            workspaces.workers[id] = nil
            workspaces.scanNeeded = true
            claimNeeded = true
        }
    }

    /// At the end of a tick: journal what the tick did to slots, start the missing workers,
    /// run the periodic pass.
    func tendWorkspaces(_ q: MissionQueue, now: BootInstant) {
        journalSlotChanges(q)
        if workspaces.scanNeeded || workspaces.lastScan.map({ now - $0 >= MissionRunner.workspaceRescan }) ?? true {
            workspaces.scanNeeded = false
            workspaces.lastScan = now
            startWorkers(WorkspaceStore(db: q.db), now: now)
        }
        tendCheck(q, now: now)
    }

    private func startWorkers(_ store: WorkspaceStore, now: BootInstant) {
        guard let slots = try? store.needingWork() else { return }
        workspaces.retry = workspaces.retry.filter { id, r in slots.contains { $0.id == id && $0.record.generation == r.generation } }
        for s in slots where workspaces.workers[s.id] == nil {
            let g = s.record.generation
            if let r = workspaces.retry[s.id], r.generation == g, now < r.notBefore { continue }
            // Someone works on it (a CLI recover, a worker of an earlier runner): its report comes.
            guard FileLock.isFree(s.lockPath(in: stateDir)) else { continue }
            guard let child = spawnWorkspaceChild(["workspace", "prepare-slot", "\(s.id)", "\(g)"]) else { continue }
            workspaces.workers[s.id] = child
            let failures = (workspaces.retry[s.id]?.generation == g ? workspaces.retry[s.id]!.failures : 0) + 1
            let wait = TimeSpan.seconds(min(300, 5 * Double(1 << min(failures - 1, 16))))
            workspaces.retry[s.id] = (g, now + wait, failures)
            journal.append(.workspaceWorkerStarted, ["slot": .int(s.id), "repo": .string(s.repo), "generation": .int(Int64(g)),
                                                       "pid": .int(Int64(child.identity.pid)), "what": .string(s.record.phase == .cloning ? "clone" : "clean")])
        }
    }

    /// The periodic conservative pass, as a child (`vigil workspace auto-recover --json --by
    /// runner`, with `--fsck` every `workspace-fsck-interval`); chat hears of it only when it
    /// found something new.
    private func tendCheck(_ q: MissionQueue, now: BootInstant) {
        if let c = workspaces.check {
            guard c.hasExited else { return }
            _ = c.pidfd?.reapIfChild()
            workspaces.check = nil
            claimNeeded = true
            if case .bytes(let raw) = StateSlot.read(stateDir.workspaceCheckOutput),
               let line = String(decoding: raw, as: UTF8.self).split(separator: "\n").last,
               case .object(let o)? = JSONValue.parse(Data(line.utf8)), let text = o["text"]?.stringValue {
                if !text.isEmpty && text != workspaces.lastCheckText {
                    notify("workspace-check-\(Clock.bootID)-\(ProcessIdentity.current.pid)-\(c.identity.pid)-\(c.identity.startTicks)", text)
                }
                workspaces.lastCheckText = text
            }
            return
        }
        guard let due = workspaces.nextCheck, now >= due else { return }
        workspaces.nextCheck = now + settings.workspaceCheckInterval
        guard let counts = try? WorkspaceStore(db: q.db).counts(), !counts.isEmpty else { return }
        let fsck = workspaces.lastFsck.map { now - $0 >= settings.workspaceFsckInterval } ?? false
        if fsck || workspaces.lastFsck == nil { workspaces.lastFsck = now } // the first fsck comes one interval after start
        FileSystem.unlink(stateDir.workspaceCheckOutput)
        var args = ["workspace", "auto-recover", "--json", "--by", "runner"]
        if fsck { args.append("--fsck") }
        workspaces.check = spawnWorkspaceChild(args, output: stateDir.workspaceCheckOutput)
    }

    private func spawnWorkspaceChild(_ args: [String], output: String? = nil) -> WorkspaceChild? {
        var options = Spawner.Options()
        options.newSession = true
        options.workingDirectory = "/"
        options.outputPath = output ?? stateDir.workspaceWorkerLog
        do {
            try stateDir.makeDirectory(stateDir.workspaces)
            let id = try Spawner.spawn([shimExecutable, "--state-dir", stateDir.path] + args + gitFlags, options)
            return WorkspaceChild(identity: id, pidfd: id.openPidFD())
        } catch {
            journal.append(.workspaceWorkerFailed, ["what": .string(args.joined(separator: " ")), "error": .string("\(error)")])
            return nil
        }
    }

    /// The runner's git settings, handed to its children (flags win over their vigil.json).
    private var gitFlags: [String] {
        ["--git-timeout", settings.git.timeout.decimalSeconds, "--git-backoff", (settings.git.backoff.first ?? .seconds(1)).decimalSeconds]
    }

    /// Pidfds of the workspace children: readable when one ended.
    var workspaceWakeDescriptors: [Int32] {
        (workspaces.workers.values.compactMap { $0.pidfd?.fd }) + (workspaces.check?.pidfd.map { [$0.fd] } ?? [])
    }

    /// The next periodic pass or rescan.
    var workspaceDeadline: BootInstant? {
        var next = workspaces.nextCheck
        if !workspaces.retry.isEmpty, let last = workspaces.lastScan {
            let rescan = last + MissionRunner.workspaceRescan
            next = next.map { min($0, rescan) } ?? rescan
        }
        return next
    }
}
