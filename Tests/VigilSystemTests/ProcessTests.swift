import Foundation
import Glibc
import Testing
import VigilCore
import VigilSystem
import VigilTestSupport

@Suite("ProcessIdentity and PidFD", .serialized, .timeLimit(.minutes(1)))
struct ProcessIdentityTests {
    @Test("Our own identity")
    func own() throws {
        let me = ProcessIdentity.current
        #expect(me.pid == getpid())
        #expect(me.isAlive && me.liveness() == .alive)
        #expect(ProcessIdentity.of(pid: getpid()) == me)
        #expect(me.startedAt <= Clock.boot())
        #expect(me.startedAt > .zero)
    }

    @Test("A spawned child is alive under its identity; once reaped it is gone")
    func childLifecycle() throws {
        let child = try Child(["/bin/sleep", "1000"])
        let id = child.identity
        #expect(id.isAlive)
        #expect(ProcessIdentity.of(pid: child.pid) == id)
        #expect(try #require(id.residentBytes()) > 0)
        #expect(id.signal(.kill))
        #expect(terminatingSignal(fromWaitStatus: try child.wait()) == SIGKILL)
        #expect(id.liveness() == .gone)
        #expect(ProcessIdentity.of(pid: id.pid) == nil)
        #expect(!id.signal(.terminate), "nothing to signal after it was reaped")
        #expect(id.openPidFD() == nil)
    }

    @Test("A zombie (exited, not reaped) is gone, cannot be opened or signalled, and can be reaped through its pidfd")
    func zombie() throws {
        let child = try Child(["/bin/sleep", "1000"])
        let pidfd = try #require(child.identity.openPidFD())
        #expect(!pidfd.hasExited)
        #expect(pidfd.reapIfChild() == nil, "still running: nothing to reap")
        kill(child.pid, SIGKILL)
        #expect(pidfd.waitForExit(timeoutMilliseconds: 20_000))
        #expect(pidfd.hasExited)
        // Not reaped yet: /proc still has it, as a zombie.
        #expect(ProcStat.read(pid: child.pid)?.isZombie == true)
        #expect(child.identity.liveness() == .gone)
        #expect(ProcessIdentity.of(pid: child.pid) == nil)
        #expect(child.identity.openPidFD() == nil)
        #expect(!child.identity.signal(.terminate))
        let status = try #require(pidfd.reapIfChild())
        child.reaped(status)
        #expect(terminatingSignal(fromWaitStatus: status) == SIGKILL)
        #expect(exitCode(fromWaitStatus: status) == 128 + SIGKILL)
        #expect(ProcStat.read(pid: child.pid) == nil)
        #expect(Spawner.reap(child.pid) == nil, "already reaped through the pidfd")
    }

    @Test("The same PID with another start time is gone, and signal() sends nothing")
    func reusedPID() throws {
        let child = try Child(["/bin/sleep", "1000"])
        let impostor = ProcessIdentity(pid: child.pid, startTicks: child.identity.startTicks + 1)
        #expect(impostor.liveness() == .gone)
        #expect(!impostor.isAlive)
        #expect(impostor.openPidFD() == nil)
        #expect(!impostor.signal(.kill))
        #expect(child.identity.isAlive)
        // Had the SIGKILL gone out, the child would have died of it, not of this SIGTERM.
        #expect(child.identity.signal(.terminate))
        #expect(terminatingSignal(fromWaitStatus: try child.wait()) == SIGTERM)
    }

    @Test("Signals through a pidfd; a pidfd reports the exit and reaps with the right status")
    func pidfdSignal() throws {
        let child = try Child(["/bin/sleep", "1000"])
        let pidfd = try #require(child.identity.openPidFD())
        #expect(pidfd.identity == child.identity)
        #expect(pidfd.signal(.terminate))
        #expect(pidfd.waitForExit(timeoutMilliseconds: 20_000))
        let status = try #require(pidfd.reapIfChild())
        child.reaped(status)
        #expect(terminatingSignal(fromWaitStatus: status) == SIGTERM)
        #expect(!pidfd.signal(.terminate), "after reaping, the pidfd refers to nothing")
        #expect(Spawner.reap(child.pid) == nil)
    }

    @Test("A PID that is not running has no identity", arguments: [0, -1, Int32.max])
    func nobody(pid: Int32) {
        #expect(ProcessIdentity.of(pid: pid) == nil)
        #expect(ProcessIdentity(pid: pid, startTicks: 1).liveness() == .gone)
        #expect(!ProcessIdentity(pid: pid, startTicks: 1).signal(.probe))
    }

    @Test("/proc/PID/stat is parsed after the last ')' even for a command named with spaces and parentheses")
    func oddCommandName() throws {
        let dir = try TempDir()
        // A script's command name is its file name. It says it runs, then blocks opening a FIFO
        // nobody writes to: one process, no children, killed at the end.
        let odd = dir.file("a b) c (d")
        try #require(mkfifo(odd + ".fifo", 0o600) == 0)
        try Data("#!/bin/sh\necho ready\nread x < \"$0.fifo\"\n".utf8).write(to: URL(fileURLWithPath: odd))
        try #require(chmod(odd, 0o755) == 0)
        let child = try spawnAndAwait([odd], line: "ready", in: dir)
        let raw = try #require(readText("/proc/\(child.pid)/stat"))
        #expect(raw.contains("(a b) c (d)"))
        let stat = try #require(ProcStat.read(pid: child.pid))
        #expect(stat.startTicks == child.identity.startTicks)
        #expect(stat.parentPID == getpid())
        #expect(stat.session == child.pid && stat.processGroup == child.pid)
        #expect(stat.state == "R" || stat.state == "S")
        #expect(ProcessIdentity.of(pid: child.pid) == child.identity)
        #expect(ProcStat.commandLine(pid: child.pid) == ["/bin/sh", odd])
        #expect(ProcStat.commandLine(pid: getpid()) == CommandLine.arguments)
    }

    @Test("Identity JSON uses pid and start_ticks")
    func codable() throws {
        let id = ProcessIdentity(pid: 42, startTicks: 123_456)
        let json = String(decoding: try JSONEncoder().encode(id), as: UTF8.self)
        #expect(json.contains(#""start_ticks":123456"#) && json.contains(#""pid":42"#))
        #expect(try JSONDecoder().decode(ProcessIdentity.self, from: Data(json.utf8)) == id)
    }
}

@Suite("Spawner", .serialized, .timeLimit(.minutes(1)))
struct SpawnerTests {
    func run(_ argv: [String], in dir: TempDir, _ configure: (inout Spawner.Options) -> Void = { _ in }) throws -> (status: Int32, output: String) {
        var options = Spawner.Options()
        options.outputPath = dir.file("out.log")
        options.workingDirectory = dir.path
        configure(&options)
        let child = try Child(argv, options)
        let status = try child.wait()
        return (status, readText(options.outputPath!) ?? "")
    }

    @Test("argv with shell metacharacters reaches the program literally")
    func literalArguments() throws {
        let dir = try TempDir()
        let args = ["$(touch pwned1)", "; touch pwned2", "`touch pwned3`", "*", "a b", "'single'", "\"double\"",
                    "$HOME", "| cat", "&& true", "\\", "", "ünïcödé", "two\nlines", "--", "-n"]
        let (status, output) = try run(["/usr/bin/printf", "[%s]\\n"] + args, in: dir)
        #expect(exitCode(fromWaitStatus: status) == 0)
        #expect(output == args.map { "[\($0)]\n" }.joined())
        #expect(dir.names() == ["out.log"], "nothing was run by a shell")
    }

    @Test("A command without a slash is looked up in PATH")
    func pathLookup() throws {
        let dir = try TempDir()
        let sh = Spawner.resolve("sh")
        #expect(sh.hasPrefix("/") && access(sh, X_OK) == 0)
        #expect(Spawner.resolve("./x") == "./x")
        let (status, output) = try run(["printf", "ok"], in: dir)
        #expect(exitCode(fromWaitStatus: status) == 0 && output == "ok")
    }

    @Test("The output file gets stdout and stderr, appended")
    func output() throws {
        let dir = try TempDir()
        let first = try run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], in: dir)
        #expect(exitCode(fromWaitStatus: first.status) == 3)
        #expect(first.output == "out\nerr\n")
        let second = try run(["/bin/sh", "-c", "echo again >&2"], in: dir)
        #expect(second.output == "out\nerr\nagain\n")
    }

    @Test("stdin is /dev/null, only 0, 1 and 2 are open, signals are default and unblocked, env is passed")
    func cleanStart() throws {
        let dir = try TempDir()
        #expect(try run(["/usr/bin/readlink", "/proc/self/fd/0"], in: dir).output == "/dev/null\n")
        try? FileManager.default.removeItem(atPath: dir.file("out.log"))

        // A descriptor of ours without close-on-exec must not leak into the child.
        let leaky = open("/dev/null", O_RDONLY)
        defer { close(leaky) }
        let fds = try run(["/bin/ls", "/proc/self/fd"], in: dir).output.split(separator: "\n")
        #expect(fds == ["0", "1", "2", "3"], "3 is ls's own directory handle")
        try? FileManager.default.removeItem(atPath: dir.file("out.log"))

        // Block a signal in this thread: the child must still start with an empty mask.
        var block = sigset_t(), old = sigset_t()
        sigemptyset(&block)
        sigaddset(&block, SIGUSR1)
        pthread_sigmask(SIG_BLOCK, &block, &old)
        let status = try run(["/bin/sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status; printf %s \"$VIGIL_TEST_VAR\""], in: dir) {
            $0.environment["VIGIL_TEST_VAR"] = "with space; and $dollar"
        }
        pthread_sigmask(SIG_SETMASK, &old, nil)
        #expect(status.output.contains("SigBlk:\t0000000000000000\n"))
        // Standard signals (1–31) are back to their defaults. glibc's sigfillset leaves out its
        // two internal real-time signals (32, 33), so what the test runner did to those is inherited.
        let ignored = try #require(status.output.split(separator: "\n").first { $0.hasPrefix("SigIgn:") }
            .flatMap { UInt64($0.dropFirst("SigIgn:\t".count), radix: 16) })
        #expect(ignored & 0x7FFF_FFFF == 0, "ignored signals: \(String(ignored, radix: 16))")
        #expect(status.output.hasSuffix("\nwith space; and $dollar"))
    }

    @Test("Working directory")
    func workingDirectory() throws {
        let dir = try TempDir()
        let real = try #require(realpath(dir.path, nil).map { p in defer { free(p) }; return String(cString: p) })
        #expect(try run(["/bin/pwd", "-P"], in: dir).output == real + "\n")
    }

    @Test("New session: the child leads its own session and process group")
    func newSession() throws {
        let child = try Child(["/bin/sleep", "1000"])
        let stat = try #require(ProcStat.read(pid: child.pid))
        #expect(stat.session == child.pid)
        #expect(stat.processGroup == child.pid)
        #expect(getsid(0) != child.pid)
    }

    @Test("Process group only, or neither")
    func groups() throws {
        var options = Spawner.Options()
        options.newSession = false
        options.newProcessGroup = true
        let grouped = try Child(["/bin/sleep", "1000"], options)
        let g = try #require(ProcStat.read(pid: grouped.pid))
        #expect(g.processGroup == grouped.pid)
        #expect(g.session == getsid(0))

        options.newProcessGroup = false
        let plain = try Child(["/bin/sleep", "1000"], options)
        let p = try #require(ProcStat.read(pid: plain.pid))
        #expect(p.processGroup == getpgrp())
        #expect(p.session == getsid(0))
    }

    @Test("A program that does not exist: a clear error, no process")
    func missingProgram() throws {
        let dir = try TempDir()
        let error = try #require(throws: Spawner.SpawnError.self) {
            _ = try Spawner.spawn([dir.file("no-such-program")])
        }
        #expect(error.errno == ENOENT)
        #expect(error.description == "cannot start \(dir.file("no-such-program")): No such file or directory")
        #expect(throws: Spawner.SpawnError.self) { _ = try Spawner.spawn(["vigil-no-such-command-anywhere"]) }
        // An output file that cannot be opened is a SystemError naming it.
        var options = Spawner.Options()
        options.outputPath = dir.file("missing/out.log")
        let e2 = try #require(throws: SystemError.self) { _ = try Spawner.spawn(["/bin/true"], options) }
        #expect(e2.call == "open" && e2.subject == dir.file("missing/out.log"))
    }

    @Test("Wait statuses as a shell reports them")
    func statuses() throws {
        let dir = try TempDir()
        #expect(exitCode(fromWaitStatus: try run(["/bin/sh", "-c", "exit 0"], in: dir).status) == 0)
        let s = try run(["/bin/sh", "-c", "exit 255"], in: dir).status
        #expect(exitCode(fromWaitStatus: s) == 255 && terminatingSignal(fromWaitStatus: s) == nil)
        let k = try run(["/bin/sh", "-c", "kill -TERM $$"], in: dir).status
        #expect(exitCode(fromWaitStatus: k) == 128 + SIGTERM && terminatingSignal(fromWaitStatus: k) == SIGTERM)
    }
}

/// `Cgroup` against the real cgroup v2 hierarchy (these machines have one, writable as root).
@Suite(.serialized) struct CgroupTests {
    @Test func aProcessMovedInIsListedAndKilledWithItsChildren() throws {
        let own = try #require(Cgroup.ofCurrentProcess(), "no cgroup v2 hierarchy here")
        let group = own.child("vigil-test-\(getpid())")
        try group.create()
        defer { group.killAll(); try? group.remove() }
        // A shell that moves itself in, then starts a child in its own session.
        let child = try Spawner.spawn(["/bin/sh", "-c", "echo 0 > \"$1\"/cgroup.procs || exit 1; setsid sleep 300 & exec sleep 300", "s", group.path])
        defer { _ = child.signal(.kill); _ = Spawner.wait(child.pid) }
        let deadline = Clock.boot() + .seconds(30)
        while group.processes().count < 2 && Clock.boot() < deadline { usleep(10_000) }
        #expect(group.processes().count == 2, "the shell's exec'd sleep and its setsid child: \(group.processes())")
        #expect(group.isPopulated)
        #expect(group.killAll() == 2)
        #expect(group.waitUntilEmpty(timeout: .seconds(30)), "cgroup.events says empty (POLLPRI woke the wait)")
        #expect(!group.isPopulated)
        try group.remove()
        #expect(!group.exists)
        try group.remove() // gone already: fine
    }

    @Test func mountPointsAreUnescaped() {
        #expect(Cgroup.unescapeMountPath("/sys/fs/cgroup") == "/sys/fs/cgroup")
        #expect(Cgroup.unescapeMountPath("/a\\040b\\134c") == "/a b\\c")
        #expect(Cgroup.unescapeMountPath("/cut\\04") == "/cut\\04")
    }
}
