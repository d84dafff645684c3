import Foundation
import Glibc
import Testing
import VigilCore
import VigilSystem
import VigilTestSupport

@Suite("FileLock", .serialized, .timeLimit(.minutes(1)))
struct FileLockTests {
    /// `flock -n` in another process: exit 0 when it got the lock, 7 when it is held.
    func otherProcessCanLock(_ path: String) throws -> Bool {
        let c = try Child(["/usr/bin/flock", "-n", "-E", "7", path, "/bin/true"])
        let code = exitCode(fromWaitStatus: try c.wait())
        try #require(code == 0 || code == 7, "flock(1) exited \(code)")
        return code == 0
    }

    @Test("While we hold the lock another process cannot take it; after release it can")
    func weHold() throws {
        let dir = try TempDir()
        let path = dir.file("bridge.lock")
        #expect(FileLock.isFree(path))
        let lock = try #require(try FileLock.tryLock(path))
        #expect(lock.path == path)
        #expect(!FileLock.isFree(path))
        #expect(try !otherProcessCanLock(path))
        #expect(try FileLock.tryLock(path) == nil, "a second lock in this process conflicts too")
        lock.release()
        lock.release()
        // Free once every reference to the open file is gone: a process another test is
        // spawning at this moment may hold one between its fork and its exec (close-on-exec
        // closes it there), so wait for that, bounded.
        let end = Clock.boot() + .seconds(5)
        while !FileLock.isFree(path) && Clock.boot() < end { usleep(5000) }
        #expect(FileLock.isFree(path))
        #expect(try otherProcessCanLock(path))
    }

    @Test("The lock goes with the value")
    func deinitReleases() throws {
        let dir = try TempDir()
        let path = dir.file("x.lock")
        do {
            let held = try FileLock.tryLock(path)
            #expect(held != nil && !FileLock.isFree(path))
        }
        #expect(FileLock.isFree(path))
    }

    @Test("Another process holds it: tryLock and lock(attempts:) fail, isFree is false; its death frees it")
    func theyHold() throws {
        let dir = try TempDir()
        let path = dir.file("bridge.lock")
        // One process: the shell takes the lock on fd 9 and execs sleep, which keeps fd 9.
        let holder = try spawnAndAwait(["/bin/sh", "-c", "exec 9>>\"$0\"; /usr/bin/flock 9; echo locked; exec /bin/sleep 1000", path],
                                       line: "locked", in: dir)
        #expect(!FileLock.isFree(path))
        #expect(try FileLock.tryLock(path) == nil)
        #expect(try FileLock.lock(path, attempts: 2) == nil)
        holder.killAndReap()
        #expect(FileLock.isFree(path))
        let mine = try FileLock.lock(path, attempts: 1)
        #expect(mine != nil)
    }

    @Test("isFree never creates the file")
    func isFreeDoesNotCreate() throws {
        let dir = try TempDir()
        #expect(FileLock.isFree(dir.file("none.lock")))
        #expect(dir.names().isEmpty)
    }

    @Test("A lock file that cannot be opened is a SystemError")
    func unopenable() throws {
        let dir = try TempDir()
        let e = try #require(throws: SystemError.self) { _ = try FileLock.tryLock(dir.file("no/such/dir.lock")) }
        #expect(e.call == "open" && e.errno == ENOENT)
    }
}

@Suite("Inotify", .serialized, .timeLimit(.minutes(1)))
struct InotifyTests {
    /// Drains until every expected name was reported (waiting on the descriptor, not sleeping).
    func awaitNames(_ names: Set<String>, from watcher: Inotify, in dir: String) throws -> [String] {
        var seen: [String] = []
        let deadline = Clock.boot() + TimeSpan.seconds(20)
        while !names.isSubset(of: Set(seen)) {
            let left = deadline - Clock.boot()
            try #require(left > .zero, "never saw \(names.subtracting(seen)); saw \(seen)")
            _ = pollReadable([watcher.fd], timeoutMilliseconds: Int32(left.milliseconds))
            for event in watcher.drain() {
                #expect(event.directory == dir)
                seen.append(event.name)
            }
        }
        return seen
    }

    @Test("Sees files created, replaced by rename, written and removed")
    func events() throws {
        let dir = try TempDir()
        let watcher = try Inotify()
        try watcher.watch(directory: dir.path)
        #expect(watcher.drain().isEmpty)

        let fd = open(dir.file("heartbeat"), O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        close(fd)
        _ = try awaitNames(["heartbeat"], from: watcher, in: dir.path)

        // An atomic replace shows up under the target's name (moved in).
        try AtomicFile.write(Data("x".utf8), to: dir.file("bridge.restart"))
        _ = try awaitNames(["bridge.restart"], from: watcher, in: dir.path)

        try AtomicFile.remove(dir.file("bridge.restart"))
        _ = try awaitNames(["bridge.restart"], from: watcher, in: dir.path)

        let other = try TempDir()
        try Data("y".utf8).write(to: URL(fileURLWithPath: other.file("moved")))
        try #require(rename(other.file("moved"), dir.file("moved-in")) == 0)
        _ = try awaitNames(["moved-in"], from: watcher, in: dir.path)
        #expect(watcher.drain().isEmpty)
    }

    @Test("Two directories are told apart")
    func twoDirectories() throws {
        let a = try TempDir(), b = try TempDir()
        let watcher = try Inotify()
        try watcher.watch(directory: a.path)
        try watcher.watch(directory: b.path)
        try AtomicFile.write(Data(), to: b.file("in-b"))
        var got: [(directory: String, name: String)] = []
        let deadline = Clock.boot() + TimeSpan.seconds(20)
        while !got.contains(where: { $0.name == "in-b" }) && Clock.boot() < deadline {
            _ = pollReadable([watcher.fd], timeoutMilliseconds: 20_000)
            got += watcher.drain()
        }
        #expect(got.filter { $0.name == "in-b" }.allSatisfy { $0.directory == b.path })
        #expect(!got.isEmpty)
    }

    @Test("Watching a missing directory is a SystemError")
    func missing() throws {
        let dir = try TempDir()
        let watcher = try Inotify()
        let e = try #require(throws: SystemError.self) { try watcher.watch(directory: dir.file("nope")) }
        #expect(e.call == "inotify_add_watch" && e.errno == ENOENT)
    }
}

@Suite("Clock and SystemError")
struct ClockTests {
    @Test("The boot clock moves forward; the boot id is known")
    func boot() {
        let a = Clock.boot()
        let b = Clock.boot()
        #expect(b >= a && a > .zero)
        #expect(Clock.bootID.count == 36)
        #expect(Clock.ticksPerSecond > 0)
        #expect(Clock.iso(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
    }

    @Test("SystemError says which call failed on what, and why")
    func descriptions() {
        #expect(SystemError("open", errno: ENOENT, subject: "/x").description == "open /x: No such file or directory")
        #expect(SystemError("pipe", errno: EMFILE).description == "pipe: Too many open files")
        #expect(SystemError("write", errno: ENOSPC).isNoSpace)
        #expect(SystemError("write", errno: EDQUOT).isNoSpace)
        #expect(throws: SystemError("close", errno: EBADF, subject: "fd -1")) { try sys("close", "fd -1") { close(-1) } }
        #expect((try? sys("getpid") { getpid() }) == getpid())
    }
}
