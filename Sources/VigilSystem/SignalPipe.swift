import CVigil
import Glibc

/// Turns signals into bytes on a non-blocking pipe, so a `poll` loop wakes for them. The C
/// handler only writes one byte (async-signal-safe). Install it once per process.
public final class SignalPipe: @unchecked Sendable {
    public let readFD: Int32
    private let writeFD: Int32

    public init(signals: [Int32]) throws(SystemError) {
        var fds: [Int32] = [0, 0]
        try sys("pipe") { pipe(&fds) }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        readFD = fds[0]
        writeFD = fds[1]
        cvigil_ignore_sigpipe()
        try sys("sigaction") { signals.withUnsafeBufferPointer { cvigil_install_signal_pipe(writeFD, $0.baseAddress, Int32($0.count)) } }
    }

    /// The signals received since the last call.
    public func drain() -> [Int32] {
        var out: [Int32] = []
        var buf = [UInt8](repeating: 0, count: 64)
        while true {
            let n = buf.withUnsafeMutableBytes { read(readFD, $0.baseAddress, 64) }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n].map { Int32($0) })
        }
        return out
    }
}
