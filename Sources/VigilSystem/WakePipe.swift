import CVigil
import Glibc

/// A non-blocking, close-on-exec pipe that wakes a `poll` loop: any thread calls `wake()` (one
/// byte), the poller sees `readFD` readable and calls `drain()`. Made with `signals:`, it is
/// also the process's signal self-pipe: the C handler writes the signal number as the byte
/// (async-signal-safe); install that one once per process.
///
/// Sendable without a lock: it holds only constants (two descriptors), and `write`/`read` on a
/// pipe are safe from any thread.
public final class WakePipe: Sendable {
    public let readFD: Int32
    private let writeFD: Int32

    public init() throws(SystemError) {
        let (r, w) = try FileDescriptor.pipe()
        r.setNonBlocking()
        w.setNonBlocking()
        readFD = r.rawValue
        writeFD = w.rawValue
    }

    /// A wake pipe that `signals` also write to (their number as the byte). Ignores SIGPIPE.
    public convenience init(signals: [Signal]) throws(SystemError) {
        try self.init()
        cvigil_ignore_sigpipe()
        let raw = signals.map(\.rawValue)
        try sys("sigaction") { raw.withUnsafeBufferPointer { cvigil_install_signal_pipe(writeFD, $0.baseAddress, Int32($0.count)) } }
    }

    deinit {
        close(readFD)
        close(writeFD)
    }

    /// Wakes the poller (never blocks: a full pipe is already awake).
    public func wake() {
        var b: UInt8 = 1
        _ = write(writeFD, &b, 1)
    }

    /// The bytes written since the last call, emptying the pipe.
    @discardableResult
    public func drain() -> [UInt8] {
        var out: [UInt8] = []
        _ = try? FileDescriptor(rawValue: readFD).readChunks(chunkSize: 256) { out.append(contentsOf: $0); return true }
        return out
    }

    /// The signals received since the last call (for a pipe made with `signals:`).
    public func drainSignals() -> [Signal] {
        drain().map { Signal(rawValue: Int32($0)) }
    }
}
