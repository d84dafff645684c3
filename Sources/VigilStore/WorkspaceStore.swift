import FoundationEssentials
import VigilCore
import VigilSystem

/// A repository of the workspace pool (`workspace_repos`).
public struct WorkspaceRepo: Sendable, Equatable {
    public var name: String
    public var url: String
    /// The base branch every slot is reset to.
    public var branch: String
    public var createdAt: Date
}

/// One slot (`workspace_slots`): a full clone of its repository at
/// `StateDirectory.workspaceSlot(repo:id:)`, and its `SlotRecord`.
public struct WorkspaceSlot: Sendable, Equatable {
    public var id: Int64
    public var repo: String
    public var record: SlotRecord
    public var changedAt: Date

    public func path(in dir: StateDirectory) -> String { dir.workspaceSlot(repo: repo, id: id) }
    public func lockPath(in dir: StateDirectory) -> String { dir.workspaceSlotLock(repo: repo, id: id) }
}

/// What a committed transaction did to a slot, for the journal (`MissionQueue.takeSlotEvents`).
public struct SlotChange: Sendable, Equatable {
    public var slot: Int64
    public var repo: String
    public var mission: Int64?
    public var from: SlotPhase
    public var to: SlotPhase
    public var generation: Int

    public init(slot: Int64, repo: String, mission: Int64?, from: SlotPhase, to: SlotPhase, generation: Int) {
        self.slot = slot
        self.repo = repo
        self.mission = mission
        self.from = from
        self.to = to
        self.generation = generation
    }
}

public struct WorkspaceError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Typed access to the workspace tables (docs/workspaces.md). Every change goes through
/// `WorkspaceSlots.apply` and is stored only `WHERE id = ? AND generation = ?` (the generation
/// the transition was computed from): a writer with a stale view changes nothing. The claim and
/// the end of a mission change slots inside `MissionQueue`'s transactions (the `…Locked` functions).
public final class WorkspaceStore {
    public let db: Database

    public init(db: Database) { self.db = db }

    /// A repository name is one path component people can type: letters, digits, `.`, `_`, `-`,
    /// not starting with `.` or `-`, at most 64 characters. Nil when fine, else why not.
    public static func problem(withName name: String) -> String? {
        if name.isEmpty || name.utf8.count > 64 { return "a repository name has 1 to 64 characters" }
        let ok = name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0) }
        if !ok { return "a repository name has only letters, digits, '.', '_' and '-'" }
        if name.hasPrefix(".") || name.hasPrefix("-") { return "a repository name does not start with '.' or '-'" }
        return nil
    }

    static let slotColumns = "id, repo, state, generation, mission_id, allocated_at, error_at, reason, isolated_by_person, force_available, changed_at"

    static func decodeSlot(_ r: Database.Row) -> WorkspaceSlot {
        var rec = SlotRecord(phase: SlotPhase(rawValue: r[2].text ?? "") ?? .error)
        rec.generation = Int(r[3].int ?? 0)
        rec.mission = r[4].int
        rec.allocatedAt = r[5].double
        rec.errorAt = r[6].double
        rec.reason = r[7].text
        rec.isolatedByPerson = (r[8].int ?? 0) != 0
        rec.forceAvailable = (r[9].int ?? 0) != 0
        return WorkspaceSlot(id: r[0].int ?? 0, repo: r[1].text ?? "", record: rec, changedAt: Date(timeIntervalSince1970: r[10].double ?? 0))
    }

    static func decodeRepo(_ r: Database.Row) -> WorkspaceRepo {
        WorkspaceRepo(name: r[0].text ?? "", url: r[1].text ?? "", branch: r[2].text ?? "", createdAt: Date(timeIntervalSince1970: r[3].double ?? 0))
    }

    // MARK: - Reading

    public func repo(_ name: String) throws -> WorkspaceRepo? {
        try db.query("SELECT name, url, branch, created_at FROM workspace_repos WHERE name = ?", [.text(name)]).first.map(WorkspaceStore.decodeRepo)
    }

    public func repos() throws -> [WorkspaceRepo] {
        try db.query("SELECT name, url, branch, created_at FROM workspace_repos ORDER BY name").map(WorkspaceStore.decodeRepo)
    }

    public func slot(_ id: Int64) throws -> WorkspaceSlot? {
        try WorkspaceStore.slotLocked(db, id)
    }

    /// Every slot (of `repo`), by id.
    public func slots(repo: String? = nil) throws -> [WorkspaceSlot] {
        if let repo {
            return try db.query("SELECT \(WorkspaceStore.slotColumns) FROM workspace_slots WHERE repo = ? ORDER BY id", [.text(repo)]).map(WorkspaceStore.decodeSlot)
        }
        return try db.query("SELECT \(WorkspaceStore.slotColumns) FROM workspace_slots ORDER BY id").map(WorkspaceStore.decodeSlot)
    }

    /// Slots a worker has to make ready: `cleaning` and `cloning`.
    public func needingWork() throws -> [WorkspaceSlot] {
        try db.query("SELECT \(WorkspaceStore.slotColumns) FROM workspace_slots WHERE state IN ('cleaning', 'cloning') ORDER BY id").map(WorkspaceStore.decodeSlot)
    }

    /// Slot counts per state.
    public func counts() throws -> [SlotPhase: Int] {
        var out: [SlotPhase: Int] = [:]
        for r in try db.query("SELECT state, count(*) FROM workspace_slots GROUP BY state") {
            if let p = r[0].text.flatMap(SlotPhase.init(rawValue:)) { out[p] = Int(r[1].int ?? 0) }
        }
        return out
    }

    // MARK: - Changing

    /// Records a repository and `slots` slots of it, all `cloning` (a worker clones them).
    /// Returns the new slots' ids. Throws when the name is taken or not a valid name.
    public func addRepo(name: String, url: String, branch: String, slots: Int) throws -> [Int64] {
        if let p = WorkspaceStore.problem(withName: name) { throw WorkspaceError(p) }
        return try db.write {
            guard try db.query("SELECT 1 FROM workspace_repos WHERE name = ?", [.text(name)]).isEmpty else {
                throw WorkspaceError("a repository named \(name) exists already (vigil workspace list)")
            }
            try db.execute("INSERT INTO workspace_repos(name, url, branch, created_at) VALUES (?, ?, ?, ?)",
                           [.text(name), .text(url), .text(branch), MissionQueue.now()])
            return try (0..<max(0, slots)).map { _ in try WorkspaceStore.insertSlotLocked(db, repo: name) }
        }
    }

    /// One more slot of `repo` (`cloning`).
    public func addSlot(repo: String) throws -> Int64 {
        try db.write {
            guard try db.query("SELECT 1 FROM workspace_repos WHERE name = ?", [.text(repo)]).first != nil else {
                throw WorkspaceError("no repository named \(repo) (vigil workspace list)")
            }
            return try WorkspaceStore.insertSlotLocked(db, repo: repo)
        }
    }

    public enum RemoveOutcome: Equatable, Sendable {
        case removed(WorkspaceSlot)
        /// Only an available slot (or, with force, one in `error` or `cloning`) is removed.
        case refused(SlotPhase)
        case notFound
    }

    /// Deletes the row of an available slot (with `force` also one in `error` or `cloning`);
    /// the caller then removes its directory. A slot allocated to a mission or being cleaned is
    /// never removed.
    public func remove(id: Int64, force: Bool) throws -> RemoveOutcome {
        try db.write {
            guard let s = try WorkspaceStore.slotLocked(db, id) else { return .notFound }
            let removable: Set<SlotPhase> = force ? [.available, .error, .cloning] : [.available]
            guard removable.contains(s.record.phase) else { return .refused(s.record.phase) }
            try db.execute("DELETE FROM workspace_slots WHERE id = ? AND generation = ?", [.int(id), .int(Int64(s.record.generation))])
            return .removed(s)
        }
    }

    /// Applies `event` to slot `id` in its own transaction. Nil when it does not apply (a stale
    /// report, a slot gone); otherwise the slot before and after, and what to do.
    @discardableResult
    public func apply(_ event: SlotEvent, to id: Int64) throws -> (before: WorkspaceSlot, after: WorkspaceSlot, actions: [SlotAction])? {
        try db.write { try WorkspaceStore.applyLocked(db, event, to: id) }
    }

    /// Sends slot `id` to the cleaner when it is allocated to a mission that is not running,
    /// judged inside the transaction (a survey's view of "running" may be older than a claim
    /// that just handed the slot to a live mission). Returns the mission it was allocated to.
    public func releaseIfOrphaned(_ id: Int64) throws -> Int64? {
        try db.write {
            guard let s = try WorkspaceStore.slotLocked(db, id), s.record.phase == .allocated, let m = s.record.mission,
                  try db.query("SELECT 1 FROM missions WHERE id = ? AND state = 'running'", [.int(m)]).isEmpty,
                  try WorkspaceStore.applyLocked(db, .orphaned, to: id) != nil else { return nil }
            return m
        }
    }

    // MARK: - Inside a write transaction (also MissionQueue's)

    static func slotLocked(_ db: Database, _ id: Int64) throws -> WorkspaceSlot? {
        try db.query("SELECT \(slotColumns) FROM workspace_slots WHERE id = ?", [.int(id)]).first.map(decodeSlot)
    }

    static func insertSlotLocked(_ db: Database, repo: String) throws -> Int64 {
        try db.execute("INSERT INTO workspace_slots(repo, state, generation, created_at, changed_at) VALUES (?, 'cloning', 0, ?, ?)",
                       [.text(repo), MissionQueue.now(), MissionQueue.now()])
        return db.lastInsertRowID
    }

    /// Applies `event` and stores the new record, guarded by the old generation.
    static func applyLocked(_ db: Database, _ event: SlotEvent, to id: Int64) throws -> (before: WorkspaceSlot, after: WorkspaceSlot, actions: [SlotAction])? {
        guard let s = try slotLocked(db, id),
              let t = WorkspaceSlots.apply(event, to: s.record, now: Clock.wall().timeIntervalSince1970) else { return nil }
        let n = t.record
        try db.execute("""
            UPDATE workspace_slots SET state = ?, generation = ?, mission_id = ?, allocated_at = ?, error_at = ?, reason = ?,
                isolated_by_person = ?, force_available = ?, changed_at = ?
            WHERE id = ? AND generation = ?
            """, [.text(n.phase.rawValue), .int(Int64(n.generation)), n.mission.map { .int($0) } ?? .null,
                  n.allocatedAt.map { .double($0) } ?? .null, n.errorAt.map { .double($0) } ?? .null, n.reason.map { .text($0) } ?? .null,
                  .int(n.isolatedByPerson ? 1 : 0), .int(n.forceAvailable ? 1 : 0), MissionQueue.now(),
                  .int(id), .int(Int64(s.record.generation))])
        guard db.changes == 1 else { return nil }
        var after = s
        after.record = n
        after.changedAt = Clock.wall()
        return (s, after, t.actions)
    }

    /// Available slots per repository: the claim's capacity.
    static func capacityLocked(_ db: Database) throws -> [String: Int] {
        var out: [String: Int] = [:]
        for r in try db.query("SELECT repo, count(*) FROM workspace_slots WHERE state = 'available' GROUP BY repo") {
            if let repo = r[0].text { out[repo] = Int(r[1].int ?? 0) }
        }
        return out
    }

    /// Hands the lowest available slot of `repo` to `mission`, or nil when none is available.
    static func allocateLocked(_ db: Database, repo: String, mission: Int64) throws -> SlotChange? {
        guard let id = try db.query("SELECT id FROM workspace_slots WHERE repo = ? AND state = 'available' ORDER BY id LIMIT 1", [.text(repo)]).first?[0].int,
              let r = try applyLocked(db, .allocated(mission: mission), to: id) else { return nil }
        return change(r.before, r.after, mission: mission)
    }

    /// The slot `mission` holds goes to `cleaning` (its attempt ended). Nil when it holds none.
    static func releaseLocked(_ db: Database, mission: Int64) throws -> SlotChange? {
        guard let id = try db.query("SELECT id FROM workspace_slots WHERE mission_id = ?", [.int(mission)]).first?[0].int,
              let r = try applyLocked(db, .missionEnded(mission: mission), to: id) else { return nil }
        return change(r.before, r.after, mission: mission)
    }

    static func change(_ before: WorkspaceSlot, _ after: WorkspaceSlot, mission: Int64?) -> SlotChange {
        SlotChange(slot: after.id, repo: after.repo, mission: mission, from: before.record.phase, to: after.record.phase, generation: after.record.generation)
    }
}
