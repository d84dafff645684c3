import Foundation
import Testing
import VigilCore
import VigilStore
import VigilSystem

/// Workspace slots in the queue's transactions, on a real database, without git or processes
/// (docs/workspaces.md, "Handing out a slot", "Releasing a slot").
extension MissionTests {
    private func withStores(_ body: (MissionQueue, WorkspaceStore) throws -> Void) throws {
        let env = try MissionEnv("wsqueue")
        defer { env.finish() }
        let q = try env.queue
        try body(q, WorkspaceStore(db: q.db))
    }

    /// Makes every `cloning` slot available, as a worker that cloned it would.
    private func cloneAll(_ ws: WorkspaceStore) throws {
        for s in try ws.needingWork() where s.record.phase == .cloning {
            try #require(try ws.apply(.cloned(generation: s.record.generation), to: s.id) != nil)
        }
    }

    private func result(_ m: Mission, exit: Int32) -> MissionResult {
        MissionResult(mission: m.id, attempt: m.attempts, exitCode: exit, signal: nil, reason: nil, childPID: nil, started: "", finished: "")
    }

    @Test func aMissionNamingAnUnknownRepositoryIsRefused() throws {
        try withStores { (q: MissionQueue, _: WorkspaceStore) throws in
            #expect(throws: WorkspaceError.self) { try q.enqueue(argv: ["true"], cwd: "/", workspace: "nope") }
            let all = try q.missions()
            #expect(all.isEmpty, "refused, not queued")
        }
    }

    @Test func twoMissionsOnAOneSlotRepositoryRunOneAfterTheOther() throws {
        try withStores { q, ws in
            let ids = try ws.addRepo(name: "app", url: "/srv/app.git", branch: "main", slots: 1)
            #expect(ids.count == 1)
            let a = try q.enqueue(argv: ["a"], cwd: "/", workspace: "app")
            let b = try q.enqueue(argv: ["b"], cwd: "/", workspace: "app")
            let c = try q.enqueue(argv: ["c"], cwd: "/")
            #expect(try q.claim(limit: 10).map(\.id) == [c], "the slot is still being cloned: both wait, the other mission goes")
            try cloneAll(ws)
            let first = try q.claim(limit: 10)
            #expect(first.map(\.id) == [a] && first[0].slot == ids[0])
            #expect(try ws.slot(ids[0])?.record.phase == .allocated)
            #expect(try ws.slot(ids[0])?.record.mission == a)
            #expect(q.takeSlotChanges() == [SlotChange(slot: ids[0], repo: "app", mission: a, from: .available, to: .allocated, generation: 2)])
            #expect(try q.claim(limit: 10).isEmpty, "b waits for the slot")

            let ma = try #require(try q.mission(a))
            #expect(try q.finish(id: a, attempt: ma.attempts, result: result(ma, exit: 1)) == .failed)
            let s = try #require(try ws.slot(ids[0]))
            #expect(s.record.phase == .cleaning && s.record.mission == nil, "released to the cleaner in the end's transaction")
            #expect(q.takeSlotChanges().map(\.to) == [.cleaning])
            #expect(try q.claim(limit: 10).isEmpty, "not before it is clean")
            try #require(try ws.apply(.cleaned(generation: s.record.generation), to: s.id) != nil)
            #expect(try q.claim(limit: 10).map(\.id) == [b])
        }
    }

    @Test func everyEndReleasesTheSlotAndAStaleSettlementDoesNot() throws {
        try withStores { q, ws in
            let ids = try ws.addRepo(name: "r", url: "/x", branch: "main", slots: 3)
            try cloneAll(ws)
            let m1 = try q.enqueue(argv: ["a"], cwd: "/", workspace: "r")
            let m2 = try q.enqueue(argv: ["b"], cwd: "/", workspace: "r")
            let m3 = try q.enqueue(argv: ["c"], cwd: "/", retries: 1, retryBackoff: .milliseconds(1), workspace: "r")
            let claimed = try q.claim(limit: 10)
            #expect(Set(claimed.compactMap(\.slot)) == Set(ids), "three missions, three different slots")
            let byID = Dictionary(uniqueKeysWithValues: claimed.map { ($0.id, $0) })
            // A dead shim (requeued), a reverted claim, a failed attempt with a retry left.
            #expect(try q.shimDied(id: m1, attempt: 1, reason: "killed") == .requeued(attempts: 1))
            try q.revertClaim(id: m2, attempt: 1, reason: "cannot start")
            _ = try q.finish(id: m3, attempt: 1, result: result(byID[m3]!, exit: 3))
            #expect(try q.mission(m3)?.state == .pending, "a retry is pending again")
            #expect(try ws.slots().allSatisfy { $0.record.phase == .cleaning && $0.record.mission == nil })
            #expect(try q.shimDied(id: m1, attempt: 1, reason: "again") == nil, "stale: nothing changes")
            #expect(try ws.slots().map(\.record.generation) == [3, 3, 3])
        }
    }

    @Test func aCancelOfAWaitingMissionTakesNoSlotAndAStaleWorkerChangesNothing() throws {
        try withStores { q, ws in
            let ids = try ws.addRepo(name: "r", url: "/x", branch: "main", slots: 1)
            let m = try q.enqueue(argv: ["a"], cwd: "/", workspace: "r")
            #expect(try q.requestCancel(id: m) == .cancelled)
            try cloneAll(ws)
            #expect(try q.claim(limit: 10).isEmpty)
            #expect(try ws.slot(ids[0])?.record.phase == .available)
            #expect(try ws.apply(.cloned(generation: 0), to: ids[0]) == nil, "a report for an old generation is stale")
        }
    }

    @Test func anAdoptedShimGetsItsSlotBackOnlyWhileItIsBeingCleaned() throws {
        try withStores { q, ws in
            let ids = try ws.addRepo(name: "r", url: "/x", branch: "main", slots: 1)
            try cloneAll(ws)
            let m = try q.enqueue(argv: ["a"], cwd: "/", workspace: "r")
            _ = try q.claim(limit: 1)
            #expect(try q.shimDied(id: m, attempt: 1, reason: "not seen", countAttempt: false) == .requeuedUncounted)
            let shim = MissionShim(identity: ProcessIdentity.current, bootID: Clock.bootID)
            let adopted = try #require(try q.adopt(id: m, attempt: 1, shim: shim))
            #expect(adopted.state == .running && adopted.slot == ids[0])
            #expect(try ws.slot(ids[0])?.record.mission == m)
            #expect(try ws.slot(ids[0])?.record.phase == .allocated)

            // Once the slot went on (cleaned, handed to another), the shim is not adopted.
            #expect(try q.shimDied(id: m, attempt: 1, reason: "x", countAttempt: false) == .requeuedUncounted)
            let s = try #require(try ws.slot(ids[0]))
            try #require(try ws.apply(.cleaned(generation: s.record.generation), to: s.id) != nil)
            let other = try q.enqueue(argv: ["b"], cwd: "/", workspace: "r")
            #expect(try q.claim(limit: 1).map(\.id) == [m], "m is first in line again")
            _ = other
            #expect(try q.shimDied(id: m, attempt: 1, reason: "y", countAttempt: false) == .requeuedUncounted)
            let s2 = try #require(try ws.slot(ids[0]))
            try #require(try ws.apply(.cleaned(generation: s2.record.generation), to: s2.id) != nil)
            #expect(try q.claim(limit: 1).map(\.id) == [m])
            #expect(try q.adopt(id: other, attempt: 1, shim: shim) == nil, "its slot is another mission's")
        }
    }

    /// A survey that read "running" before a claim handed a slot to a live mission must not
    /// release that slot: the check is made again in the release's transaction.
    @Test func anOrphanedAllocationIsReleasedOnlyIfItsMissionDoesNotRun() throws {
        try withStores { q, ws in
            let ids = try ws.addRepo(name: "r", url: "/x", branch: "main", slots: 1)
            try cloneAll(ws)
            let m = try q.enqueue(argv: ["a"], cwd: "/", workspace: "r")
            _ = try q.claim(limit: 1)
            #expect(try ws.releaseIfOrphaned(ids[0]) == nil, "its mission runs: kept")
            #expect(try ws.slot(ids[0])?.record.mission == m)
            try q.db.execute("UPDATE missions SET state = 'failed' WHERE id = ?", [.int(m)]) // ended without releasing (an old Vigil, a hand edit)
            #expect(try ws.releaseIfOrphaned(ids[0]) == m)
            #expect(try ws.slot(ids[0])?.record.phase == .cleaning)
            #expect(try ws.releaseIfOrphaned(ids[0]) == nil, "not allocated any more")
        }
    }

    @Test func removeOnlyAnIdleSlotAndIdsAreNeverReused() throws {
        try withStores { q, ws in
            let ids = try ws.addRepo(name: "r", url: "/x", branch: "main", slots: 2)
            #expect(try ws.remove(id: ids[1], force: false) == .refused(.cloning))
            try cloneAll(ws)
            _ = try q.enqueue(argv: ["a"], cwd: "/", workspace: "r")
            _ = try q.claim(limit: 1)
            #expect(try ws.remove(id: ids[0], force: true) == .refused(.allocated), "never a slot a mission works in")
            guard case .removed = try ws.remove(id: ids[1], force: false) else { Issue.record("not removed"); return }
            let next = try ws.addSlot(repo: "r")
            #expect(next > ids[1], "a removed slot's id (its directory name) is not handed out again")
            #expect(throws: WorkspaceError.self) { try ws.addRepo(name: "r", url: "/y", branch: "main", slots: 1) }
            for bad in ["", "../x", ".hidden", "-x", "a/b", "a b", String(repeating: "x", count: 65)] {
                #expect(throws: WorkspaceError.self, "\(bad)") { try ws.addRepo(name: bad, url: "/y", branch: "main", slots: 1) }
            }
        }
    }
}
