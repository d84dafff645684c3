import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// The supervised pair with real processes and real signals (issue 2, §7).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct WatchdogTests {
    @Test func coldStartThenKill9IsRespawned() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner()
        let first = try h.waitHealthy()
        #expect(h.heals().isEmpty, "a cold start is a start, not a heal")

        #expect(kill(first.pid, SIGKILL) == 0)
        let second = try waitNewHealthyBridge(h, other: first)
        #expect(second.pid != first.pid)
        let respawn = try #require(h.heals(action: "respawn").last)
        #expect(respawn["verdict"]?.stringValue == "dead")
        #expect(respawn["tier"]?.intValue == 3)
        #expect(respawn["bridge_before"]?["pid"]?.intValue == Int64(first.pid))
        // Announced once the new bridge proved stable (--stable-after 1.5), with the downtime.
        try h.waitUntil("recovery journaled") { h.events("recovered").count == 1 }
        let recovered = try #require(h.events("recovered").first)
        #expect(recovered["verdict"]?.stringValue == "dead" && recovered["tier"]?.intValue == 3)
        #expect((recovered["stable_ms"]?.doubleValue ?? 0) >= 1500, "\(recovered)")
        #expect(h.events("respawn-failed").isEmpty)
    }

    @Test func stoppedBridgeGetsTier2ThenTier3() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner()
        let first = try h.waitHealthy()
        #expect(kill(first.pid, SIGSTOP) == 0)
        let second = try waitNewHealthyBridge(h, other: first)
        let actions = h.heals().map { "\($0["tier"]?.intValue ?? -1):\($0["verdict"]?.stringValue ?? ""):\($0["action"]?.stringValue ?? "")" }
        // (The cold start is no heal.) Hung → tier 2 (SIGCONT+SIGTERM), then tier 3 (respawn: it
        // exited on SIGTERM once continued, or was killed).
        #expect(actions.first == "2:hung:terminate")
        #expect(actions.last?.hasPrefix("3:") == true)
        #expect(!actions.contains { $0.hasPrefix("1:") }, "a hung bridge skips tier 1: \(actions)")
        #expect(second != first)
        #expect(first.liveness() == .gone)
    }

    /// One SIGSTOP is one incident (docs/architecture.md, "The escalation state machine"): the
    /// continued bridge acts on tier 2's SIGTERM without beating first, is never told recovered,
    /// and is respawned as soon as it is gone, not at the runner's next tick (30 s here: the
    /// runner beats only at its ticks, so its heartbeat shows that none came in between).
    @Test func stoppedBridgeIsOneIncidentRespawnedWhenGone() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner(["--tick", "30", "--heartbeat-interval", "0.2", "--stale-after", "1", "--cooldown", "3",
                           "--term-grace", "3", "--start-grace", "5", "--stable-after", "0.5"])
        try h.waitUntil("the first bridge beats") { h.bridgeIdentity != nil && h.bridgeBeat != nil && !h.events("bridge-started").isEmpty }
        let first = try #require(h.bridgeIdentity)
        h.track(first)
        let runnerBeat = try #require(h.runnerBeat)
        #expect(kill(first.pid, SIGSTOP) == 0)
        try h.waitUntil("the bridge stopped", pollMicroseconds: 1_000) { ProcStat.read(pid: first.pid)?.state == "T" }
        let lastBeat = try #require(h.bridgeBeat)
        // From outside, as often as we can: any beat of the stopped bridge after its stop.
        var beatsAfterStop = 0
        try h.waitUntil("a new bridge beats", pollMicroseconds: 1_000) {
            let id = h.bridgeIdentity, beat = h.bridgeBeat
            if id == first, let beat, beat > lastBeat { beatsAfterStop += 1 }
            guard let id, id != first, beat != nil else { return false }
            h.track(id)
            return true
        }
        let second = try #require(h.bridgeIdentity)
        #expect(beatsAfterStop == 0, "the continued bridge beat on its way out")
        #expect(h.runnerBeat == runnerBeat, "the respawn waited for a runner tick")
        try h.waitUntil("recovery journaled") { !h.events("recovered").isEmpty }
        try h.waitUntil("the stopped bridge gone") { first.liveness() == .gone }
        let actions = h.heals().map { "\($0["tier"]?.intValue ?? -1):\($0["action"]?.stringValue ?? "")" }
        #expect(actions == ["2:terminate", "3:respawn"], "one incident: \(actions)")
        let recovered = h.events("recovered")
        #expect(recovered.count == 1)
        #expect(recovered.first?["bridge"]?["pid"]?.intValue == Int64(second.pid), "told recovered for the bridge that stayed: \(recovered)")
        #expect(recovered.first?["verdict"]?.stringValue == "hung" && recovered.first?["tier"]?.intValue == 3)
        #expect(h.events("bridge-stopped").first?["reason"]?.stringValue == "signal 15")
    }

    /// A hang is acted on at its deadline (last beat + stale-after), not at the runner's next
    /// tick (issue 8). The bridge is stopped right after a runner tick, so with tick 2 s and
    /// stale 3 s a runner that waits for a tick acts about 1 s past the deadline (1.0–1.2 s:
    /// the deadline falls midway between two ticks); the margin is well under that.
    @Test func hangIsActedOnAtItsDeadlineNotAtTheNextTick() throws {
        let h = Harness()
        defer { h.finish() }
        let stale = 3.0
        try h.startRunner(["--tick", "2", "--heartbeat-interval", "0.2", "--stale-after", "\(stale)", "--cooldown", "3",
                           "--term-grace", "1", "--start-grace", "5", "--stable-after", "1.5"])
        let bridge = try h.waitHealthy()
        // Stop the bridge just after a runner tick (the runner beats at every tick).
        let tick = try #require(h.runnerBeat)
        try h.waitUntil("the next runner tick", pollMicroseconds: 1_000) { (h.runnerBeat ?? tick) > tick }
        #expect(kill(bridge.pid, SIGSTOP) == 0)
        try h.waitUntil("the bridge stopped") { ProcStat.read(pid: bridge.pid)?.state == "T" }
        // Stopped: its last beat is final (a continued bridge may beat once more before it exits).
        let lastBeat = try #require(h.bridgeBeat)
        try h.waitUntil("tier 2 for the hang") { !h.heals(action: "terminate").isEmpty }
        let term = try #require(h.heals(action: "terminate").first)
        #expect(term["verdict"]?.stringValue == "hung")
        let acted = BootInstant(nanoseconds: try #require(term["boot"]?.intValue))
        let lag = acted - (lastBeat + .seconds(stale))
        #expect(lag >= .zero, "acted before the heartbeat was stale: \(lag)")
        #expect(lag < .milliseconds(600), "acted \(lag) past last beat + stale-after (a runner waiting for its tick is ~1 s late)")
        // Let the episode finish (tier 3 respawns), so no bridge is started while we clean up.
        _ = try waitNewHealthyBridge(h, other: bridge)
    }

    @Test func versionDriftReexecsSamePidWithoutSignal() throws {
        let h = Harness()
        defer { h.finish() }
        let versionFile = h.dir + "/VERSION"
        h.write("VERSION", "1.0\n")
        try h.startRunner(Harness.fast + ["--version-file", versionFile])
        let before = try h.waitHealthy()
        #expect(h.bridgeRecord?.version == "file:1.0")

        h.write("VERSION", "2.0\n")
        try h.waitUntil("bridge stamped 2.0") { h.bridgeRecord?.version == "file:2.0" }
        let after = try h.waitHealthy()
        #expect(after == before, "same process (PID and start time) after re-exec")
        let tier1 = h.heals().filter { $0["tier"]?.intValue == 1 }
        #expect(tier1.count == 1)
        #expect(tier1.first?["verdict"]?.stringValue == "drifted")
        #expect(h.heals(action: "terminate").isEmpty && h.heals(action: "kill").isEmpty, "no signal sent")
        #expect(h.events("bridge-reexec").count == 1)
        #expect(h.events("bridge-reexec-done").first?["previous_version"]?.stringValue == "file:1.0")
    }

    @Test func replacedExecutableIsDrift() throws {
        // Run the pair from a copy of the binary, then replace the copy (new inode).
        let h = Harness()
        defer { h.finish() }
        let bin = try h.useCopyOfBinary()
        try h.startWrapper()
        let before = try h.waitHealthy()
        let oldVersion = try #require(h.bridgeRecord?.version)

        // Replace the program on disk (as an update would: write a new file, rename over).
        try FileManager.default.copyItem(atPath: Harness.vigil, toPath: bin + ".new")
        #expect(rename(bin + ".new", bin) == 0)

        try h.waitUntil("bridge re-exec'd the new program") { (h.bridgeRecord?.version ?? oldVersion) != oldVersion }
        let after = try h.waitHealthy()
        #expect(after == before, "re-exec keeps the PID")
        #expect(h.heals().contains { $0["verdict"]?.stringValue == "drifted" && $0["tier"]?.intValue == 1 })
        #expect(h.events("runner-restart").contains { $0["reason"]?.stringValue == "own program on disk changed" })
        #expect(h.heals(action: "kill").isEmpty && h.heals(action: "terminate").isEmpty)
    }

    @Test func crashLoopOpensCircuitAfterLimitThenHalfOpenAndReset() throws {
        let h = Harness()
        defer { h.finish() }
        h.write("fault", "exit-at-start")
        try h.startRunner(Harness.fast + ["--circuit-limit", "3", "--circuit-cooloff", "3"])
        try h.waitUntil("circuit open") { !h.events("circuit-open").isEmpty }
        #expect(h.heals(action: "respawn").count == 3, "exactly circuit-limit respawns")
        // The first bridge was a start (it died: an incident), not a failed respawn.
        #expect(h.events("respawn-failed").map { $0["count"]?.intValue ?? 0 } == [1, 2, 3])
        #expect(h.events("circuit-open").first?["reason"]?.stringValue == "failed-respawns")
        // Each of the four bridges died before its first beat, as a program crashing at start does.
        #expect(h.events("bridge-started").isEmpty)
        #expect(h.events("fault-injected").count == 4)
        #expect(h.events("recovered").isEmpty, "no recovery told between failed respawns")
        // Each failed respawn is told in chat too (queued; who delivers it is the outbox's business).
        let bodies = try outboxBodies(h)
        for n in 1...3 { #expect(bodies.contains { $0.contains("failed respawn \(n) of 3") }, "\(bodies)") }
        #expect(!bodies.contains { $0.contains("healthy again") || $0.contains("Vigil started") }, "\(bodies)")
        #expect(try h.status()["heal"]?["circuit"]?.stringValue == "open")
        #expect(try h.status()["heal"]?["tier"]?.intValue == 4)

        // Half-open after the cooloff: exactly one more attempt, which fails and reopens.
        try h.waitUntil("half-open retry") { !h.events("circuit-half-open").isEmpty }
        try h.waitUntil("reopened") { h.events("circuit-open").count == 2 }
        #expect(h.heals(action: "respawn").count == 4)

        // Operator fixes the cause and resets: healthy again, circuit closed.
        try FileManager.default.removeItem(atPath: h.dir + "/fault")
        let r = try h.vigil(["heal", "reset"])
        #expect(r.code == 0, "\(r.err)")
        try h.waitHealthy()
        try h.waitUntil("circuit closed in status") { (try? h.status()["heal"]?["circuit"]?.stringValue) == "closed" }
        #expect(h.events("heal-reset").count == 1)
        #expect(h.events("circuit-open").count == 2, "one alert per opening, no alert spam")
    }

    @Test func pidFileNamingUnrelatedProcessIsDeadAndNeverSignalled() throws {
        let h = Harness()
        defer { h.finish() }
        // A decoy: an unrelated live process. Forge a PID file with its real PID and start time.
        let decoy = try h.spawn(["/bin/sleep", "300"], log: "decoy.out")
        let forged: JSONValue = [
            "role": "bridge", "identity": ["pid": .int(Int64(decoy.pid)), "start_ticks": .int(Int64(decoy.startTicks))],
            "version": "x", "exe": "/bin/sleep", "started": 1, "started_wall": "", "beat": 1, "beat_wall": "",
            "seq": 1, "boot_id": .string(Clock.bootID),
        ]
        try StateFile.write(forged, kind: "process", to: h.dir + "/bridge.json")
        // The pair's first runner (as the wrapper starts it): a PID file no bridge of ours left
        // is no incident to continue, so this is a start. (A relaunched runner would treat the
        // dead bridge as an incident: HealMachineScenarioTests, "start check".)
        try h.startRunner(Harness.fast + ["--clear-stop"])
        let bridge = try h.waitHealthy()
        #expect(bridge.pid != decoy.pid)
        #expect(decoy.liveness() == .alive, "the decoy was never signalled")
        #expect(ProcStat.read(pid: decoy.pid)?.state != "T")
        #expect(h.events("foreign-process").count >= 1)
        #expect(h.heals().isEmpty, "no bridge of ours ran: a start")
    }

    @Test(arguments: ["bridge.json", "bridge.beat", "runner.json", "runner.beat", "heal.json", "bridge.restart", "runner.restart", "stop", "heal.reset"])
    func garbageStateFileIsQuarantined(file: String) throws {
        let h = Harness()
        defer { h.finish() }
        if file == "heal.json" { h.write(file, #"{"tier": "three"}"#) }
        try h.startRunner()
        try h.waitHealthy()
        for garbage in ["\u{0}\u{1}garbage\u{ff}", #"{"pid": "not a number"}"#] {
            let before = h.events("quarantined").filter { $0["file"]?.stringValue == file }.count
            if file == "heal.json" && before > 0 { break } // read once, at start: quarantined already
            // The owner may rewrite the file at any moment: write garbage until a reader sees it.
            try h.waitUntil("\(file) quarantined") {
                if h.events("quarantined").filter({ $0["file"]?.stringValue == file }).count > before { return true }
                h.write(file, garbage)
                return false
            }
        }
        try h.waitHealthy()
        let q = try FileManager.default.contentsOfDirectory(atPath: h.dir + "/quarantine")
        #expect(q.contains { $0.hasPrefix(file + ".") }, "moved aside, not deleted: \(q)")
        try h.waitUntil("the runner beating again (it never crashed)") { (try? h.status()["runner"]?["alive"]?.boolValue) == true }
        #expect(h.events("runner-started").count == 1, "the runner never restarted")
    }

    @Test func runnerKilledMidEscalationIsContinuedByTheNext() throws {
        let h = Harness()
        defer { h.finish() }
        let flags = ["--tick", "0.1", "--heartbeat-interval", "0.1", "--stale-after", "2", "--cooldown", "3",
                     "--term-grace", "4", "--start-grace", "5"]
        // A bridge whose loop hangs: it stops beating and cannot act on SIGTERM.
        h.write("fault", "hang")
        let runner1 = try h.startRunner(flags)
        try h.waitUntil("the hanging bridge started") { !h.events("fault-injected").isEmpty && h.bridgeIdentity != nil }
        let first = try #require(h.bridgeIdentity)
        h.track(first)
        try FileManager.default.removeItem(atPath: h.dir + "/fault")
        try h.waitUntil("tier 2 sent") { !h.heals(action: "terminate").isEmpty }
        #expect(kill(runner1.pid, SIGKILL) == 0)
        _ = try h.waitExit(runner1)
        let runner2 = try h.startRunner(flags)
        let second = try waitNewHealthyBridge(h, other: first)
        #expect(second != first)
        #expect(h.heals(action: "terminate").count == 1, "the new runner did not start over at tier 2")
        let kill3 = try #require(h.heals(action: "kill").first)
        #expect(kill3["tier"]?.intValue == 3)
        #expect(h.events("runner-started").last?["tier"]?.intValue == 2, "the second runner loaded tier 2")
        _ = runner2
    }

    @Test func secondRunnerAndSecondBridgeRefuse() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner()
        try h.waitHealthy()
        let r = try h.vigil(["runner"] + Harness.fast)
        #expect(r.code == 3)
        #expect(r.err.contains("another runner is already running"))
        let b = try h.vigil(["bridge"])
        #expect(b.code == 3)
        #expect(b.err.contains("another bridge is already running"))
    }

    @Test func restartRunnerRelaunchesAtOnceAndLeavesBridge() throws {
        let h = Harness()
        defer { h.finish() }
        let wrapper = try h.startWrapper()
        let bridge = try h.waitHealthy()
        let runner1 = try #require(try h.status()["runner"]?["pid"]?.intValue)
        let r = try h.vigil(["restart", "runner"])
        #expect(r.code == 0)
        try h.waitUntil("a new runner") {
            guard let s = try? h.status(), let pid = s["runner"]?["pid"]?.intValue else { return false }
            return pid != runner1 && s["runner"]?["alive"]?.boolValue == true
        }
        #expect(try h.waitHealthy() == bridge, "bridge untouched")
        #expect(h.heals().isEmpty, "the cold start is no heal, and the new runner found the bridge alive")
        #expect(h.events("runner-restart").count == 1)
        // vigil stop: everything exits, the wrapper too.
        let stop = try h.vigil(["stop"])
        #expect(stop.code == 0, "\(stop.err)")
        #expect(try h.waitExit(wrapper) == 0)
        #expect(bridge.liveness() == .gone)
        #expect(h.leftovers().isEmpty)
    }

    @Test func stopPreventsResurrection() throws {
        let h = Harness()
        defer { h.finish() }
        let runner = try h.startRunner()
        let bridge = try h.waitHealthy()
        let stop = try h.vigil(["stop"])
        #expect(stop.code == 0, "\(stop.err)")
        #expect(try h.waitExit(runner) == 0)
        #expect(bridge.liveness() == .gone)
        #expect(h.leftovers().isEmpty)
        #expect(h.heals().isEmpty, "the stopped bridge was not resurrected")
        #expect(try h.status()["stopped"]?.boolValue == true)
    }

    // MARK: A start is not an incident (issue 8, §2)

    @Test func coldStartIsToldAsAStartOnce() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner()
        let bridge = try h.waitHealthy()
        try h.waitUntil("\"Vigil started\" in chat.log") { chatLines(h).contains { $0.contains("Vigil started") } }
        let started = h.events("bridge-started")
        #expect(started.count == 1)
        #expect(started.first?["pid"]?.intValue == Int64(bridge.pid))
        #expect(h.heals().isEmpty && h.events("recovered").isEmpty && h.events("respawn-failed").isEmpty)
        let lines = chatLines(h).filter { $0.contains("Vigil started") }
        #expect(lines.count == 1, "\(lines)")
        #expect(lines.first?.contains("version") == true)
        #expect(try h.status()["heal"]?["failed_respawns"]?.intValue == 0)
    }

    @Test func sixQuickStopStartCyclesLeaveTheCircuitClosed() throws {
        let h = Harness()
        defer { h.finish() }
        // A long probation, so every stop comes while a respawn is unproven (the old bug: a
        // missing bridge after the restart counted as its failure, and the circuit opened).
        let flags = Harness.fast + ["--stable-after", "60", "--circuit-limit", "3"]
        for cycle in 1...6 {
            let wrapper = try h.startWrapper(flags)
            var bridge = try h.waitHealthy()
            if cycle % 2 == 0 {
                // A real respawn on probation when the stop comes.
                #expect(kill(bridge.pid, SIGKILL) == 0)
                bridge = try waitNewHealthyBridge(h, other: bridge)
            }
            let stop = try h.vigil(["stop"])
            #expect(stop.code == 0, "\(stop.err)")
            #expect(try h.waitExit(wrapper) == 0)
            try h.waitUntil("bridge gone") { bridge.liveness() == .gone }
            let heal = try #require(try h.status()["heal"])
            #expect(heal["circuit"]?.stringValue == "closed", "cycle \(cycle): \(heal)")
            #expect(heal["failed_respawns"]?.intValue == 0, "cycle \(cycle): \(heal)")
        }
        #expect(h.events("respawn-failed").isEmpty && h.events("circuit-open").isEmpty)
        #expect(h.heals(action: "respawn").count == 3, "only the three kill -9s were healed")
        #expect(h.heals().allSatisfy { $0["verdict"]?.stringValue == "dead" })
        #expect(h.events("bridge-started").count == 9)
    }

    /// The console adapter's chat log, line by line.
    func chatLines(_ h: Harness) -> [String] {
        ((try? String(contentsOfFile: h.dir + "/chat.log", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func outboxBodies(_ h: Harness) throws -> [String] {
        let r = try h.vigil(["outbox", "--json"])
        guard case .array(let rows)? = JSONValue.parse(Data(r.out.utf8)) else { Issue.record("outbox --json: \(r.out) \(r.err)"); return [] }
        return rows.compactMap { $0["body"]?.stringValue }
    }

    /// Waits until a healthy bridge other than `other` runs.
    func waitNewHealthyBridge(_ h: Harness, other: ProcessIdentity) throws -> ProcessIdentity {
        try h.waitUntil("a new healthy bridge") {
            guard let id = h.bridgeIdentity, id != other, let s = try? h.status() else { return false }
            h.track(id)
            return s["bridge"]?["verdict"]?.stringValue == "healthy" && s["runner"]?["last_verdict"]?.stringValue == "healthy"
        }
        return try #require(h.bridgeIdentity)
    }
}
