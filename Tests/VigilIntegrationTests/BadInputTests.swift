import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Bad input gets a clear sentence on stderr and a non-zero exit, or a journaled verdict;
/// never a crash and never a silent default.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct BadInputTests {
    @Test(arguments: [
        (["runner", "--tick", "0"], "--tick must be greater than zero"),
        (["runner", "--cooldown", "-1s"], "--cooldown must be greater than zero"),
        (["runner", "--stale-after", "banana"], "not a duration"),
        (["runner", "--heartbeat-interval", "2", "--stale-after", "1"], "must be larger than --heartbeat-interval"),
        (["runner", "--heartbeat-interval", "1s", "--stale-after", "1s"], "must be larger than --heartbeat-interval"),
        (["runner", "--frobnicate"], "unknown option --frobnicate"),
        (["runner", "--circuit-limit", "0"], "--circuit-limit must be a whole number"),
        (["runner", "--rss-limit", "lots"], "not a size"),
        (["runner", "--version-file", "a", "--version-command", "b"], "not both"),
        (["runner", "--journal-max-bytes", "100"], "not a size of at least 4KiB"),
        (["runner", "--journal-keep", "0"], "--journal-keep must be a whole number from 1 to 20"),
        (["bridge", "--tick"], "--tick needs a value"),
        (["status", "extra"], "unexpected argument"),
        (["restart", "everything"], "say which process"),
        (["nonsense"], "unknown command"),
    ])
    func badArgumentsAreRefusedClearly(args: [String], message: String) throws {
        let h = Harness()
        defer { h.finish() }
        let r = try h.vigil(args)
        #expect(r.code == 2, "exit code for \(args): \(r.code) \(r.err)")
        #expect(r.err.contains(message), "stderr for \(args): \(r.err)")
        #expect(!r.err.contains("Fatal error"))
        #expect(h.leftovers().isEmpty)
    }

    @Test(arguments: [
        ("{ not json", "is not a JSON object"),
        (#"{"tick": "fast"}"#, "not a duration"),
        (#"{"colour": "blue"}"#, "unknown key"),
        (#"{"stale-after": 0.5, "heartbeat-interval": 1}"#, "must be larger than --heartbeat-interval"),
        (#"{"chat": {"adapters": ["carrier-pigeon"]}}"#, "carrier-pigeon"),
    ])
    func garbageConfigIsRefusedClearly(config: String, message: String) throws {
        let h = Harness()
        defer { h.finish() }
        h.write("vigil.json", config)
        let r = try h.vigil(["runner"])
        #expect(r.code == 2, "\(r.code) \(r.err)")
        #expect(r.err.contains(message), "stderr: \(r.err)")
    }

    @Test func everySubcommandHasHelp() throws {
        let h = Harness()
        defer { h.finish() }
        for cmd in ["bridge", "runner", "status", "journal", "mission", "outbox", "say", "restart", "heal", "stop", "doctor"] {
            let r = try h.vigil([cmd, "--help"])
            #expect(r.code == 0, "\(cmd) --help: \(r.err)")
            #expect(r.out.contains("usage: vigil \(cmd)"), "\(cmd) --help: \(r.out)")
        }
        // The benchmarks and test drivers are `vigil-bench`'s, not the product's.
        #expect(try h.vigil(["bench", "--help"]).code == 2)
        for cmd in ["heal", "missions", "chat", "alert", "checkpoint", "journal", "drive", "fill"] {
            let r = try h.run(Binaries.vigilBench, [cmd, "--help"])
            #expect(r.code == 0, "vigil-bench \(cmd) --help: \(r.err)")
            #expect(r.out.contains("usage: vigil-bench"), "vigil-bench \(cmd) --help: \(r.out)")
        }
    }

    @Test func unusableStateDirIsAClearError() throws {
        let h = Harness()
        defer { h.finish() }
        h.write("afile", "x")
        let r = try h.vigil(["--state-dir", h.dir + "/afile/state", "runner"])
        #expect(r.code != 0)
        #expect(r.err.contains("state directory") && r.err.contains("afile/state"), "\(r.err)")
    }

    @Test func commandsOnAMissingStateDirSaySo() throws {
        let h = Harness()
        defer { h.finish() }
        for cmd in [["status"], ["journal"], ["stop"], ["heal", "reset"]] {
            let r = try h.vigil(["--state-dir", h.dir + "/nothing-here"] + cmd)
            #expect(r.code == 1, "\(cmd): \(r.code)")
            #expect(r.err.contains("no state directory"), "\(cmd): \(r.err)")
        }
    }

    @Test func failingVersionCommandIsJournaledNotFatal() throws {
        let h = Harness()
        defer { h.finish() }
        try h.startRunner(Harness.fast + ["--version-command", "/bin/false"])
        try h.waitUntil("version-unknown journaled") { !h.events("version-unknown").isEmpty }
        try h.waitHealthy()
        #expect(h.events("version-unknown").first?["detail"]?.stringValue?.contains("failed") == true)
    }

    @Test func hangingVersionCommandIsBoundedAndJournaled() throws {
        let h = Harness()
        defer { h.finish() }
        // The bridge's stamp waits for the command at most 5 s; the runner never blocks a tick.
        try h.startRunner(Harness.fast + ["--version-command", "/bin/sleep 1000", "--start-grace", "10"])
        try h.waitUntil("version command hung, journaled", timeout: 30) {
            h.events("version-unknown").contains { $0["detail"]?.stringValue?.contains("hung") == true }
        }
        try h.waitHealthy(timeout: 30)
        let runnerBeats = try #require(try h.status()["runner"]?["heartbeat_age_ms"]?.doubleValue)
        #expect(runnerBeats < 5000, "the runner kept ticking")
        // No `sleep` left behind by the version source.
        #expect(h.leftovers().allSatisfy { !$0.1.hasPrefix("/bin/sleep") })
    }
}
