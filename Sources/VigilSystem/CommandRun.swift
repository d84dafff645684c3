import Glibc
import VigilCore

/// Runs a command to its end with a time bound and collects the tail of its output: what the
/// workspace git layer runs every git command through (docs/workspaces.md, "Releasing a slot":
/// each git command is bounded by a timeout and killed after it).
public enum CommandRun {
    public struct Outcome: Sendable, Equatable {
        /// The exit code; nil when the command was killed by a signal or timed out.
        public var exitCode: Int32?
        /// The signal that ended it, if one did (SIGKILL after a timeout).
        public var signal: Int32?
        public var timedOut: Bool
        /// stdout and stderr merged: the last `outputCap` bytes, decoded as UTF-8 (invalid
        /// sequences replaced).
        public var output: String
        public var succeeded: Bool { exitCode == 0 && !timedOut }

        public init(exitCode: Int32?, signal: Int32?, timedOut: Bool, output: String) {
            self.exitCode = exitCode
            self.signal = signal
            self.timedOut = timedOut
            self.output = output
        }
    }

    /// How long the output is still drained once the command has ended (or been killed) and
    /// something outside its process group (a process that left it) holds the pipe open.
    static let drainBound = TimeSpan.seconds(1)

    /// Spawns `argv` (never through a shell) as the leader of its own process group, stdin
    /// from /dev/null, stdout and stderr into one pipe that is read while it runs. After
    /// `timeout` the whole group is SIGKILLed and the leader reaped. When the leader ends by
    /// itself, whatever it left running in its group is killed too. Returns within `timeout`
    /// plus about `drainBound`, even when a grandchild keeps the pipe open.
    public static func run(_ argv: [String], workingDirectory: String? = nil, environment: [String: String] = [:],
                           timeout: TimeSpan, outputCap: Int = 64 * 1024) throws -> Outcome {
        let pipe = try FileDescriptor.pipe()
        var options = Spawner.Options()
        options.newSession = false
        options.newProcessGroup = true
        options.outputDescriptor = pipe.write.rawValue
        options.workingDirectory = workingDirectory
        options.environment = environment
        let child: ProcessIdentity
        do {
            child = try Spawner.spawn(argv, options)
        } catch {
            pipe.read.close()
            pipe.write.close()
            throw error
        }
        pipe.write.close()
        defer { pipe.read.close() }
        pipe.read.setNonBlocking()

        // The child is ours and not reaped until the end: its PID (a zombie at worst) cannot be
        // reused meanwhile, so the pidfd and the group id both name it and nobody else.
        let pidfd = cvigilPidfdOpen(child.pid)
        defer { if pidfd >= 0 { close(pidfd) } }

        var tail = OutputTail(cap: max(0, outputCap))
        let deadline = Clock.boot() + timeout
        var pipeOpen = true
        var exited = false
        var timedOut = false
        while pipeOpen && !exited {
            let now = Clock.boot()
            if now >= deadline { timedOut = true; break }
            var fds = [pollfd(fd: pipe.read.rawValue, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
            let r = poll(&fds, pidfd >= 0 ? 2 : 1, milliseconds(deadline - now))
            if r < 0 && lastErrno() != EINTR { break }
            if fds[0].revents != 0 { pipeOpen = tail.drain(pipe.read) }
            if pidfd >= 0 && fds[1].revents != 0 { exited = true }
            // Without a pidfd (not expected on Linux ≥ 5.3), the pipe's end stands for the exit.
            if pidfd < 0 && !pipeOpen { Spawner.waitWithoutReaping(child.pid); exited = true }
        }
        if !exited && !timedOut {
            // The pipe closed: the leader is about to exit (or already has); wait for it until the deadline.
            let left = deadline - Clock.boot()
            if left > .zero, pidfd >= 0 {
                var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
                while true {
                    let r = poll(&p, 1, milliseconds(deadline - Clock.boot()))
                    if r == 1 { exited = true; break }
                    if r == 0 || lastErrno() != EINTR { break }
                }
            }
            if !exited { timedOut = !Spawner.hasExited(child.pid) }
        }
        // The leader is unreaped, so the group id is still its own: this reaches the command and
        // whatever it started in its group (and nobody else).
        ProcessGroup(id: child.pid).signal(.kill)
        if pipeOpen {
            let end = Clock.boot() + drainBound
            while pipeOpen, Clock.boot() < end {
                if pipe.read.poll(timeoutMilliseconds: milliseconds(end - Clock.boot())) {
                    pipeOpen = tail.drain(pipe.read)
                }
            }
        }
        let status = Spawner.wait(child.pid) ?? 0
        let signal = terminatingSignal(fromWaitStatus: status)
        return Outcome(exitCode: timedOut || signal != nil ? nil : exitCode(fromWaitStatus: status),
                       signal: signal, timedOut: timedOut, output: tail.text)
    }

    /// `span` in whole milliseconds for `poll`, rounded up (never wakes early), at least 0.
    static func milliseconds(_ span: TimeSpan) -> Int32 {
        Int32(clamping: max(0, (span.nanoseconds + 999_999) / 1_000_000))
    }
}

/// The last `cap` bytes of a stream.
struct OutputTail {
    let cap: Int
    private var bytes: [UInt8] = []

    init(cap: Int) { self.cap = cap }

    /// Reads what the non-blocking `fd` has now; false at end of file (or a read error).
    mutating func drain(_ fd: FileDescriptor) -> Bool {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 1)
        defer { buffer.deallocate() }
        while true {
            let n: Int
            do throws(SystemError) {
                n = try fd.read(into: buffer)
            } catch {
                return error.errno == EAGAIN
            }
            if n == 0 { return false }
            append(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    private mutating func append(_ chunk: UnsafeRawBufferPointer) {
        bytes.append(contentsOf: chunk)
        if bytes.count > 2 * cap + 65536 { bytes.removeFirst(bytes.count - cap) }
    }

    var text: String { String(decoding: bytes.suffix(cap), as: UTF8.self) }
}
