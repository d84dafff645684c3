import Foundation
import Glibc
import Testing
import VigilCore
import VigilSystem
import VigilTestSupport

/// The syscall edge's own types: FileDescriptor, FileStatus, WakePipe, Teardown.
@Suite("The syscall edge", .serialized, .timeLimit(.minutes(1)))
struct EdgeTests {
    @Test("FileDescriptor: writeAll, readAll with a limit and from an offset, closeAfter closes")
    func fileDescriptor() throws {
        let dir = try TempDir()
        let path = dir.file("f")
        let fd = try FileDescriptor.open(path, [.writeOnly, .create, .exclusive])
        try fd.closeAfter { () throws(SystemError) in try fd.writeAll(Array("hello, world".utf8)) }
        #expect(throws: SystemError.self, "closed by closeAfter") { try fd.writeAll([1]) }
        let r = try FileDescriptor.open(path, .readOnly)
        defer { r.close() }
        #expect(try r.readAll() == Array("hello, world".utf8))
        #expect(try r.readAll(limit: 5, from: 0) == Array("hello".utf8))
        #expect(try r.readAll(from: 7) == Array("world".utf8))
        #expect(try r.status().size == 12)
        #expect(throws: SystemError.self) { try FileDescriptor.open(path, [.writeOnly, .create, .exclusive]) }
    }

    @Test("FileStatus: kinds, lstat versus stat, a missing path")
    func fileStatus() throws {
        let dir = try TempDir()
        #expect(FileManager.default.createFile(atPath: dir.file("f"), contents: Data("x".utf8)))
        try FileManager.default.createSymbolicLink(atPath: dir.file("l"), withDestinationPath: dir.file("f"))
        #expect(FileStatus.at(dir.path)?.kind == .directory)
        #expect(FileStatus.at(dir.file("l"))?.kind == .regular)
        #expect(FileStatus.at(dir.file("l"), followSymlinks: false)?.kind == .symlink)
        #expect(throws: SystemError.self) { try FileStatus.of(dir.file("none")) }
        do { _ = try FileStatus.of(dir.file("none")) } catch { #expect(error.isNoEntry) }
        #expect(FileSystem.exists(dir.file("f")) && !FileSystem.exists(dir.file("none")))
    }

    @Test("WakePipe: wakes are drained once")
    func wakePipe() throws {
        let pipe = try WakePipe()
        #expect(pollReadable([pipe.readFD], timeoutMilliseconds: 0).isEmpty)
        pipe.wake()
        pipe.wake()
        #expect(pollReadable([pipe.readFD], timeoutMilliseconds: 0) == [pipe.readFD])
        #expect(pipe.drain().count == 2)
        #expect(pipe.drain().isEmpty)
    }

    @Test("Teardown.due: the first step at once, the next after the allowed time, the last repeating")
    func due() {
        let t = Teardown([.send([.terminate], allowedDuration: .seconds(5)), .kill(allowedDuration: .seconds(5))])
        let t0 = BootInstant(nanoseconds: 1_000_000_000)
        #expect(t.due(taken: 0, lastAt: nil, now: t0) == 0)
        #expect(t.due(taken: 1, lastAt: t0, now: t0 + .seconds(4)) == nil)
        #expect(t.due(taken: 1, lastAt: t0, now: t0 + .seconds(5)) == 1)
        #expect(t.due(taken: 2, lastAt: t0 + .seconds(5), now: t0 + .seconds(9)) == nil)
        #expect(t.due(taken: 2, lastAt: t0 + .seconds(5), now: t0 + .seconds(10)) == 1, "again every grace")
    }

    @Test("PidFD.perform: SIGTERM suffices for a process that obeys; the report says what was sent")
    func gracefulObeys() throws {
        let child = try Child(["/bin/sleep", "1000"])
        let report = try #require(child.identity.perform(.graceful(grace: .seconds(10))))
        #expect(report.sent == [.resume, .terminate])
        #expect(report.exited && !report.killed)
        #expect(terminatingSignal(fromWaitStatus: try child.wait()) == Signal.terminate.rawValue)
        #expect(child.identity.perform(.kill()) == nil, "gone: nothing is sent, and the caller is told")
    }

    @Test("Teardown.terminate (tier 2) ends a stopped process: SIGTERM first, pending until the SIGCONT after it")
    func terminateStopped() throws {
        let child = try Child(["/bin/sleep", "1000"])
        #expect(kill(child.pid, SIGSTOP) == 0)
        let deadline = Clock.boot() + .seconds(10)
        while ProcStat.read(pid: child.pid)?.state != "T" && Clock.boot() < deadline { ThisProcess.pause(.milliseconds(5)) }
        let report = try #require(child.identity.perform(.terminate))
        #expect(report.sent == [.terminate, .resume])
        #expect(terminatingSignal(fromWaitStatus: try child.wait()) == Signal.terminate.rawValue)
    }

    @Test("PidFD.perform: a process that ignores SIGTERM is killed after the grace")
    func gracefulKills() throws {
        // `exec` keeps the ignored disposition; wait until sleep runs, so the trap is in place.
        let child = try Child(["/bin/sh", "-c", "trap '' TERM; exec /bin/sleep 1000"])
        let deadline = Clock.boot() + .seconds(10)
        while ProcStat.commandLine(pid: child.pid).first != "/bin/sleep" && Clock.boot() < deadline { ThisProcess.pause(.milliseconds(5)) }
        let started = Clock.boot()
        let report = try #require(child.identity.perform(.graceful(grace: .milliseconds(200))))
        #expect(Clock.boot() - started >= .milliseconds(200))
        #expect(report.sent == [.resume, .terminate, .kill])
        #expect(report.exited && report.killed && report.stepsTaken == 2)
        #expect(terminatingSignal(fromWaitStatus: try child.wait()) == Signal.kill.rawValue)
    }
}
