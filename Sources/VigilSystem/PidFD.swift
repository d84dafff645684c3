import CVigil
import Glibc

/// An open pidfd for an identified process. It can be polled (readable when the process
/// exits) and signalled without any PID-reuse race. Closed on deinit. Sendable: it holds only
/// constants.
public final class PidFD: Sendable {
    public let fd: Int32
    public let identity: ProcessIdentity

    init(fd: Int32, identity: ProcessIdentity) {
        self.fd = fd
        self.identity = identity
    }

    deinit { close(fd) }

    /// `pidfd_send_signal`. False when the process has already exited.
    @discardableResult
    public func signal(_ signal: Signal) -> Bool {
        cvigil_pidfd_send_signal(fd, signal.rawValue) == 0
    }

    /// True once the process has exited (the pidfd polls readable).
    public var hasExited: Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1
    }

    /// Reaps the process if it is our child and has exited. Returns the wait status when reaped.
    @discardableResult
    public func reapIfChild() -> Int32? {
        var status: Int32 = 0
        return cvigil_pidfd_reap(fd, &status) == 1 ? status : nil
    }

    /// Waits up to `timeout` for the process to exit. True when it did.
    public func waitForExit(timeoutMilliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = Clock.boot().nanoseconds + Int64(timeoutMilliseconds) * 1_000_000
        while true {
            // Rounded up: never wakes before the deadline.
            let left = max(0, (deadline - Clock.boot().nanoseconds + 999_999) / 1_000_000)
            let r = poll(&p, 1, Int32(left))
            if r == 1 { return true }
            if r == 0 { if Clock.boot().nanoseconds >= deadline { return false } else { continue } }
            if lastErrno() != EINTR { return false }
        }
    }
}

func cvigilPidfdOpen(_ pid: Int32) -> Int32 {
    let fd = cvigil_pidfd_open(pid)
    if fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return fd
}
