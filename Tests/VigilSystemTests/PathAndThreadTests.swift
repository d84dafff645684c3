import Foundation
import Synchronization
import Testing
import VigilCore
import VigilSystem
import VigilTestSupport

/// `Path` (path names as text) and `SystemThread`/`ThreadLocal`, which stand in for NSString's
/// path methods and Foundation's `Thread` (docs/architecture.md, "Foundation: Essentials only").
@Suite("Path, SystemThread, ThreadLocal", .timeLimit(.minutes(1)))
struct PathAndThreadTests {
    @Test("lastComponent, parent, components: trailing slashes do not count; the root is its own parent")
    func names() {
        #expect(Path.lastComponent("/a/b") == "b")
        #expect(Path.lastComponent("/a/b/") == "b")
        #expect(Path.lastComponent("/") == "/")
        #expect(Path.lastComponent("a") == "a")
        #expect(Path.lastComponent("") == "")
        #expect(Path.parent("/a/b") == "/a")
        #expect(Path.parent("/a/b//") == "/a")
        #expect(Path.parent("/a") == "/")
        #expect(Path.parent("/") == "/")
        #expect(Path.parent("a") == "")
        #expect(Path.parent("a/b") == "a")
        #expect(Path.components("/a//b/") == ["a", "b"])
    }

    @Test("standardized: . and .. and repeated slashes resolved; symlinks resolved where the path exists")
    func standardized() throws {
        let dir = try TempDir()
        let real = FileSystem.realPath(dir.path)!
        try AtomicFile.makeDirectory(dir.file("real"))
        try FileManager.default.createSymbolicLink(atPath: dir.file("link"), withDestinationPath: dir.file("real"))
        #expect(Path.standardized(dir.path + "/./real//") == real + "/real")
        #expect(Path.standardized(dir.path + "/link") == real + "/real")
        #expect(Path.standardized(dir.path + "/link/..") == real)
        #expect(Path.standardized(dir.path + "/missing/x/../y") == real + "/missing/y")
        #expect(Path.standardized(dir.path + "/link/missing/.") == real + "/real/missing")
        #expect(Path.standardized("/") == "/")
    }

    @Test("SystemThread runs its closure and is waited for; a deadline that passes first says false")
    func thread() throws {
        let gate = Atomic<Bool>(false)
        let t = try SystemThread.start(name: "vigil-test-thread") {
            while !gate.load(ordering: .acquiring) { ThisProcess.pause(.milliseconds(1)) }
        }
        #expect(!t.join(until: Clock.boot() + .milliseconds(20)))
        gate.store(true, ordering: .releasing)
        #expect(t.join(until: Clock.boot() + .seconds(10)))
    }

    @Test("ThreadLocal: each thread sees its own value; a thread's value is released when it ends")
    func threadLocal() throws {
        final class Counter: Sendable { let released = Atomic<Int>(0) }
        final class Box: Sendable {
            let n: Int
            let counter: Counter
            init(_ n: Int, _ counter: Counter) { self.n = n; self.counter = counter }
            deinit { counter.released.add(1, ordering: .relaxed) }
        }
        let local = ThreadLocal<Box>()
        let released = Counter()
        local.set(Box(1, released))
        let seen = Atomic<Int>(-1)
        let t = try SystemThread.start(name: "vigil-test-local") {
            seen.store(local.value?.n ?? 0, ordering: .relaxed)
            local.set(Box(2, released))
        }
        #expect(t.join(until: Clock.boot() + .seconds(10)))
        #expect(seen.load(ordering: .relaxed) == 0)
        #expect(local.value?.n == 1)
        #expect(waitUntil { released.released.load(ordering: .relaxed) == 1 })
        local.set(nil)
        #expect(released.released.load(ordering: .relaxed) == 2)
    }
}
