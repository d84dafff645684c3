import Foundation
import Glibc
import Testing
import VigilCore
import VigilSystem
import VigilTestSupport

/// A fresh directory for one test, removed (with everything in it) when the value goes away.
/// A child this test started. Killed (SIGKILL) and reaped when the value goes away unless the
/// test reaped it already, so no test leaves a process behind. An unreaped child's PID cannot
/// be reused, so the kill cannot hit anyone else.
final class Child {
    let identity: ProcessIdentity
    private(set) var status: Int32?

    var pid: Int32 { identity.pid }

    init(_ argv: [String], _ options: Spawner.Options = Spawner.Options()) throws {
        identity = try Spawner.spawn(argv, options)
    }

    /// Waits for the child to exit by itself (or by a signal the test sent) and reaps it.
    @discardableResult
    func wait() throws -> Int32 {
        if let status { return status }
        let reaped: Int32? = Spawner.wait(pid)
        let s = try #require(reaped, "waitpid failed for our child \(pid)")
        status = s
        return s
    }

    /// The test reaped it another way (through a pidfd).
    func reaped(_ status: Int32) { self.status = status }

    func killAndReap() {
        guard status == nil else { return }
        kill(pid, SIGKILL)
        status = Spawner.wait(pid)
    }

    deinit { killAndReap() }
}

/// Spawns `argv` with its output on a FIFO and waits (without sleeping) until it has written
/// `line`: for children that must reach a state (a lock taken) before the test goes on.
func spawnAndAwait(_ argv: [String], line expected: String, in dir: TempDir,
                   sourceLocation: SourceLocation = #_sourceLocation) throws -> Child {
    let fifo = dir.file("ready.\(UInt32.random(in: 0...UInt32.max)).fifo")
    try #require(mkfifo(fifo, 0o600) == 0, sourceLocation: sourceLocation)
    let readFD = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    try #require(readFD >= 0, sourceLocation: sourceLocation)
    defer { close(readFD); unlink(fifo) }
    var options = Spawner.Options()
    options.outputPath = fifo
    options.outputMayBeFIFO = true
    let child = try Child(argv, options)
    var text = ""
    // The limit only keeps a broken child from hanging the run; readiness itself is awaited.
    let deadline = Clock.boot() + TimeSpan.seconds(20)
    while !text.contains(expected + "\n") {
        let left = deadline - Clock.boot()
        try #require(left > .zero, "child never wrote \(expected); got \(text)", sourceLocation: sourceLocation)
        _ = pollReadable([readFD], timeoutMilliseconds: Int32(left.milliseconds))
        var buf = [UInt8](repeating: 0, count: 256)
        let n = buf.withUnsafeMutableBytes { read(readFD, $0.baseAddress, 256) }
        if n > 0 { text += String(decoding: buf[0..<n], as: UTF8.self) }
        if n == 0 && child.identity.liveness() == .gone {
            Issue.record("child exited before writing \(expected); got \(text)", sourceLocation: sourceLocation)
            break
        }
    }
    return child
}

func readText(_ path: String) -> String? {
    (try? Data(contentsOf: URL(fileURLWithPath: path))).map { String(decoding: $0, as: UTF8.self) }
}

/// Makes a directory unwritable, also for root (who ignores permission bits): the immutable
/// attribute. Undone by `makeWritable`.
func makeReadOnly(_ dir: String) throws {
    if geteuid() == 0 {
        let c = try Child(["/usr/bin/chattr", "+i", dir])
        try #require(exitCode(fromWaitStatus: try c.wait()) == 0, "chattr +i failed")
    } else {
        try #require(chmod(dir, 0o555) == 0)
    }
}

func makeWritable(_ dir: String) {
    if geteuid() == 0, let c = try? Child(["/usr/bin/chattr", "-i", dir]) { _ = try? c.wait() }
    chmod(dir, 0o755)
}
