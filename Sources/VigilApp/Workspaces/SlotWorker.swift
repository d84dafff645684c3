import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// Makes one slot ready: clones a `cloning` slot, cleans a `cleaning` one, and records the
/// result for the generation it was asked for (docs/workspaces.md, "Releasing a slot"). It
/// holds the slot's lock (`workspaces/REPO/ID.lock`) while git runs, so two workers never run
/// git in one directory; a report for a generation that is no longer the slot's changes
/// nothing. A mission's shim holds the same lock while the mission runs in the slot. Run by `vigil workspace prepare-slot` (the runner's child) and inline by the
/// commands that make slots (`add-repo`, `add-slot`, `recover`, `auto-recover`).
struct SlotWorker {
    let stateDir: StateDirectory
    let store: WorkspaceStore
    let journal: Journal
    var git = GitSettings()

    enum Outcome: Equatable {
        /// Clean (or cloned) and recorded available.
        case available
        /// Recorded `error` with this reason.
        case error(String)
        /// The slot is not in the generation and phase asked for (someone else moved it on).
        case stale(SlotPhase?)
        /// Another worker holds the slot's lock.
        case busy
    }

    /// Prepares slot `id` for `generation`. `lockWait`: how long to wait for a worker that holds
    /// the lock (zero: give up at once, the runner's child does).
    func prepare(_ id: Int64, generation: Int, lockWait: TimeSpan = .zero) throws -> Outcome {
        guard let first = try store.slot(id) else { return .stale(nil) }
        try stateDir.makeDirectory(stateDir.workspaceRepository(first.repo))
        // At least 100 ms: a prober (`FileLock.isFree`, a survey) may hold the lock for a moment.
        guard let lock = try FileLock.lock(first.lockPath(in: stateDir), attempts: max(5, Int(lockWait.milliseconds / 20))) else { return .busy }
        defer { lock.release() }
        var generation = generation
        while true {
            // Read again under the lock: the slot may have moved on while we waited.
            guard let s = try store.slot(id) else { return .stale(nil) }
            guard s.record.generation == generation, s.record.phase == .cleaning || s.record.phase == .cloning else { return .stale(s.record.phase) }
            guard let repo = try store.repo(s.repo) else { return .stale(s.record.phase) }
            let checkout = SlotCheckout(path: s.path(in: stateDir), url: repo.url, branch: repo.branch, settings: git)
            let what = s.record.phase == .cloning ? "clone" : "clean"
            let started = Clock.boot()
            let event: SlotEvent
            var failure: SlotFailure? = nil
            do {
                if s.record.phase == .cloning {
                    try checkout.cloneFresh()
                    event = .cloned(generation: generation)
                } else {
                    try checkout.clean()
                    event = .cleaned(generation: generation)
                }
            } catch {
                failure = error
                event = s.record.phase == .cloning ? .cloneFailed(generation: generation, reason: error.reason)
                    : .cleanFailed(generation: generation, reason: error.reason, reclone: error.reclone)
            }
            guard let r = try store.apply(event, to: id) else {
                return .stale(try store.slot(id)?.record.phase)
            }
            var fields: [String: JSONValue] = ["slot": .int(id), "repo": .string(s.repo), "what": .string(what),
                                               "generation": .int(Int64(r.after.record.generation)),
                                               "ms": .int(Int64((Clock.boot() - started).milliseconds))]
            if let failure {
                fields["reason"] = .string(failure.reason)
                fields["state"] = .string(r.after.record.phase.rawValue)
                journal.append(.workspaceSlotFailed, fields)
            } else {
                journal.append(.workspaceSlotReady, fields)
            }
            if let next = r.actions.compactMap({ a -> Int? in if case .startClone(let g) = a { return g }; return nil }).first {
                generation = next // beyond repair: cloned anew, still under our lock
                continue
            }
            if r.after.record.phase == .available {
                MissionRunner.poke(stateDir, journal: journal) // a mission may be waiting for it
                return .available
            }
            return .error(r.after.record.reason ?? failure?.reason ?? "unknown")
        }
    }
}
