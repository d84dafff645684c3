import Foundation
import Glibc
import Testing
import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Hostile surroundings (issue 9 §2; docs/operator-guide.md, "Bad input"): nothing planted in a
/// state slot hangs Vigil, a closed or broken stdout crashes nothing, durations survive the
/// hand-over to the bridge, and a state directory no command can work in is refused. Real
/// processes, a fresh state dir each; the waits are bounded waits for a condition.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct HostileInputTests {
    /// Runs `script` with `sh -c` (argv `$0`: the vigil executable), stdout and stderr as the
    /// script redirects them; returns the raw wait status (to tell a signal from an exit).
    static func shell(_ h: Harness, _ script: String) throws -> Int32 {
        var o = Spawner.Options()
        o.newSession = false
        o.environment = h.env
        let id = try Spawner.spawn(["/bin/sh", "-c", script, h.bin], o)
        return Spawner.wait(id.pid) ?? -1
    }

    static func quarantined(_ h: Harness, _ file: String) -> [[String: JSONValue]] {
        h.events("quarantined").filter { $0["file"]?.stringValue == file }
    }

    static func isFIFO(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO
    }

    // MARK: - FIFOs in state slots

    @Test func fifoHealResetIsQuarantinedAndTheRunnerKeepsBeating() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner()
        try h.waitHealthy()
        #expect(mkfifo(h.dir + "/heal.reset", 0o600) == 0)
        try h.waitUntil("heal.reset quarantined") { !HostileInputTests.quarantined(h, "heal.reset").isEmpty }
        let entry = try #require(HostileInputTests.quarantined(h, "heal.reset").first)
        #expect(entry["reason"]?.stringValue?.contains("FIFO") == true, "\(entry)")
        let movedTo = try #require(entry["moved_to"]?.stringValue)
        #expect(HostileInputTests.isFIFO(movedTo), "moved aside, not deleted: \(movedTo)")
        #expect(access(h.dir + "/heal.reset", F_OK) != 0)
        // Still beating after it: a beat newer than the quarantine.
        let seen = try #require(h.runnerBeat)
        try h.waitUntil("the runner beats on") { (h.runnerBeat ?? seen) > seen }
        // FIFOs in the slots doctor reads do not hang doctor either (the pair may quarantine
        // the markers first; vigil.json nobody but doctor reads now).
        for name in ["heal.reset", "bridge.restart", "stop", "vigil.json"] { #expect(mkfifo(h.dir + "/" + name, 0o600) == 0) }
        let r = try h.vigil(["doctor"])
        #expect([0, 1].contains(r.code), "doctor returned: \(r.code) \(r.err)")
        #expect(r.out.contains("vigil.json is a FIFO"), "doctor names the FIFO: \(r.out)")
        unlink(h.dir + "/vigil.json")
    }

    @Test func fifoConfigIsRefusedClearlyWithoutHanging() throws {
        let h = Harness()
        defer { h.finish() }
        #expect(mkfifo(h.dir + "/vigil.json", 0o600) == 0)
        let r = try h.vigil(["runner"] + Harness.fast)
        #expect(r.code == 2, "\(r.code) \(r.err)")
        #expect(r.err.contains("vigil.json is a FIFO"), "stderr: \(r.err)")
        #expect(access(h.dir + "/runner.json", F_OK) != 0, "nothing started")
        // `vigil status` reads it too: defaults, no hang.
        #expect(try h.vigil(["status"]).code == 0)
    }

    @Test func fifoMissionsWakeDoesNotStopMissionAddFromPrintingItsID() throws {
        let h = Harness()
        defer { h.finish() }
        #expect(mkfifo(h.dir + "/missions.wake", 0o600) == 0)
        let r = try h.vigil(["mission", "add", "--", "true"])
        #expect(r.code == 0, "\(r.code) \(r.err)")
        #expect(Int(r.out.trimmingCharacters(in: .whitespacesAndNewlines)) == 1, "the id: \(r.out)")
        #expect(!HostileInputTests.quarantined(h, "missions.wake").isEmpty)
        #expect(!HostileInputTests.isFIFO(h.dir + "/missions.wake"), "replaced by a regular wake file")
    }

    // MARK: - A closed or broken stdout

    @Test func statusAndMissionAddWithStdoutClosed() throws {
        let h = Harness()
        defer { h.finish() }
        let status = try HostileInputTests.shell(h, "exec \"$0\" status >&- 2>\(h.dir)/status.err")
        #expect(status == 0, "wait status \(status) (a signal is \(status & 0x7f)): \((try? String(contentsOfFile: h.dir + "/status.err", encoding: .utf8)) ?? "")")
        let add = try HostileInputTests.shell(h, "exec \"$0\" mission add -- true >&- 2>\(h.dir)/add.err")
        #expect(add == 0, "committed, so exit 0 (wait status \(add))")
        let list = try h.vigil(["mission", "list", "--json"])
        guard case .array(let missions)? = JSONValue.parse(Data(list.out.utf8)) else { Issue.record("mission list: \(list.out)"); return }
        #expect(missions.count == 1, "added once: \(list.out)")
        #expect(h.events("mission-id-unprinted").first?["mission"]?.intValue == 1)
        // A reader that went away (EPIPE, SIGPIPE ignored) is the same.
        _ = try HostileInputTests.shell(h, "(\"$0\" journal --json 2>\(h.dir)/journal.err; echo $? >\(h.dir)/journal.rc) | true")
        let rc = (try? String(contentsOfFile: h.dir + "/journal.rc", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(rc == "0", "journal into a closed pipe: \(rc ?? "?")")
    }

    @Test func wrapperPipedIntoHeadDoesNotCrashLoopTheRunner() throws {
        let h = Harness()
        defer { h.finish() }
        let fast = Harness.fast.map { "'\($0)'" }.joined(separator: " ")
        try h.spawn(["/bin/sh", "-c", "VIGIL_BIN='\(h.bin)' '\(Harness.repoRoot)/scripts/vigil-run' --state-dir '\(h.dir)' \(fast) | head -1 >'\(h.dir)/head.out'"],
                    log: "pipeline.out")
        try h.waitHealthy()
        let log = h.dir + "/chat.log"
        func echoed() -> Int? {
            guard case .ok(let p) = StateFile.read(h.dir + "/chat/echo.json", kind: "console-echo", as: JSONValue.self) else { return nil }
            return p["offset"]?.intValue.map(Int.init)
        }
        func say(_ n: Int) throws {
            let fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
            #expect(fd >= 0)
            let line = "2026-12-01T00:00:00.000Z test line \(n)\n"
            _ = line.withCString { write(fd, $0, strlen($0)) }
            close(fd)
            var st = stat()
            stat(log, &st)
            let size = Int(st.st_size)
            try h.waitUntil("line \(n) echoed") { (echoed() ?? 0) >= size }
        }
        try say(0)
        try h.waitUntil("head got its line and exited") {
            !((try? String(contentsOfFile: h.dir + "/head.out", encoding: .utf8)) ?? "").isEmpty
        }
        for n in 1...20 { try say(n) }
        #expect(h.events("runner-started").count == 1, "one runner all along: \(h.events("runner-started").count) starts")
        #expect(try h.status()["runner"]?["alive"]?.boolValue == true)
        // End the pair from the top (a SIGKILLed bridge before its runner would be respawned).
        #expect(try h.vigil(["stop"]).code == 0)
        try h.waitUntil("the pair stopped") { h.leftovers().isEmpty }
    }

    // MARK: - Durations

    @Test(arguments: [["--tick", "50us"], ["--cooldown", "0.0005"], ["--term-grace", "999us"]])
    func subMillisecondDurationsAreRefusedBeforeAnythingStarts(flag: [String]) throws {
        let h = Harness()
        defer { h.finish() }
        let r = try h.vigil(["runner"] + flag)
        #expect(r.code == 2, "\(flag): \(r.code) \(r.err)")
        #expect(r.err.contains("at least 1ms"), "\(r.err)")
        #expect(access(h.dir + "/runner.json", F_OK) != 0, "nothing started")
        h.write("vigil.json", "{\"\(flag[0].dropFirst(2))\": \"\(flag[1])\"}")
        let c = try h.vigil(["runner"])
        #expect(c.code == 2 && c.err.contains("at least 1ms"), "vigil.json: \(c.code) \(c.err)")
    }

    @Test func aMillisecondTickReachesTheBridgeIntact() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner(["--tick", "0.0015", "--heartbeat-interval", "0.1", "--stale-after", "3", "--stable-after", "1.5"])
        try h.waitUntil("a bridge") { h.bridgeRecord != nil }
        let pid = try #require(h.bridgeRecord?.pid)
        h.track(try #require(h.bridgeIdentity))
        let argv = ProcStat.commandLine(pid: pid)
        let i = try #require(argv.firstIndex(of: "--tick"), "\(argv)")
        #expect(argv[i + 1] == "0.0015", "\(argv)")
        try h.waitHealthy() // the bridge took its flags (it refused 1e-09-style ones: circuit open)
        try h.waitHealthy()
    }

    /// Every tunable survives the hand-over: flags → `Tunables.flags` → the bridge's parser.
    @Test func everyTunableRoundTripsThroughTheFlagsTheBridgeGets() throws {
        let h = Harness()
        defer { h.finish() }
        let odd = ["--tick", "1ms", "--heartbeat-interval", "0.0015", "--stale-after", "20.000000001", "--cooldown", "1.25ms",
                   "--term-grace", "0.123456789", "--start-grace", "7m", "--circuit-limit", "4", "--stable-after", "2h",
                   "--circuit-cooloff", "600.5", "--circuit-reminder", "86400", "--rss-limit", "513MB", "--max-parallel", "3",
                   "--version-file", "/tmp/v"]
        let dir = StateDirectory(h.dir)
        let first = try Configuration.load(stateDir: dir, arguments: Arguments(odd, valued: Tunables.flagNames)).tunables
        let again = try Configuration.load(stateDir: dir, arguments: Arguments(first.flags, valued: Tunables.flagNames)).tunables
        #expect(first == again, "\(first.flags)")
        #expect(!first.flags.contains { $0.first?.isNumber == true && $0.contains("e") }, "no exponents: \(first.flags)")
        for ns: Int64 in [1_000_000, 1_500_000, 1_000_001, 999_999_999, 1_000_000_000, 86_400_123_456_789] {
            let t = TimeSpan(nanoseconds: ns)
            #expect(TimeSpan.parse(t.decimalSeconds) == t, "\(ns) → \(t.decimalSeconds)")
        }
    }

    // MARK: - Unusable state directories

    @Test func stateDirThatIsAFileIsRefusedByEveryCommand() throws {
        let h = Harness()
        defer { h.finish() }
        h.write("afile", "x")
        for cmd in [["status"], ["status", "--json"], ["runner"], ["bridge"], ["journal"], ["mission", "list"], ["mission", "add", "--", "true"],
                    ["outbox"], ["say", "hi"], ["restart", "bridge"], ["heal", "reset"], ["stop"], ["doctor"]] {
            let r = try h.vigil(["--state-dir", h.dir + "/afile"] + cmd)
            #expect(r.code == 2, "\(cmd): \(r.code) \(r.out) \(r.err)")
            #expect(r.err.contains("is not a directory"), "\(cmd): \(r.err)")
        }
    }

    @Test func rootAsStateDirIsRefused() throws {
        let h = Harness()
        defer { h.finish() }
        // Read-only commands only: a broken check must not litter `/`.
        for cmd in [["status"], ["journal"]] {
            for dir in ["/", "//", "/tmp/.."] {
                let r = try h.vigil(["--state-dir", dir] + cmd)
                #expect(r.code == 2, "\(dir) \(cmd): \(r.code) \(r.err)")
                #expect(r.err.contains("cannot be /"), "\(r.err)")
            }
        }
        // The wrapper refuses both before it takes its lock (no /wrapper.lock).
        let hadLock = access("/wrapper.lock", F_OK) == 0
        h.write("afile", "x")
        for dir in ["/", h.dir + "/afile"] {
            let w = try HostileInputTests.shell(h, "VIGIL_BIN=\"$0\" exec '\(Harness.repoRoot)/scripts/vigil-run' --state-dir '\(dir)' 2>'\(h.dir)/wrapper.err'")
            let err = (try? String(contentsOfFile: h.dir + "/wrapper.err", encoding: .utf8)) ?? ""
            #expect(exitCode(fromWaitStatus: w) == 2 && err.contains("state directory"), "vigil-run --state-dir \(dir): \(w) \(err)")
        }
        #expect(hadLock || access("/wrapper.lock", F_OK) != 0)
        // From the environment too.
        let viaEnv = try HostileInputTests.shell(h, "VIGIL_STATE_DIR=/ exec \"$0\" status >/dev/null 2>&1")
        #expect(exitCode(fromWaitStatus: viaEnv) == 2, "VIGIL_STATE_DIR=/")
    }
}
