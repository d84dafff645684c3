import Glibc

/// Path operations other modules need, each one system call (errno stays in VigilSystem).
extension FileSystem {
    /// What `access(2)` is asked.
    public struct Access: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let exists = Access([])
        public static let read = Access(rawValue: R_OK)
        public static let write = Access(rawValue: W_OK)
        public static let execute = Access(rawValue: X_OK)
    }

    /// `access(path, mode) == 0` (`.exists`: F_OK).
    public static func isAccessible(_ path: String, _ mode: Access = .exists) -> Bool {
        Glibc.access(path, mode.rawValue) == 0
    }

    /// Whether anything is at `path` (following a symlink; `access(F_OK)`).
    public static func exists(_ path: String) -> Bool { isAccessible(path) }

    /// `unlink`; true when a name was removed. Not durable: `AtomicFile.remove` is.
    @discardableResult
    public static func unlink(_ path: String) -> Bool { Glibc.unlink(path) == 0 }

    /// `rename`.
    public static func rename(_ from: String, to: String) throws(SystemError) {
        try sys("rename", to) { Glibc.rename(from, to) }
    }

    /// `rmdir` of an empty directory; true when it was removed.
    @discardableResult
    public static func removeDirectory(_ path: String) -> Bool { rmdir(path) == 0 }

    /// `chmod`.
    public static func setPermissions(_ path: String, _ mode: UInt32) throws(SystemError) {
        try sys("chmod", path) { chmod(path, mode_t(mode)) }
    }

    /// `realpath`: the absolute path without symlinks, `.` or `..`; nil when it cannot be resolved.
    public static func realPath(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    /// Free and total bytes of the file system holding `path` (`statvfs`; free: what an
    /// unprivileged user may still use).
    public static func space(at path: String) throws(SystemError) -> (free: UInt64, total: UInt64) {
        var s = statvfs()
        try sys("statvfs", path) { statvfs(path, &s) }
        return (UInt64(s.f_bavail) * UInt64(s.f_frsize), UInt64(s.f_blocks) * UInt64(s.f_frsize))
    }

    /// The login name of `uid`, when the password database has one.
    public static func userName(_ uid: UInt32) -> String? {
        guard let pw = getpwuid(uid), let name = pw.pointee.pw_name else { return nil }
        return String(cString: name)
    }
}

extension FileDescriptor {
    /// `flock(LOCK_EX | LOCK_NB)` (`shared`: `LOCK_SH`): true when taken, false when another
    /// holds it (`EWOULDBLOCK`) or the call was interrupted; other errors are thrown.
    public func tryLock(shared: Bool = false, subject: String = "") throws(SystemError) -> Bool {
        if flock(rawValue, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 { return true }
        let e = cvigilErrno()
        if e == EWOULDBLOCK || e == EINTR { return false }
        throw SystemError("flock", errno: e, subject: subject)
    }

    /// `flock(LOCK_UN)`.
    public func unlock() { _ = flock(rawValue, LOCK_UN) }
}
