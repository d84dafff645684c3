import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// `--timeout` and `--silence-limit` (docs/missions.md, "Timeouts and silence"): real missions
/// under the test driver (term grace 0.3 s), ended with the reason that says which.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct MissionLimitTests {
    @Test func timeoutAndSilenceEndAMissionWithTheirReason() throws {
        let env = try MissionEnv("limits")
        defer { env.finish() }
        let slow = try env.add(["sleep", "300"], flags: ["--timeout", "1s"])
        let stubborn = try env.add(["sh", "-c", "trap '' TERM; sleep 300"], flags: ["--timeout", "1s"])
        let quiet = try env.add(["sh", "-c", "echo hello; sleep 300"], flags: ["--silence-limit", "1s"])
        let chatty = try env.add(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.3; done"], flags: ["--silence-limit", "1s"])
        try env.startDriver(maxParallel: 4)
        try waitUntil("all four to end", timeout: 60) { try [slow, stubborn, quiet, chatty].allSatisfy { try env.mission($0).state.isFinal } }
        let s = try env.mission(slow)
        #expect(s.state == .failed && s.reason == "timed out after 1s (killed by SIGTERM)", "\(s.reason ?? "")")
        let k = try env.mission(stubborn)
        #expect(k.state == .failed && k.reason == "timed out after 1s (killed by SIGKILL)", "\(k.reason ?? "")")
        let q = try env.mission(quiet)
        #expect(q.state == .failed && q.reason == "silent for 1s (killed by SIGTERM)", "\(q.reason ?? "")")
        let c = try env.mission(chatty)
        #expect(c.state == .done, "output every 0.3 s keeps a 1 s silence limit from firing: \(c.reason ?? "")")
        #expect(env.events("mission-timeout").count == 2 && env.events("mission-silent").count == 1)
    }

    @Test func theDefaultComesFromVigilJSONAndBadValuesAreRefused() throws {
        let env = try MissionEnv("limits-default")
        defer { env.finish() }
        try AtomicFile.makeDirectory(env.state.path)
        try Data(#"{"mission-timeout": "1s"}"#.utf8).write(to: URL(fileURLWithPath: env.state.config))
        let id = try env.add(["sleep", "300"])
        let own = try env.add(["sh", "-c", "sleep 2; echo fine"], flags: ["--timeout", "1h"])
        let bad = try env.vigil(["mission", "add", "--timeout", "soon", "--", "true"], cwd: env.root)
        #expect(bad.code == 2 && bad.err.contains("--timeout"), "\(bad.err)")
        try env.startDriver(maxParallel: 2)
        try waitUntil("both to end", timeout: 60) { try env.mission(id).state.isFinal && env.mission(own).state.isFinal }
        #expect(try env.mission(id).reason == "timed out after 1s (killed by SIGTERM)")
        #expect(try env.mission(own).state == .done, "its own --timeout 1h wins over the default")
    }
}

/// `--at-most-once` (docs/missions.md, "Lifecycle"): the runner and the shim killed -9 while the
/// command runs; the mission is never started again.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct AtMostOnceTests {
    @Test func aCrashEndsAnAtMostOnceMissionInsteadOfRunningItAgain() throws {
        let env = try MissionEnv("at-most-once")
        defer { env.finish() }
        let runs = env.path("runs"), again = env.path("runs-again")
        let a = try env.add(["sh", "-c", "echo ran >> \"$0\"; sleep 300", runs], flags: ["--at-most-once"])
        let b = try env.add(["sh", "-c", "echo ran >> \"$0\"; [ \"$VIGIL_MISSION_ATTEMPT\" = 2 ] || sleep 300", again])
        let driver = try env.startDriver(maxParallel: 2)
        try waitUntil("both commands to run") { lines(runs).count == 1 && lines(again).count == 1 }
        let shims = [try #require(try env.mission(a).shim), try #require(try env.mission(b).shim)]
        env.kill9(driver)
        for s in shims { kill(s.identity.pid, SIGKILL) }
        try waitUntil("the shims to be gone") { shims.allSatisfy { ProcStat.read(pid: $0.identity.pid).map(\.isZombie) ?? true } }
        try env.startDriver(maxParallel: 2)
        try waitUntil("both to end") { try env.mission(a).state.isFinal && env.mission(b).state.isFinal }
        let m = try env.mission(a)
        #expect(m.state == .failed && m.attempts == 1, "\(m.state) \(m.attempts)")
        #expect(m.reason?.hasPrefix("interrupted: may have run") == true, "\(m.reason ?? "")")
        #expect(lines(runs).count == 1, "an at-most-once mission ran once")
        #expect(try env.mission(b).state == .done && lines(again).count == 2, "the default is at least once: it ran again")
        let retry = try env.vigil(["mission", "retry", "\(a)"])
        #expect(retry.code == 1 && retry.err.contains("never started again"), "\(retry.err)")
        let shown = try env.vigil(["mission", "show", "\(a)", "--json"])
        #expect(shown.out.contains(#""at_most_once":true"#), "\(shown.out)")
    }
}

/// `--retries` and `vigil mission retry` (docs/missions.md, "Lifecycle").
@Suite(.serialized, .timeLimit(.minutes(3)))
struct MissionRetryTests {
    /// Fails until its third run (a counter file), then succeeds.
    func flaky(_ counter: String, succeedAt n: Int) -> [String] {
        ["sh", "-c", "n=$(cat \"$0\" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > \"$0\"; echo \"run $n attempt $VIGIL_MISSION_ATTEMPT\"; [ $n -ge \(n) ]", counter]
    }

    @Test func failedAttemptsAreRetriedWithBackoffAndFromTheCheckpoint() throws {
        let env = try MissionEnv("retries")
        defer { env.finish() }
        let flaky = try env.add(flaky(env.path("c1"), succeedAt: 3), flags: ["--retries", "2", "--retry-backoff", "0.2s"])
        let hopeless = try env.add(["false"], flags: ["--retries", "1", "--retry-backoff", "0.1s"])
        let resumes = try env.add(["sh", "-c", """
            if [ -n "$VIGIL_CHECKPOINT" ]; then echo "resumed from $(cat "$VIGIL_CHECKPOINT")"; exit 0; fi
            echo half > "$VIGIL_MISSION_SCRATCH/s"; "$0" checkpoint save "$VIGIL_MISSION_SCRATCH/s" >/dev/null; exit 4
            """, vigilPath], flags: ["--retries", "1", "--retry-backoff", "0.1s"])
        try env.startDriver(maxParallel: 3)
        try waitUntil("all three to end", timeout: 60) { try [flaky, hopeless, resumes].allSatisfy { try env.mission($0).state.isFinal } }
        let f = try env.mission(flaky)
        #expect(f.state == .done && f.attempts == 3 && f.retried == 2, "\(f.state) \(f.attempts) \(f.retried) \(f.reason ?? "")")
        let h = try env.mission(hopeless)
        #expect(h.state == .failed && h.attempts == 2 && h.reason == "exited with status 1 (after 1 retry)", "\(h.reason ?? "")")
        let r = try env.mission(resumes)
        #expect(r.state == .done && r.attempts == 2)
        #expect(readText(MissionPaths(stateDir: env.state, id: resumes).output).contains("resumed from half"))
        let scheduled = env.events("mission-retry-scheduled")
        #expect(scheduled.count == 4, "2 + 1 + 1 retries: \(scheduled.count)")
        #expect(scheduled.contains { $0["reason"]?.stringValue == "attempt 1 exited with status 1; retry 1 of 2" })
    }

    @Test func anOperatorRetriesAFailedMission() throws {
        let env = try MissionEnv("retry-cmd")
        defer { env.finish() }
        let id = try env.add(flaky(env.path("c"), succeedAt: 2))
        try env.startDriver()
        try waitUntil("the first attempt to fail") { try env.mission(id).state == .failed }
        #expect(try env.vigil(["mission", "retry", "\(id)"]).code == 0)
        try waitUntil("the retry to be done") { try env.mission(id).state == .done }
        #expect(try env.mission(id).attempts == 2)
        let again = try env.vigil(["mission", "retry", "\(id)"])
        #expect(again.code == 1 && again.err.contains("not failed"), "\(again.err)")
        #expect(try env.vigil(["mission", "retry", "999"]).code == 1)
    }
}

/// The breaker per lock key (docs/missions.md, "A breaker per key").
@Suite(.serialized, .timeLimit(.minutes(3)))
struct KeyBreakerTests {
    func setUp(_ env: MissionEnv, limit: Int, coolOff: String) throws -> [Int64] {
        try AtomicFile.makeDirectory(env.state.path)
        try Data(#"{"key-breaker-limit": \#(limit), "key-breaker-cooloff": "\#(coolOff)"}"#.utf8).write(to: URL(fileURLWithPath: env.state.config))
        return try [["false"], ["false"], ["true"], ["true"]].map { try env.add($0, lock: "repo") }
    }

    @Test func aKeyPausesAfterKFailuresInARowUntilResumed() throws {
        let env = try MissionEnv("breaker")
        defer { env.finish() }
        let ids = try setUp(env, limit: 2, coolOff: "1h")
        let other = try env.add(["true"], lock: "elsewhere")
        try env.startDriver()
        try waitUntil("the key to pause") { !env.events("mission-key-paused").isEmpty }
        try waitUntil("the mission on another key to run") { try env.mission(other).state == .done }
        #expect(try env.mission(ids[0]).state == .failed && env.mission(ids[1]).state == .failed)
        #expect(try env.mission(ids[2]).state == .pending && env.mission(ids[3]).state == .pending, "the missions behind a paused key wait")
        #expect(env.events("mission-key-paused").first?["failures"]?.intValue == 2)
        let list = try env.vigil(["mission", "list"])
        #expect(list.out.contains("lock key repo paused since"), "\(list.out)")
        let resume = try env.vigil(["mission", "resume-key", "repo"])
        #expect(resume.code == 0 && resume.out.contains("resumed"), "\(resume.out) \(resume.err)")
        try waitUntil("the waiting missions to run") { try env.mission(ids[3]).state == .done }
        #expect(try env.mission(ids[2]).state == .done)
        #expect(try env.vigil(["mission", "resume-key", "repo"]).out.contains("was not paused"))
    }

    @Test func afterTheCoolOffOneTrialRunsAndItsSuccessClosesTheBreaker() throws {
        let env = try MissionEnv("breaker-trial")
        defer { env.finish() }
        let ids = try setUp(env, limit: 2, coolOff: "1s")
        try env.startDriver()
        try waitUntil("all to end", timeout: 60) { try ids.allSatisfy { try env.mission($0).state.isFinal } }
        #expect(try env.mission(ids[2]).state == .done && env.mission(ids[3]).state == .done)
        #expect(env.events("mission-key-paused").count == 1)
        #expect(env.events("mission-key-resumed").first?["by"]?.stringValue == "a mission that succeeded")
    }
}
