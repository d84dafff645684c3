import Foundation
import Glibc
import Testing
@testable import VigilApp
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Missions that misbehave (issue 9; docs/missions.md, "Output cap", "Environment", "Every
/// process of a mission"): real drivers, shims and missions, a fresh state dir each, nothing
/// left running.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct MissionHostileTests {
    static func fileSize(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : -1
    }

    /// A mission printing 20 MB under a 1 MB cap: the two output files hold at most the cap
    /// (plus the cut line), the cut line says how much went, the newest bytes are all there,
    /// and the shim's own end notes still follow.
    @Test func outputOverItsCapKeepsTheNewestBytes() throws {
        let env = try MissionEnv("outcap")
        defer { env.finish() }
        try AtomicFile.makeDirectory(env.state.path)
        try #"{"mission-output-cap": "1MB"}"#.write(toFile: env.state.config, atomically: true, encoding: .utf8)
        // 200,000 numbered lines of 100 bytes: 20 MB.
        let id = try env.add(["sh", "-c", "i=0; while [ $i -lt 200000 ]; do printf '%099d\\n' $i; i=$((i+1)); done; echo LAST-LINE"])
        try env.startDriver()
        try waitUntil("the mission to end", timeout: 120) { try env.mission(id).state.isFinal }
        #expect(try env.mission(id).state == .done)

        let paths = MissionPaths(stateDir: env.state, id: id)
        let live = MissionHostileTests.fileSize(paths.output)
        let older = MissionHostileTests.fileSize(paths.previousOutput)
        let cap: Int64 = 1_000_000 // "1MB"
        #expect(live >= 0 && older > 0)
        #expect(live + older <= cap + 200, "output.log \(live) + output.log.1 \(older) bytes over a cap of \(cap)")
        let previous = readText(paths.previousOutput)
        let cut = try #require(previous.split(separator: "\n").first.map(String.init))
        #expect(cut.hasPrefix("--- vigil: output over its cap of "), "first line: \(cut)")
        let dropped = try #require(Int64(cut.components(separatedBy: ": the ").last?.prefix { $0.isNumber } ?? ""))
        let total = Int64(200_000 * 100 + "LAST-LINE\n".utf8.count)
        #expect(dropped + (older - Int64(cut.utf8.count + 1)) + live == total, "bytes cut + kept must add up to what was printed")
        // The newest bytes, in order and contiguous across the two files.
        let kept = previous.split(separator: "\n").dropFirst().map(String.init) + lines(paths.output)
        #expect(kept.last == "LAST-LINE")
        let numbers = kept.dropLast().compactMap { Int($0) }
        #expect(numbers.count == kept.count - 1 && numbers.last == 199_999)
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 }, "the kept lines are not contiguous")

        let show = try env.vigil(["mission", "show", "\(id)"])
        #expect(show.code == 0)
        #expect(show.out.contains(cut) && show.out.hasSuffix("LAST-LINE\n"))
    }

    /// Raw terminal escapes of a mission are escaped by `mission show`; UTF-8 text passes.
    @Test func showEscapesControlBytes() throws {
        let env = try MissionEnv("escape")
        defer { env.finish() }
        let id = try env.add(["printf", "red \\033[31mX\\033]0;title\\007 cr\\rbs\\b c1:\\302\\233 bad:\\377 ok: é ✓\\n"])
        try env.startDriver()
        try waitUntil("the mission to end") { try env.mission(id).state.isFinal }
        let raw = try Data(contentsOf: URL(fileURLWithPath: MissionPaths(stateDir: env.state, id: id).output))
        #expect(raw.contains(0x1b), "the file keeps the bytes as written")
        let show = try env.vigil(["mission", "show", "\(id)"])
        let out = Array(show.out.utf8)
        #expect(!out.contains(0x1b) && !out.contains(0x07) && !out.contains(0x0d) && !out.contains(0x08) && !out.contains(0xff))
        #expect(!show.out.unicodeScalars.contains { (0x80...0x9f).contains($0.value) })
        #expect(show.out.contains("red \\x1b[31mX\\x1b]0;title\\x07 cr\\x0dbs\\x08 c1:\\xc2\\x9b bad:\\xff ok: é ✓\n"))
    }

    /// `env` as a mission, with secrets in the driver's environment: they are not passed on;
    /// PATH, HOME, LANG, the VIGIL_* mission variables and what `mission-env` names are.
    @Test func missionsGetACleanEnvironment() throws {
        let env = try MissionEnv("cleanenv")
        defer { env.finish() }
        try AtomicFile.makeDirectory(env.state.path)
        try #"{"mission-env": ["DEPLOY_TARGET"]}"#.write(toFile: env.state.config, atomically: true, encoding: .utf8)
        let id = try env.add(["env"])
        try env.startDriver(env: [
            "VIGIL_WEBHOOK_URL": "http://127.0.0.1:1/hooks/SECRET-TOKEN-1",
            "VIGIL_MATRIX_PASSWORD": "SECRET-PASSWORD-2",
            "VIGIL_TEST_FAULTS": "SECRET-FAULTS-3",
            "AWS_SECRET_ACCESS_KEY": "SECRET-KEY-4",
            "DEPLOY_TARGET": "staging",
            "LANG": "C.UTF-8",
            "LC_TIME": "C",
        ])
        try waitUntil("the mission to end") { try env.mission(id).state.isFinal }
        let out = lines(MissionPaths(stateDir: env.state, id: id).output)
        let names = Set(out.compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
        #expect(!out.contains { $0.contains("SECRET") }, "secrets reached the mission: \(out)")
        #expect(out.contains("VIGIL_MISSION_ID=\(id)"))
        #expect(out.contains("VIGIL_MISSION_ATTEMPT=1"))
        #expect(out.contains("VIGIL_STATE_DIR=\(env.state.path)"))
        #expect(out.contains("DEPLOY_TARGET=staging"))
        #expect(out.contains("LANG=C.UTF-8") && out.contains("LC_TIME=C"))
        #expect(names.contains("PATH") && names.contains("VIGIL_MISSION_SCRATCH"))
        let allowed: Set<String> = ["PATH", "HOME", "LANG", "LANGUAGE", "USER", "LOGNAME", "TERM", "TZ", "TMPDIR", "DEPLOY_TARGET",
                                    "VIGIL_STATE_DIR", "VIGIL_MISSION_ID", "VIGIL_MISSION_ATTEMPT", "VIGIL_MISSION_SCRATCH", "PWD", "SHLVL", "_"]
        #expect(names.subtracting(allowed).allSatisfy { $0.hasPrefix("LC_") }, "unexpected variables: \(names.subtracting(allowed).sorted())")
    }

    /// A mission whose child starts its own session (`setsid`), then cancel: the child is
    /// ended with the mission, and the next mission on the same lock starts only after it is
    /// gone (it never runs beside it).
    // Under load the `setsid -f` parent exited before the shim opened its pidfd (which refuses
    // a zombie), and the shim then only looked at its child's exit when the pipe was quiet,
    // which the escapee never let it be: the first mission never ended. `shimNoticesAChildThat
    // DiedBeforeItsPidfd` below pins that case down without needing load.
    @Test func cancelEndsChildrenInTheirOwnSession() throws {
        let env = try MissionEnv("setsid")
        defer { env.finish() }
        let pidFile = env.path("escapee.pid")
        let overlap = env.path("overlap")
        // The escapee records its pid, then writes "alive" every 20 ms for a long while.
        let first = try env.add(["setsid", "-f", "sh", "-c", "echo $$ > \"$1\"; while :; do echo alive; sleep 0.02; done", "escapee", pidFile],
                                lock: "deploy")
        // The parent of the escapee waits, so the mission is running while we cancel it.
        let holder = try env.add(["sh", "-c", "setsid sh -c 'echo $$ > \"$1\"; exec sleep 300' escapee \"$1\" & wait; sleep 300", "m", pidFile + ".2"],
                                 lock: "deploy")
        let next = try env.add(["sh", "-c", // Alive = in /proc and not a zombie (a killed escapee waits for init to reap it).
                                "for f in \"$1\" \"$2\"; do p=$(cat \"$f\" 2>/dev/null) && [ -n \"$p\" ] && [ -e /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status && echo \"$p\" >> \"$3\"; done; echo next-ran",
                                "n", pidFile, pidFile + ".2", overlap], lock: "deploy")
        try env.startDriver()
        try waitUntil("the first mission to end") { try env.mission(first).state.isFinal }
        try waitUntil("the holder to run and its escapee to start") {
            try env.mission(holder).state == .running && FileManager.default.fileExists(atPath: pidFile + ".2")
        }
        let escapee = try #require(Int32(readText(pidFile + ".2").trimmingCharacters(in: .whitespacesAndNewlines)))
        let escapeeStat = try #require(ProcStat.read(pid: escapee))
        #expect(escapeeStat.session == escapee, "the escapee is a session leader")
        let cancel = try env.vigil(["mission", "cancel", "\(holder)"])
        #expect(cancel.code == 0)
        try waitUntil("the next mission to end") { try env.mission(next).state.isFinal }
        #expect(try env.mission(holder).state == .cancelled)
        #expect(readText(MissionPaths(stateDir: env.state, id: next).output).contains("next-ran"))
        #expect(readText(overlap).isEmpty, "the next deploy mission ran beside a process of the cancelled one: \(readText(overlap))")
        let still = ProcStat.read(pid: escapee).map { !$0.isZombie && $0.startTicks == escapeeStat.startTicks } ?? false
        #expect(!still, "the escapee of the cancelled mission still runs")
        // The first mission's `setsid -f` child was ended when that mission ended, too.
        if let p = Int32(readText(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)), let st = ProcStat.read(pid: p) {
            #expect(st.isZombie || !(ProcStat.commandLine(pid: p).joined(separator: " ").contains("escapee")), "the first escapee still runs")
        }
    }
}

/// Processes of a mission that leave its session and clear their environment (so no tag
/// finds them) are still its processes: its cgroup holds them (docs/missions.md, "Every process
/// of a mission"). Needs a writable cgroup v2 hierarchy, which these machines have as root:
/// without one the test fails rather than skips.
@Suite(.serialized, .timeLimit(.minutes(3))) struct MissionCgroupTests {
    /// `setsid -f env -i …`: its own session, no VIGIL_* variables.
    func untaggedEscapee(_ pidFile: String) -> [String] {
        ["setsid", "-f", "env", "-i", "/bin/sh", "-c", "echo $$ > \"$1\".tmp && mv \"$1\".tmp \"$1\"; exec sleep 300", "escapee", pidFile]
    }

    func escapee(_ pidFile: String) throws -> ProcessIdentity {
        try waitUntil("the escapee to start") { FileManager.default.fileExists(atPath: pidFile) }
        let pid = try #require(Int32(readText(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)))
        return try #require(ProcessIdentity.of(pid: pid))
    }

    func alive(_ p: ProcessIdentity) -> Bool {
        ProcStat.read(pid: p.pid).map { !$0.isZombie && $0.startTicks == p.startTicks } ?? false
    }

    @Test func aMissionsEndEndsWhatItStartedWithoutItsTag() throws {
        let env = try MissionEnv("cgroup-end")
        defer { env.finish() }
        let pidFile = env.path("escapee.pid")
        let go = env.path("go")
        let id = try env.add(["sh", "-c", untaggedEscapee(pidFile).map { "'\($0)'" }.joined(separator: " ") + "; while [ ! -e \"$0\" ]; do sleep 0.01; done", go])
        try env.startDriver()
        let p = try escapee(pidFile)
        defer { _ = p.signal(.kill) }
        touch(go)
        let environ = KernelFile.read("/proc/\(p.pid)/environ", limit: 1 << 20) ?? []
        #expect(!String(decoding: environ, as: UTF8.self).contains("VIGIL_"), "the escapee carries no tag")
        try waitUntil("the mission to end") { try env.mission(id).state.isFinal }
        #expect(try env.mission(id).state == .done)
        #expect(!alive(p), "the untagged escapee of the ended mission still runs")
        let group = try #require(MissionCgroup.of(env.state, mission: id))
        #expect(!group.cgroup.exists, "the mission's cgroup is removed at its end")
        let probe = env.events("missions-recovered").last?["cgroup"]
        #expect(probe == .string(MissionCgroup.base(of: env.state)!.path), "missions get cgroups here: \(String(describing: probe))")
    }

    @Test func cancelEndsWhatItStartedWithoutItsTagBeforeTheLockGoesOn() throws {
        let env = try MissionEnv("cgroup-cancel")
        defer { env.finish() }
        let pidFile = env.path("escapee.pid")
        let overlap = env.path("overlap")
        let holder = try env.add(["sh", "-c", untaggedEscapee(pidFile).map { "'\($0)'" }.joined(separator: " ") + "; sleep 300"], lock: "deploy")
        let next = try env.add(["sh", "-c", "p=$(cat \"$1\"); [ -n \"$p\" ] && [ -e /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status && echo $p > \"$2\"; echo next-ran",
                                "n", pidFile, overlap], lock: "deploy")
        try env.startDriver()
        let p = try escapee(pidFile)
        defer { _ = p.signal(.kill) }
        try waitUntil("the holder to run") { try env.mission(holder).state == .running }
        #expect(try env.vigil(["mission", "cancel", "\(holder)"]).code == 0)
        try waitUntil("the next mission to end") { try env.mission(next).state.isFinal }
        #expect(try env.mission(holder).state == .cancelled)
        #expect(readText(MissionPaths(stateDir: env.state, id: next).output).contains("next-ran"))
        #expect(readText(overlap).isEmpty, "the next deploy mission ran beside the cancelled one's escapee")
        #expect(!alive(p), "the untagged escapee of the cancelled mission still runs")
    }

    @Test func recoveryEndsWhatADeadShimsMissionStartedWithoutItsTag() throws {
        let env = try MissionEnv("cgroup-recover")
        defer { env.finish() }
        let pidFile = env.path("escapee.pid")
        let id = try env.add(["sh", "-c", untaggedEscapee(pidFile).map { "'\($0)'" }.joined(separator: " ") + "; sleep 300"], maxAttempts: 1)
        let driver = try env.startDriver()
        let p = try escapee(pidFile)
        defer { _ = p.signal(.kill) }
        try waitUntil("the shim to be recorded") { try env.mission(id).shim != nil }
        let shim = try #require(try env.mission(id).shim)
        env.kill9(driver)
        _ = env.waitForExit(driver)
        kill(shim.identity.pid, SIGKILL) // the shim dies without a result
        try waitUntil("the shim to be gone") { ProcStat.read(pid: shim.identity.pid).map { $0.isZombie } ?? true }
        #expect(alive(p), "the escapee outlives its shim")
        try env.startDriver()
        try waitUntil("the mission to end") { try env.mission(id).state.isFinal }
        #expect(!alive(p), "start-up recovery left the untagged escapee of a dead shim's mission running")
    }
}

/// The shim's pump with a child that is already a zombie when the pump starts (so it gets no
/// pidfd) and an escapee that keeps the pipe readable: the pump must still return.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ShimPumpTests {
    @Test func shimNoticesAChildThatDiedBeforeItsPidfd() throws {
        let env = try MissionEnv("pump")
        defer { env.finish() }
        try AtomicFile.makeDirectory(env.state.path)
        let paths = MissionPaths(stateDir: env.state, id: 1)
        try AtomicFile.makeDirectory(paths.directory)
        let pidFile = env.path("escapee.pid")
        var fds: [Int32] = [-1, -1]
        #expect(pipe(&fds) == 0)
        var options = Spawner.Options()
        options.newSession = false
        options.newProcessGroup = true
        options.outputDescriptor = fds[1]
        let child = try Spawner.spawn(["sh", "-c", "setsid -f sh -c 'echo $$ > \"$1\"; while :; do echo x; sleep 0.01; done' e \"$1\"",
                                       "m", pidFile], options)
        close(fds[1])
        Spawner.waitWithoutReaping(child.pid) // a zombie: openPidFD refuses it
        #expect(child.openPidFD() == nil, "a zombie gets no pidfd (the case under test)")
        try waitUntil("the escapee to start") { FileManager.default.fileExists(atPath: pidFile) && !readText(pidFile).isEmpty }
        let escapee = try #require(Int32(readText(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)))
        let escapeeIdentity = try #require(ProcessIdentity.of(pid: escapee))
        defer { _ = escapeeIdentity.signal(.kill); _ = Spawner.wait(child.pid); close(fds[0]) }
        let outFD = open(paths.output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { close(outFD) }
        let done = DispatchSemaphore(value: 0)
        let readFD = fds[0]
        let worker = Thread {
            var output = MissionOutput(fd: outFD, paths: paths, cap: 1 << 20)
            ShimMain.pump(readFD, until: child, into: &output)
            done.signal()
        }
        worker.start()
        let returned = done.wait(timeout: .now() + 20) == .success
        #expect(returned, "the pump kept reading the escapee's output and never saw its child had exited")
        if !returned { _ = escapeeIdentity.signal(.kill); done.wait() } // end of file unblocks it
    }
}

/// The pure pieces: terminal escaping (also across read boundaries) and the environment filter.
@Suite struct MissionOutputUnitTests {
    func escaped(_ pieces: [[UInt8]]) -> String {
        var carry: [UInt8] = []
        var out: [UInt8] = []
        for p in pieces { out += MissionOutput.escapeForTerminal(p, carry: &carry) }
        out += MissionOutput.escapeForTerminal([], carry: &carry, final: true)
        return String(decoding: out, as: UTF8.self)
    }

    @Test func escapesControlsAndKeepsUTF8AcrossPieces() {
        let check = Array("✓".utf8) // e2 9c 93
        #expect(escaped([[0x61] + check.prefix(1), Array(check.dropFirst()) + [0x0a]]) == "a✓\n")
        #expect(escaped([[0x1b, 0x5b, 0x32, 0x4a, 0x09, 0x7f]]) == "\\x1b[2J\t\\x7f")
        #expect(escaped([[0xc2, 0x9b, 0x31, 0x6d]]) == "\\xc2\\x9b1m") // C1 CSI
        #expect(escaped([[0xc3]]) == "\\xc3") // cut short at the very end
        #expect(escaped([[0xed, 0xa0, 0x80]]) == "\\xed\\xa0\\x80") // a UTF-16 surrogate is not UTF-8
    }

    @Test func environmentKeepsOnlyWhatIsNamed() {
        let parent = ["PATH": "/bin", "HOME": "/root", "LC_ALL": "C", "VIGIL_WEBHOOK_URL": "secret", "VIGIL_MISSION_ID": "99",
                      "GIT_SSH_COMMAND": "ssh -i k", "OTHER": "x"]
        let env = MissionEnvironment.make(from: parent, passing: ["GIT_SSH_COMMAND"], mission: ["VIGIL_MISSION_ID": "7"])
        #expect(env == ["PATH": "/bin", "HOME": "/root", "LC_ALL": "C", "GIT_SSH_COMMAND": "ssh -i k", "VIGIL_MISSION_ID": "7"])
        #expect(MissionEnvironment.make(from: [:], passing: [], mission: [:]) == ["PATH": MissionEnvironment.defaultPath])
        #expect(MissionSettings.isVariableName("GIT_SSH_COMMAND") && !MissionSettings.isVariableName("1X")
                && !MissionSettings.isVariableName("A=B") && !MissionSettings.isVariableName("A,B") && !MissionSettings.isVariableName(""))
    }
}
