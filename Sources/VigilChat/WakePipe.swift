import Glibc
import VigilSystem

/// A non-blocking, close-on-exec pipe used to wake a `poll`: any thread writes a byte,
/// the poller drains.
final class WakePipe: @unchecked Sendable {
    let readFD: Int32
    let writeFD: Int32

    init() throws(SystemError) {
        var fds: [Int32] = [0, 0]
        try sys("pipe") { pipe(&fds) }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        readFD = fds[0]
        writeFD = fds[1]
    }

    deinit {
        close(readFD)
        close(writeFD)
    }

    func signal() {
        var b: UInt8 = 1
        _ = write(writeFD, &b, 1)
    }

    func drain() {
        var buf = [UInt8](repeating: 0, count: 64)
        while buf.withUnsafeMutableBytes({ read(readFD, $0.baseAddress, 64) }) > 0 {}
    }
}
