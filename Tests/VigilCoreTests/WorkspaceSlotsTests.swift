import Testing
import VigilCore

/// The workspace slot machine (docs/workspaces.md, "A slot's life"): the rules one by one, then
/// seeded random event sequences with the invariants stated there.
@Suite("Workspace slots")
struct WorkspaceSlotsTests {
    static func slot(_ phase: SlotPhase, generation: Int = 3, mission: Int64? = nil) -> SlotRecord {
        var r = SlotRecord(phase: phase)
        r.generation = generation
        r.mission = mission
        if mission != nil { r.allocatedAt = 100 }
        return r
    }

    @Test func aMissionGetsAnAvailableSlotAndItsEndSendsItToTheCleaner() throws {
        let a = try #require(WorkspaceSlots.apply(.allocated(mission: 7), to: Self.slot(.available), now: 50))
        #expect(a.record.phase == .allocated && a.record.mission == 7 && a.record.allocatedAt == 50 && a.record.generation == 4)
        #expect(WorkspaceSlots.apply(.allocated(mission: 8), to: a.record, now: 51) == nil, "never two missions in one slot")
        #expect(WorkspaceSlots.apply(.missionEnded(mission: 8), to: a.record, now: 52) == nil, "another mission's end is not this slot's")
        let e = try #require(WorkspaceSlots.apply(.missionEnded(mission: 7), to: a.record, now: 60))
        #expect(e.record.phase == .cleaning && e.record.mission == nil && e.actions == [.startCleaner(generation: 5)])
        #expect(WorkspaceSlots.apply(.cleaned(generation: 4), to: e.record, now: 61) == nil, "a stale cleaner changes nothing")
        let c = try #require(WorkspaceSlots.apply(.cleaned(generation: 5), to: e.record, now: 61))
        #expect(c.record.phase == .available && c.actions.isEmpty)
    }

    @Test func aFailedCleanupIsAnErrorWithItsReasonOrAReclone() throws {
        let cleaning = Self.slot(.cleaning, generation: 5)
        let f = try #require(WorkspaceSlots.apply(.cleanFailed(generation: 5, reason: "fetch failed after 3 attempts", reclone: false), to: cleaning, now: 70))
        #expect(f.record.phase == .error && f.record.reason == "fetch failed after 3 attempts" && f.record.errorAt == 70 && !f.record.isolatedByPerson)
        let r = try #require(WorkspaceSlots.apply(.cleanFailed(generation: 5, reason: "git fsck: missing blob", reclone: true), to: cleaning, now: 70))
        #expect(r.record.phase == .cloning && r.actions == [.startClone(generation: 6)])
        let bad = try #require(WorkspaceSlots.apply(.cloneFailed(generation: 6, reason: "repository not found"), to: r.record, now: 71))
        #expect(bad.record.phase == .error && bad.record.reason == "repository not found")
        let good = try #require(WorkspaceSlots.apply(.cloned(generation: 6), to: r.record, now: 71))
        #expect(good.record.phase == .available && good.record.reason == nil)
    }

    @Test func isolateAndRecoverWithAndWithoutForce() throws {
        #expect(WorkspaceSlots.apply(.isolate(reason: "x", byPerson: true), to: Self.slot(.allocated, mission: 3), now: 1) == nil,
                "a slot a mission works in is not taken from it")
        let iso = try #require(WorkspaceSlots.apply(.isolate(reason: "disk check", byPerson: true), to: Self.slot(.available), now: 10))
        #expect(iso.record.phase == .error && iso.record.isolatedByPerson && iso.record.reason == "disk check")
        #expect(WorkspaceSlots.apply(.allocated(mission: 1), to: iso.record, now: 11) == nil, "an isolated slot is never handed out")
        let rec = try #require(WorkspaceSlots.apply(.recover(force: true), to: iso.record, now: 12))
        #expect(rec.record.phase == .cleaning && rec.record.forceAvailable && rec.actions == [.startCleaner(generation: rec.record.generation)])
        let forced = try #require(WorkspaceSlots.apply(.cleanFailed(generation: rec.record.generation, reason: "fsck: broken", reclone: false), to: rec.record, now: 13))
        #expect(forced.record.phase == .available && forced.record.reason?.contains("forced available") == true && !forced.record.forceAvailable)
        let plain = try #require(WorkspaceSlots.apply(.recover(force: false), to: iso.record, now: 12))
        let failed = try #require(WorkspaceSlots.apply(.cleanFailed(generation: plain.record.generation, reason: "fsck: broken", reclone: false), to: plain.record, now: 13))
        #expect(failed.record.phase == .error)
    }

    @Test func recoverWhileACleanerRunsMakesItsReportStale() throws {
        let cleaning = Self.slot(.cleaning, generation: 5)
        let again = try #require(WorkspaceSlots.apply(.recover(force: false), to: cleaning, now: 1))
        #expect(again.actions == [.startCleaner(generation: 6)])
        #expect(WorkspaceSlots.apply(.cleaned(generation: 5), to: again.record, now: 2) == nil)
        #expect(WorkspaceSlots.apply(.cleaned(generation: 6), to: again.record, now: 2)?.record.phase == .available)
    }

    @Test func anAdoptedShimGetsItsSlotBackOnlyFromCleaning() throws {
        let cleaning = Self.slot(.cleaning, generation: 5)
        let a = try #require(WorkspaceSlots.apply(.adopted(mission: 4), to: cleaning, now: 9))
        #expect(a.record.phase == .allocated && a.record.mission == 4 && a.record.generation == 6 && a.actions.isEmpty)
        #expect(WorkspaceSlots.apply(.cleaned(generation: 5), to: a.record, now: 10) == nil, "the cleaner of before is stale")
        for phase in [SlotPhase.available, .allocated, .cloning, .error] {
            #expect(WorkspaceSlots.apply(.adopted(mission: 4), to: Self.slot(phase, mission: phase == .allocated ? 2 : nil), now: 9) == nil,
                    "\(phase): taken already, or not this mission's")
        }
    }

    // MARK: - Auto-recover

    @Test func autoRecoverIsConservative() {
        let o = AutoRecoverOptions()
        var long = Self.slot(.allocated, mission: 9)
        long.allocatedAt = 0
        let day = 24.0 * 3600
        #expect(WorkspaceSlots.autoRecover(SlotSurvey(record: long, missionRunning: true), options: o, now: day + 1).0 == .none,
                "a live mission is never interrupted by default")
        #expect(WorkspaceSlots.autoRecover(SlotSurvey(record: long, missionRunning: true), options: o, now: day + 1).1.longAllocatedSeen == 1)
        var force = o
        force.forceReleaseLong = true
        #expect(WorkspaceSlots.autoRecover(SlotSurvey(record: long, missionRunning: true), options: force, now: day + 1).0 == .cancelMission(9))
        #expect(WorkspaceSlots.autoRecover(SlotSurvey(record: long, missionRunning: true), options: force, now: day - 1).0 == .none)
        #expect(WorkspaceSlots.autoRecover(SlotSurvey(record: long, missionRunning: false), options: o, now: 5).0 == .event(.orphaned))

        let damaged = SlotSurvey(record: Self.slot(.available), damage: ".git/HEAD missing")
        #expect(WorkspaceSlots.autoRecover(damaged, options: o, now: 1).0 == .event(.corrupted(reason: ".git/HEAD missing")))
        var noRecover = o
        noRecover.recoverCorrupted = false
        #expect(WorkspaceSlots.autoRecover(damaged, options: noRecover, now: 1).0 == .event(.isolate(reason: ".git/HEAD missing", byPerson: false)))

        let locks = SlotSurvey(record: Self.slot(.available), staleLocks: 2)
        #expect(WorkspaceSlots.autoRecover(locks, options: o, now: 1).0 == .removeLocks)
        var keepLocks = o
        keepLocks.cleanLocks = false
        #expect(WorkspaceSlots.autoRecover(locks, options: keepLocks, now: 1).0 == .none)

        var isolated = Self.slot(.error)
        isolated.isolatedByPerson = true
        #expect(WorkspaceSlots.autoRecover(SlotSurvey(record: isolated), options: o, now: 1).0 == .none, "what a person isolated stays isolated")
        #expect(WorkspaceSlots.autoRecover(SlotSurvey(record: Self.slot(.error)), options: o, now: 1).0 == .event(.recover(force: false)))
        for phase in [SlotPhase.cleaning, .cloning] {
            #expect(WorkspaceSlots.autoRecover(SlotSurvey(record: Self.slot(phase), damage: "x", staleLocks: 3), options: force, now: 1).0 == .none)
        }
    }

    // MARK: - Random sequences

    /// Any sequence of events (stale ones included) keeps the stated invariants: a slot is
    /// allocated exactly when it has a mission; every accepted transition advances the
    /// generation by one; only an available slot is handed out; an action names the new
    /// generation; auto-recover never acts on a live mission without force, nor on what a
    /// person isolated.
    @Test(arguments: 0..<300) func invariantsHold(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var r = SlotRecord(phase: SlotPhase.allCases.randomElement(using: &rng)!)
        if r.phase == .allocated { r.mission = 1; r.allocatedAt = 0 }
        var now = 0.0
        for _ in 0..<60 {
            now += Double(Int.random(in: 0...20000, using: &rng))
            let g = r.generation + Int.random(in: -1...0, using: &rng)
            let events: [SlotEvent] = [
                .allocated(mission: Int64.random(in: 1...3, using: &rng)), .missionEnded(mission: Int64.random(in: 1...3, using: &rng)),
                .orphaned, .cleaned(generation: g), .cleanFailed(generation: g, reason: "r", reclone: Bool.random(using: &rng)),
                .cloned(generation: g), .cloneFailed(generation: g, reason: "c"),
                .isolate(reason: "i", byPerson: Bool.random(using: &rng)), .recover(force: Bool.random(using: &rng)),
                .corrupted(reason: "d"), .adopted(mission: Int64.random(in: 1...3, using: &rng)),
            ]
            let e = events.randomElement(using: &rng)!
            let survey = SlotSurvey(record: r, missionRunning: Bool.random(using: &rng), damage: Bool.random(using: &rng) ? "d" : nil,
                                    staleLocks: Int.random(in: 0...2, using: &rng))
            let (step, _) = WorkspaceSlots.autoRecover(survey, options: AutoRecoverOptions(forceReleaseLong: Bool.random(using: &rng)), now: now)
            if r.phase == .allocated && survey.missionRunning, case .event = step { Issue.record("seed \(seed): acted on a live mission: \(step)") }
            if r.phase == .error && r.isolatedByPerson && step != .none { Issue.record("seed \(seed): touched a slot a person isolated") }
            guard let t = WorkspaceSlots.apply(e, to: r, now: now) else { continue }
            #expect(t.record.generation == r.generation + 1, "seed \(seed)")
            #expect((t.record.phase == .allocated) == (t.record.mission != nil), "seed \(seed): \(e) → \(t.record)")
            if case .allocated = e { #expect(r.phase == .available, "seed \(seed)") }
            if case .adopted = e { #expect(r.phase == .cleaning, "seed \(seed)") }
            for a in t.actions {
                switch a {
                case .startCleaner(let ag): #expect(ag == t.record.generation && t.record.phase == .cleaning, "seed \(seed)")
                case .startClone(let ag): #expect(ag == t.record.generation && t.record.phase == .cloning, "seed \(seed)")
                }
            }
            r = t.record
        }
    }
}
