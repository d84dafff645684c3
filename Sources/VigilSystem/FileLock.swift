import Glibc
import Synchronization

/// An exclusive `flock` on a file, held for the life of this value (or the process). The
/// descriptor is close-on-exec, so children never inherit the lock; the kernel releases it when
/// the holder dies. An exec releases it too: the bridge's re-exec (a restart marker) does not
/// keep its lock; the new image takes it again at its start (`takeSingletonLock`, retried),
/// and since the process lives on throughout, the runner never takes the free lock for a dead
/// bridge.
/// The descriptor (-1 once released) is behind a `Mutex`, so `release` from any thread
/// closes it once.
public final class FileLock: Sendable {
    public let path: String
    private let fd: Mutex<Int32>

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = Mutex(fd)
    }

    /// Takes the lock, or returns nil when another process holds it. The file is opened
    /// read-only (flock needs no write access, and closing it then wakes no inotify
    /// `IN_CLOSE_WRITE` watcher) never through a symlink, and only when it is a regular file (`PrivateFile.open`).
    public static func tryLock(_ path: String) throws(SystemError) -> FileLock? {
        let fd = try PrivateFile.open(path, O_RDONLY | O_CREAT)
        if flock(fd, LOCK_EX | LOCK_NB) == 0 { return FileLock(path: path, fd: fd) }
        let e = lastErrno()
        close(fd)
        if e == EWOULDBLOCK { return nil }
        throw SystemError("flock", errno: e, subject: path)
    }

    /// Retries `tryLock` for up to `attempts` × 20 ms (a prober may hold it for a moment).
    public static func lock(_ path: String, attempts: Int) throws(SystemError) -> FileLock? {
        for i in 0..<max(1, attempts) {
            if let l = try tryLock(path) { return l }
            if i + 1 < attempts { usleep(20_000) }
        }
        return nil
    }

    /// True when nobody holds the lock right now. Takes and drops a shared lock; never creates
    /// the file.
    public static func isFree(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        if fd < 0 { return lastErrno() == ENOENT }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return true
        }
        return false
    }

    public func release() {
        let old = fd.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        if old >= 0 { close(old) }
    }

    deinit { release() }
}
