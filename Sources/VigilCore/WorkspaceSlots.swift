/// The life of a workspace slot as a pure state machine, like `MissionLifecycle`: a fact about
/// the slot, its stored record and the time go in; the new record and what to do come out.
/// Nothing here touches git, the disk or the database. See docs/workspaces.md, "A slot's life".
///
public enum SlotPhase: String, Codable, Sendable, CaseIterable {
    /// A clone is to be made (or is being made) at its path.
    case cloning
    /// Clean, on the base branch, fetched: may be handed out.
    case available
    /// A mission has it.
    case allocated
    /// Its mission ended: to be made clean (or being made clean) by a cleaner.
    case cleaning
    /// Isolated by a person, or a cleanup or clone failed: never handed out.
    case error
}

/// What a slot's row says. Times are wall-clock seconds since 1970 (they must survive a reboot).
public struct SlotRecord: Equatable, Sendable {
    public var phase: SlotPhase
    /// Increased at every transition: a cleaner or clone reports with the generation it was
    /// started for, and a report for another generation is stale (changes nothing).
    public var generation: Int = 0
    public var mission: Int64?
    public var allocatedAt: Double?
    public var errorAt: Double?
    public var reason: String?
    /// In `error` because a person said so (`isolate`): auto-recover leaves it alone.
    public var isolatedByPerson = false
    /// `recover --force`: when the repair fails the slot becomes available anyway.
    public var forceAvailable = false

    public init(phase: SlotPhase = .cloning) { self.phase = phase }
}

public enum SlotEvent: Equatable, Sendable {
    /// Handed to a mission in its claim (only an available slot).
    case allocated(mission: Int64)
    /// That mission's attempt ended (in the transaction that records the end).
    case missionEnded(mission: Int64)
    /// Start-up recovery adopts a live shim of `mission` whose claim had been taken back (the
    /// slot went to `cleaning` with it): the slot is its again, unless a cleaner or another
    /// mission got there first (only from `cleaning`; the caller checks no cleaner holds it).
    case adopted(mission: Int64)
    /// Allocated to a mission that is not running (found by recovery or auto-recover).
    case orphaned
    /// The cleaner of `generation` made it clean.
    case cleaned(generation: Int)
    /// The cleaner of `generation` failed; `reclone`: the checkout is beyond repair (fsck
    /// errors, `.git` or the directory gone, another repository) and must be cloned anew.
    case cleanFailed(generation: Int, reason: String, reclone: Bool)
    case cloned(generation: Int)
    case cloneFailed(generation: Int, reason: String)
    /// `vigil workspace isolate` (a person), or auto-recover isolating a corrupted slot.
    case isolate(reason: String, byPerson: Bool)
    /// `vigil workspace recover [--force]`, or auto-recover repairing a corrupted slot.
    case recover(force: Bool)
    /// Auto-recover found an available slot damaged: repaired by a cleaner.
    case corrupted(reason: String)
}

public enum SlotAction: Equatable, Sendable {
    /// Start a cleaner for this generation (unless one holds the slot's lock already).
    case startCleaner(generation: Int)
    /// Delete the slot's directory and clone it anew, for this generation.
    case startClone(generation: Int)
}

public struct SlotTransition: Equatable, Sendable {
    public var record: SlotRecord
    public var actions: [SlotAction]
}

public enum WorkspaceSlots {
    /// The transition for `event`, or nil when the event does not apply (a stale cleaner or
    /// clone, a mission that does not hold the slot, an allocation of a slot that is not
    /// available). `now`: wall-clock seconds.
    public static func apply(_ event: SlotEvent, to r: SlotRecord, now: Double) -> SlotTransition? {
        var n = r
        n.generation = r.generation + 1
        switch (r.phase, event) {
        case (.available, .allocated(let mission)):
            n.phase = .allocated
            n.mission = mission
            n.allocatedAt = now
            n.reason = nil
            return SlotTransition(record: n, actions: [])

        case (.allocated, .missionEnded(let mission)) where r.mission == mission:
            return clean(&n, reason: nil)

        case (.allocated, .orphaned):
            return clean(&n, reason: nil)

        case (.cleaning, .adopted(let mission)):
            // The new generation makes any cleaner's report for the old one stale.
            n.phase = .allocated
            n.mission = mission
            n.allocatedAt = now
            n.reason = nil
            return SlotTransition(record: n, actions: [])

        case (.cleaning, .cleaned(let g)) where g == r.generation:
            return available(&n)

        case (.cleaning, .cleanFailed(let g, let reason, let reclone)) where g == r.generation:
            if reclone {
                n.phase = .cloning
                n.mission = nil
                n.reason = reason
                return SlotTransition(record: n, actions: [.startClone(generation: n.generation)])
            }
            return fail(&n, reason: reason, now: now)

        case (.cloning, .cloned(let g)) where g == r.generation:
            return available(&n)

        case (.cloning, .cloneFailed(let g, let reason)) where g == r.generation:
            return fail(&n, reason: reason, now: now)

        case (.available, .corrupted(let reason)):
            return clean(&n, reason: reason)

        case (let phase, .isolate(let reason, let byPerson)) where phase != .allocated:
            // A slot a mission works in is never taken from it: cancel the mission first.
            n.phase = .error
            n.mission = nil
            n.allocatedAt = nil
            n.errorAt = now
            n.reason = reason
            n.isolatedByPerson = byPerson
            n.forceAvailable = false
            return SlotTransition(record: n, actions: [])

        case (.error, .recover(let force)), (.available, .recover(let force)):
            n.forceAvailable = force
            return clean(&n, reason: r.reason)

        case (.cloning, .recover(let force)):
            n.forceAvailable = force
            return SlotTransition(record: n, actions: [.startClone(generation: n.generation)])

        case (.cleaning, .recover(let force)):
            // A cleaner may be running: a new generation makes its report stale, and the new
            // cleaner waits for the old one's lock.
            n.forceAvailable = force
            return SlotTransition(record: n, actions: [.startCleaner(generation: n.generation)])

        default:
            return nil
        }
    }

    /// Clean (or freshly cloned): may be handed out again.
    private static func available(_ n: inout SlotRecord) -> SlotTransition {
        n.phase = .available
        n.mission = nil
        n.allocatedAt = nil
        n.reason = nil
        n.forceAvailable = false
        n.isolatedByPerson = false
        return SlotTransition(record: n, actions: [])
    }

    private static func clean(_ n: inout SlotRecord, reason: String?) -> SlotTransition {
        n.phase = .cleaning
        n.mission = nil
        n.allocatedAt = nil
        n.reason = reason
        return SlotTransition(record: n, actions: [.startCleaner(generation: n.generation)])
    }

    /// A failed repair or clone: `error`, unless a person forced it available.
    private static func fail(_ n: inout SlotRecord, reason: String, now: Double) -> SlotTransition {
        n.mission = nil
        n.allocatedAt = nil
        if n.forceAvailable {
            n.phase = .available
            n.forceAvailable = false
            n.reason = "forced available by an operator although: \(reason)"
        } else {
            n.phase = .error
            n.errorAt = now
            n.reason = reason
            n.isolatedByPerson = false
        }
        return SlotTransition(record: n, actions: [])
    }
}

// MARK: - Auto-recover: one conservative pass

/// What auto-recover may do (`vigil workspace auto-recover`; docs/workspaces.md, "Anomalies").
public struct AutoRecoverOptions: Equatable, Sendable {
    public var maxAllocation: TimeSpan = .seconds(24 * 3600)
    public var recoverCorrupted = true
    public var cleanLocks = true
    public var forceReleaseLong = false

    public init(maxAllocation: TimeSpan = .seconds(24 * 3600), recoverCorrupted: Bool = true, cleanLocks: Bool = true,
                forceReleaseLong: Bool = false) {
        self.maxAllocation = maxAllocation
        self.recoverCorrupted = recoverCorrupted
        self.cleanLocks = cleanLocks
        self.forceReleaseLong = forceReleaseLong
    }
}

/// What the pass found on disk and in the missions table about one slot.
public struct SlotSurvey: Equatable, Sendable {
    public var record: SlotRecord
    /// Its mission is running (only meaningful when allocated).
    public var missionRunning: Bool
    /// Why its checkout is damaged, nil when sound (only looked at when not allocated).
    public var damage: String?
    /// Stale git lock files in it (only looked at when not allocated).
    public var staleLocks: Int

    public init(record: SlotRecord, missionRunning: Bool = false, damage: String? = nil, staleLocks: Int = 0) {
        self.record = record
        self.missionRunning = missionRunning
        self.damage = damage
        self.staleLocks = staleLocks
    }
}

/// What the pass decided for one slot.
public enum AutoRecoverStep: Equatable, Sendable {
    case none
    /// Apply this event to the slot.
    case event(SlotEvent)
    /// Ask the runner to cancel this mission (`--force-release-long`); its slot is cleaned at its end.
    case cancelMission(Int64)
    /// Remove the stale git lock files (an available slot stays available).
    case removeLocks
}

public struct AutoRecoverCounts: Equatable, Sendable, Codable {
    public var longAllocatedReleased = 0
    public var longAllocatedSeen = 0
    public var corruptedRecovered = 0
    public var corruptedIsolated = 0
    public var orphanedLocksCleaned = 0

    public init() {}
}

extension WorkspaceSlots {
    /// The step for one surveyed slot and how it counts. Conservative: a live mission is never
    /// interrupted without `forceReleaseLong`; a slot isolated by a person is left alone.
    public static func autoRecover(_ s: SlotSurvey, options: AutoRecoverOptions, now: Double) -> (AutoRecoverStep, AutoRecoverCounts) {
        var c = AutoRecoverCounts()
        let r = s.record
        switch r.phase {
        case .allocated:
            guard s.missionRunning else {
                c.orphanedLocksCleaned = 1
                return (.event(.orphaned), c)
            }
            if let at = r.allocatedAt, now - at > options.maxAllocation.seconds, let m = r.mission {
                c.longAllocatedSeen = 1
                guard options.forceReleaseLong else { return (.none, c) }
                c.longAllocatedReleased = 1
                return (.cancelMission(m), c)
            }
            return (.none, c)
        case .available:
            if let damage = s.damage {
                if options.recoverCorrupted {
                    c.corruptedRecovered = 1
                    return (.event(.corrupted(reason: damage)), c)
                }
                c.corruptedIsolated = 1
                return (.event(.isolate(reason: damage, byPerson: false)), c)
            }
            if s.staleLocks > 0 && options.cleanLocks {
                c.orphanedLocksCleaned = 1
                return (.removeLocks, c)
            }
            return (.none, c)
        case .error:
            guard !r.isolatedByPerson, options.recoverCorrupted else { return (.none, c) }
            c.corruptedRecovered = 1
            return (.event(.recover(force: false)), c)
        case .cleaning, .cloning:
            return (.none, c) // a cleaner or clone owns it (recovery restarts a dead one)
        }
    }
}
