import Foundation
import Testing
import VigilCore
import VigilSystem
import VigilTestSupport

/// `CommandRun`: a command to its end, bounded, output tail kept, nothing left running.
@Suite("CommandRun", .serialized, .timeLimit(.minutes(1)))
struct CommandRunTests {
    static func gone(_ pid: Int32) -> Bool {
        guard let stat = ProcStat.read(pid: pid) else { return true }
        return stat.isZombie
    }

    @Test("Exit code, merged output, working directory and environment")
    func exitCode() throws {
        let dir = try TempDir("vigil-cmdrun")
        let out = try CommandRun.run(["/bin/sh", "-c", "echo out; echo err >&2; pwd; echo \"$VIGIL_T\"; exit 3"],
                                     workingDirectory: dir.path, environment: ["VIGIL_T": "value"], timeout: .seconds(10))
        #expect(out.exitCode == 3 && out.signal == nil && !out.timedOut && !out.succeeded)
        #expect(out.output == "out\nerr\n\(dir.path)\nvalue\n")
        let ok = try CommandRun.run(["true"], timeout: .seconds(10))
        #expect(ok.succeeded && ok.exitCode == 0 && ok.output.isEmpty)
    }

    @Test("A command killed by a signal has no exit code")
    func signal() throws {
        let out = try CommandRun.run(["/bin/sh", "-c", "kill -TERM $$"], timeout: .seconds(10))
        #expect(out.exitCode == nil && out.signal == 15 && !out.timedOut && !out.succeeded)
    }

    @Test("Only the last outputCap bytes are kept")
    func tail() throws {
        let out = try CommandRun.run(["/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done"],
                                     timeout: .seconds(30), outputCap: 100)
        #expect(out.succeeded)
        #expect(out.output.utf8.count == 100)
        #expect(out.output.hasSuffix("line19998\nline19999\n"))
    }

    @Test("A program that cannot be started throws")
    func missing() {
        #expect(throws: (any Error).self) { try CommandRun.run(["/nonexistent/vigil-no-such-program"], timeout: .seconds(5)) }
    }

    @Test("A timeout kills the whole group, the grandchild holding the pipe too, within the bound")
    func timeoutKillsGroup() throws {
        let t0 = Clock.boot()
        let out = try CommandRun.run(["/bin/sh", "-c", "sleep 100 & echo $$ $!; sleep 100"], timeout: .milliseconds(300))
        let took = Clock.boot() - t0
        #expect(out.timedOut && out.exitCode == nil && out.signal == 9 && !out.succeeded)
        #expect(took < .seconds(2.5), "took \(took)")
        let pids = out.output.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Int32($0) }
        #expect(pids.count == 2, "\(out.output)")
        for pid in pids { try waitUntil("pid \(pid) gone", timeout: 10) { Self.gone(pid) } }
    }

    @Test("A leader that exits leaves nothing of its group behind, and a process that left the group cannot hold the call past the drain bound")
    func leftovers() throws {
        let inGroup = try CommandRun.run(["/bin/sh", "-c", "sleep 100 & echo $!; exit 0"], timeout: .seconds(10))
        #expect(inGroup.succeeded)
        let pid = try #require(Int32(inGroup.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        try waitUntil("the backgrounded sleep gone", timeout: 10) { Self.gone(pid) }

        let t0 = Clock.boot()
        let escaped = try CommandRun.run(["/bin/sh", "-c", "setsid sleep 100 & echo $!; exit 0"], timeout: .seconds(10))
        #expect(Clock.boot() - t0 < .seconds(3))
        #expect(escaped.succeeded)
        // It left the group (its own session), so it is ours to end: by its verified identity.
        let other = try #require(Int32(escaped.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        if let id = ProcessIdentity.of(pid: other) { id.signal(.kill) }
        try waitUntil("the escaped sleep gone", timeout: 10) { Self.gone(other) }
    }
}
