import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Workspaces end to end (docs/workspaces.md): real repositories, a real `git daemon`, the real
/// `vigil` binary, a real runner loop (`vigil-bench drive`), corruption made for real.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct WorkspaceMissionTests {
    /// A state dir with a bare repository of a few files (`origin`), git set to retry fast.
    final class Pool {
        let env: MissionEnv
        let origin: String
        var daemon: GitDaemon?

        init(_ name: String, daemon useDaemon: Bool = false, config: [String: String] = [:]) throws {
            env = try MissionEnv(name)
            let repos = env.path("repos")
            try FileManager.default.createDirectory(atPath: repos, withIntermediateDirectories: true)
            origin = repos + "/app.git"
            _ = try GitFixture.makeBareRepo(at: origin, files: 5)
            try AtomicFile.makeDirectory(env.state.path)
            var settings = ["workspace-git-backoff": "10ms", "workspace-git-timeout": "20s", "workspace-check-interval": "1h"]
            for (k, v) in config { settings[k] = v }
            let json = "{" + settings.map { "\"\($0.key)\": \"\($0.value)\"" }.joined(separator: ", ") + "}"
            try AtomicFile.write(Data(json.utf8), to: env.state.config)
            if useDaemon {
                let d = try GitDaemon(basePath: repos)
                try d.start()
                daemon = d
            }
        }

        var url: String { daemon?.url(for: "app") ?? origin }

        func workspace(_ args: [String]) throws -> RunResult { try env.vigil(["workspace"] + args, cwd: env.root) }

        func slots() throws -> [[String: JSONValue]] {
            let r = try workspace(["list", "--json"])
            guard case .array(let items)? = JSONValue.parse(Data(r.out.utf8)) else { Issue.record("list --json: \(r.out) \(r.err)"); return [] }
            return items.compactMap { if case .object(let o) = $0 { return o }; return nil }
        }

        func slot(_ id: Int64) throws -> [String: JSONValue] {
            try #require(try slots().first { $0["slot"]?.intValue == id })
        }

        func state(_ id: Int64) throws -> String { try slot(id)["state"]?.stringValue ?? "?" }

        func path(_ id: Int64) -> String { env.state.workspaceSlot(repo: "app", id: id) }

        func finish() {
            daemon?.stop()
            env.finish()
        }
    }

    /// A mission that proves it had the slot to itself: it fails (exit 99) when it finds the
    /// mark another mission left in the slot, marks it, and logs start and end.
    static let exclusive = """
        [ -e .vigil-test-busy ] && { echo "overlap in $VIGIL_WORKSPACE" >> "$1"; exit 99; }
        echo "$VIGIL_MISSION_ID" > .vigil-test-busy; echo "start $VIGIL_MISSION_ID $VIGIL_WORKSPACE" >> "$1"
        echo change >> file-1.txt; mkdir -p build; echo junk > build/out; sleep 0.$((VIGIL_MISSION_ID % 3))
        echo "end $VIGIL_MISSION_ID $VIGIL_WORKSPACE" >> "$1"
        """

    @Test func twoMissionsOnAOneSlotRepositoryRunOneAfterTheOtherInACleanCheckout() throws {
        let pool = try Pool("ws-serial")
        defer { pool.finish() }
        let added = try pool.workspace(["add-repo", "app", pool.url, "--slots", "1"])
        #expect(added.code == 0, "\(added.out) \(added.err)")
        #expect(try pool.state(1) == "available")
        let log = pool.env.path("log")
        try pool.env.startDriver(maxParallel: 3)
        let ids = try (0..<2).map { _ in try pool.env.add(["sh", "-c", WorkspaceMissionTests.exclusive, "m", log], flags: ["--workspace", "app"]) }
        try waitUntil("both missions to end", timeout: 60) { try ids.allSatisfy { try pool.env.mission($0).state.isFinal } }
        for id in ids {
            let m = try pool.env.mission(id)
            #expect(m.state == .done, "mission \(id): \(m.reason ?? "")")
        }
        #expect(lines(log) == ["start \(ids[0]) \(pool.path(1))", "end \(ids[0]) \(pool.path(1))",
                               "start \(ids[1]) \(pool.path(1))", "end \(ids[1]) \(pool.path(1))"],
                "one after the other, each in the slot, never overlapping")
        try waitUntil("the slot to be clean again") { try pool.state(1) == "available" }
        #expect(try GitFixture.git(["status", "--porcelain", "--ignored"], in: pool.path(1)).isEmpty, "no change and no untracked file is left")
        #expect(try pool.env.mission(ids[1]).slot == 1)
        let events = pool.env.journal().compactMap { $0["event"]?.stringValue }.filter { $0.hasPrefix("workspace-slot-") }
        #expect(events.filter { $0 == "workspace-slot-allocated" }.count == 2 && events.filter { $0 == "workspace-slot-released" }.count == 2)
        let show = try pool.env.vigil(["mission", "show", "\(ids[0])", "--json"])
        #expect(show.out.contains("\"workspace\":\"app\"") && show.out.contains("\"slot\":1"), "\(show.out)")
    }

    @Test func aMissionForAnUnknownRepositoryIsRefusedAndBadNamesAndURLsToo() throws {
        let pool = try Pool("ws-refuse")
        defer { pool.finish() }
        let r = try pool.env.vigil(["mission", "add", "--workspace", "nope", "--", "true"])
        #expect(r.code == 2 && r.err.contains("no workspace repository named nope"), "\(r.err)")
        #expect(try pool.env.queue.missions().isEmpty)
        for (args, what) in [(["add-repo", "../x", pool.url], "a bad name"), (["add-repo", "app", "--upload-pack=touch /tmp/x"], "an option as URL"),
                             (["add-repo", "app", pool.env.path("nothing-here")], "an unreachable URL")] {
            let a = try pool.workspace(args)
            #expect(a.code != 0, "\(what) accepted: \(a.out)")
        }
        #expect(try pool.slots().isEmpty, "nothing was recorded")
    }

    /// The network fails for real: the git daemon is stopped while a slot is cleaned; the fetch
    /// is tried 3 times and the slot goes to `error` with the reason; the next mission waits;
    /// with the daemon back, `recover` makes it available and the mission runs.
    @Test func aFetchThatFailsIsAReasonAndRecoverHealsItWhenTheServerIsBack() throws {
        let pool = try Pool("ws-net", daemon: true)
        defer { pool.finish() }
        let daemon = try #require(pool.daemon)
        #expect(try pool.workspace(["add-repo", "app", pool.url]).code == 0)
        try pool.env.startDriver()
        daemon.stop()
        let first = try pool.env.add(["true"], flags: ["--workspace", "app"])
        try waitUntil("the slot to fail its cleanup", timeout: 60) { try pool.state(1) == "error" }
        #expect(try pool.env.mission(first).state == .done)
        let reason = try pool.slot(1)["reason"]?.stringValue ?? ""
        #expect(reason.contains("fetch failed after 3 attempts"), "\(reason)")
        let second = try pool.env.add(["true"], flags: ["--workspace", "app"])
        #expect(try pool.env.mission(second).state == .pending, "waits: the only slot is in error")
        let refused = try pool.workspace(["recover", "1"])
        #expect(try refused.code == 1 && pool.state(1) == "error", "still down: not recovered (\(refused.out))")
        try daemon.start()
        let ok = try pool.workspace(["recover", "1"])
        #expect(ok.code == 0, "\(ok.out) \(ok.err)")
        try waitUntil("the waiting mission to run in the recovered slot", timeout: 60) { try pool.env.mission(second).state == .done }
        #expect(pool.env.events("workspace-slot-failed").contains { $0["reason"]?.stringValue?.contains("fetch failed") == true })
    }

    /// Each corruption made for real on an idle slot is found by auto-recover and repaired
    /// (a stale lock file is removed); with --no-recover-corrupted it is only isolated; an
    /// isolated slot stays out of use until `recover`.
    @Test(arguments: ["objects", "head", "directory", "origin", "dotgit", "pack"])
    func autoRecoverRepairsACorruptedSlot(_ damage: String) throws {
        let pool = try Pool("ws-corrupt-\(damage)")
        defer { pool.finish() }
        #expect(try pool.workspace(["add-repo", "app", pool.url, "--slots", "2"]).code == 0)
        let p = pool.path(1)
        switch damage {
        case "objects": try FileManager.default.removeItem(atPath: p + "/.git/objects")
        case "head": try FileManager.default.removeItem(atPath: p + "/.git/HEAD")
        case "directory": try FileManager.default.removeItem(atPath: p)
        case "origin": _ = try GitFixture.git(["remote", "set-url", "origin", pool.env.path("elsewhere.git")], in: p)
        case "dotgit": try FileManager.default.removeItem(atPath: p + "/.git")
        default:
            _ = try GitFixture.git(["repack", "-adq"], in: p)
            let packs = try FileManager.default.contentsOfDirectory(atPath: p + "/.git/objects/pack").filter { $0.hasSuffix(".pack") }
            let pack = p + "/.git/objects/pack/" + (try #require(packs.first))
            #expect(truncate(pack, 40) == 0)
        }
        let r = try pool.workspace(["auto-recover", "--json"])
        guard case .object(let o)? = JSONValue.parse(Data(r.out.utf8)) else { Issue.record("\(r.out) \(r.err)"); return }
        #expect(o["corrupted_recovered"]?.intValue == 1 && o["corrupted_isolated"]?.intValue == 0, "\(damage): \(r.out)")
        #expect(try pool.state(1) == "available" && pool.state(2) == "available")
        #expect(try GitFixture.git(["rev-parse", "--verify", "HEAD^{commit}"], in: p).count >= 40)
        _ = try GitFixture.git(["fsck", "--no-progress"], in: p) // throws when fsck finds the repository damaged
        #expect(try GitFixture.git(["config", "--get", "remote.origin.url"], in: p).trimmingCharacters(in: .whitespacesAndNewlines) == pool.url)
    }

    @Test func locksIsolationAndTheConservativeOptions() throws {
        let pool = try Pool("ws-options")
        defer { pool.finish() }
        #expect(try pool.workspace(["add-repo", "app", pool.url, "--slots", "2"]).code == 0)
        // A stale index.lock: removed (orphaned_locks_cleaned), unless --no-clean-locks.
        try Data().write(to: URL(fileURLWithPath: pool.path(1) + "/.git/index.lock"))
        let kept = try pool.workspace(["auto-recover", "--json", "--no-clean-locks"])
        #expect(kept.out.contains("\"orphaned_locks_cleaned\":0") && FileSystem.exists(pool.path(1) + "/.git/index.lock"), "\(kept.out)")
        let cleaned = try pool.workspace(["auto-recover", "--json"])
        #expect(cleaned.out.contains("\"orphaned_locks_cleaned\":1") && !FileSystem.exists(pool.path(1) + "/.git/index.lock"), "\(cleaned.out)")
        // Damage with --no-recover-corrupted: isolated, not repaired; then never handed out.
        try FileManager.default.removeItem(atPath: pool.path(2) + "/.git/HEAD")
        let isolated = try pool.workspace(["auto-recover", "--json", "--no-recover-corrupted"])
        #expect(isolated.out.contains("\"corrupted_isolated\":1"), "\(isolated.out)")
        #expect(try pool.state(2) == "error")
        // A person isolates slot 1 too: a mission now waits.
        #expect(try pool.workspace(["isolate", "1", "--reason", "disk check"]).code == 0)
        #expect(try pool.slot(1)["isolated"] == .bool(true) && pool.slot(1)["reason"]?.stringValue == "disk check")
        let m = try pool.env.add(["true"], flags: ["--workspace", "app"])
        // The pass here, before any runner (a runner's own pass right after its start-up
        // recovery would race it for slot 2).
        let again = try pool.workspace(["auto-recover", "--json"])
        #expect(try pool.state(1) == "error", "what a person isolated stays isolated: \(again.out)")
        #expect(again.out.contains("\"corrupted_recovered\":1"), "the slot auto-recover isolated is repaired by the next default pass: \(again.out)")
        try pool.env.startDriver()
        try waitUntil("the mission to run in slot 2", timeout: 60) { try pool.env.mission(m).state == .done }
        #expect(try pool.env.mission(m).slot == 2)
        #expect(try pool.workspace(["recover", "1"]).code == 0)
        #expect(try pool.state(1) == "available")
        // remove-slot: never one in use; an idle one goes with its directory.
        #expect(try pool.workspace(["remove-slot", "1"]).code == 0)
        #expect(try !FileSystem.exists(pool.path(1)) && pool.slots().count == 1)
    }

    @Test func aLongAllocationIsReportedAndReleasedOnlyWhenForced() throws {
        let pool = try Pool("ws-long")
        defer { pool.finish() }
        #expect(try pool.workspace(["add-repo", "app", pool.url]).code == 0)
        try pool.env.startDriver()
        let m = try pool.env.add(["sleep", "600"], flags: ["--workspace", "app"])
        try waitUntil("the mission to run") { try pool.env.mission(m).state == .running && pool.state(1) == "allocated" }
        usleep(50_000)
        let seen = try pool.workspace(["auto-recover", "--json", "--max-allocation-hours", "0.00001"])
        #expect(seen.out.contains("\"long_allocated_seen\":1") && seen.out.contains("\"long_allocated_released\":0"), "\(seen.out)")
        #expect(try pool.env.mission(m).state == .running, "a live mission is never interrupted by default")
        let forced = try pool.workspace(["auto-recover", "--json", "--max-allocation-hours", "0.00001", "--force-release-long"])
        #expect(forced.out.contains("\"long_allocated_released\":1"), "\(forced.out)")
        try waitUntil("the mission to be cancelled and its slot cleaned", timeout: 60) {
            try pool.env.mission(m).state == .cancelled && pool.state(1) == "available"
        }
    }

    /// kill -9 of the runner and of shims at random moments while missions allocate and release
    /// slots of a 2-slot repository (3 may run at once): never two missions in one slot, every
    /// acknowledged mission done, every slot available at the end, none lost.
    @Test func killNineWhileMissionsAllocateAndRelease() throws {
        let pool = try Pool("ws-chaos")
        defer { pool.finish() }
        #expect(try pool.workspace(["add-repo", "app", pool.url, "--slots", "2"]).code == 0)
        let log = pool.env.path("log")
        var driver = try pool.env.startDriver(maxParallel: 3)
        var acked: [Int64] = []
        var kills = (runner: 0, shim: 0)
        let deadline = Clock.boot() + .seconds(20)
        while Clock.boot() < deadline {
            for _ in 0..<Int.random(in: 1...2) {
                acked.append(try pool.env.add(["sh", "-c", WorkspaceMissionTests.exclusive, "m", log], maxAttempts: 10, flags: ["--workspace", "app"]))
            }
            usleep(UInt32.random(in: 50_000...400_000))
            if Bool.random() {
                pool.env.kill9(driver)
                kills.runner += 1
                driver = try pool.env.startDriver(maxParallel: 3)
            } else if let shim = try pool.env.queue.running().compactMap(\.shim).randomElement() {
                kill(shim.identity.pid, SIGKILL)
                kills.shim += 1
            }
        }
        do {
            try waitUntil("every acknowledged mission to end", timeout: 120) { try acked.allSatisfy { try pool.env.mission($0).state.isFinal } }
        } catch {
            // What was left, for whoever reads a red run: a mission stuck, or one far in its backoff.
            let left = try acked.map { try pool.env.mission($0) }.filter { !$0.state.isFinal }
            print("workspace chaos: \(left.count) of \(acked.count) missions not ended: " + left.map {
                "#\($0.id) \($0.state) attempts \($0.attempts)/\($0.maxAttempts) shim \($0.shim.map { "\($0.identity.pid)" } ?? "-") \($0.reason ?? "")"
            }.joined(separator: "; "))
            print("workspace chaos: slots \(try pool.slots())")
            throw error
        }
        let all = try pool.env.queue.missions()
        #expect(all.map(\.id) == acked, "lost or unexpected missions")
        for id in acked {
            let m = try pool.env.mission(id)
            #expect(m.state == .done, "mission \(id): \(m.state) exit \(m.exitCode.map { "\($0)" } ?? "-") \(m.reason ?? "")")
        }
        #expect(!lines(log).contains { $0.hasPrefix("overlap") }, "two missions in one slot: \(lines(log).filter { $0.hasPrefix("overlap") })")
        try waitUntil("every slot to be available", timeout: 60) { try pool.slots().allSatisfy { $0["state"]?.stringValue == "available" } }
        #expect(try pool.slots().count == 2, "no slot lost")
        let slotBusy = pool.env.journal().filter { ($0["reason"]?.stringValue ?? "").contains("workspace slot was still in use") }.count
        print("workspace chaos: \(acked.count) missions, \(kills.runner) runner kills, \(kills.shim) shim kills, \(slotBusy) starts that found their slot in use")
    }
}
