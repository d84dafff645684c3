import Glibc

/// Everything Vigil creates in a state directory belongs to the user it runs as and to nobody
/// else: directories 0700, files 0600 (the database holds chat tokens and every mission's
/// argv). One place for these modes, and the one way to open a file Vigil appends to, locks or
/// touches. See docs/operator-guide.md, "Security of the state directory".
public enum PrivateFile {
    /// Mode of every file Vigil creates (state files, journal, logs, locks, database).
    public static let mode: mode_t = 0o600
    /// Mode of every directory Vigil creates (the state directory and those inside it).
    public static let directoryMode: mode_t = 0o700
    /// Mode of an executable Vigil keeps (the copy of the last good program).
    public static let executableMode: mode_t = 0o700
    /// Permission bits of group and others; none may be set on what Vigil creates.
    public static let groupOtherBits: mode_t = 0o077

    /// Opens a slot file without following a symlink (`O_NOFOLLOW`), without blocking on a FIFO
    /// (`O_NONBLOCK`, cleared again afterwards), close-on-exec, creating it with `mode` when
    /// `flags` has `O_CREAT`; then `fstat` must show a regular file. A symlink, FIFO, device,
    /// socket or directory in the slot is never opened for use: the error says what is there.
    /// (`/dev/null` itself is accepted: a sink callers name on purpose, never a slot.)
    ///
    /// The corresponding C functions are `open`, `fstat` and `fcntl(F_SETFL)`.
    public static func open(_ path: String, _ flags: Int32) throws(SystemError) -> Int32 {
        let fd: Int32
        do {
            fd = try sys("open", path) { Glibc.open(path, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode) }
        } catch {
            // ELOOP is O_NOFOLLOW's answer for a symlink; ENXIO is a FIFO with no reader (for
            // writing); EISDIR a directory. Say what is in the slot rather than the errno.
            if let kind = slotKind(path), kind != "a regular file" { throw SystemError.notRegularFile(path, kind: kind) }
            throw error
        }
        var st = stat()
        // `/dev/null` is no slot of a state directory: callers use it as a sink on purpose.
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG || (path == "/dev/null" && (st.st_mode & S_IFMT) == S_IFCHR) else {
            let kind = describe(st.st_mode)
            close(fd)
            throw SystemError.notRegularFile(path, kind: kind)
        }
        let fl = fcntl(fd, F_GETFL)
        if fl >= 0 { _ = fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) }
        return fd
    }

    /// `open(path, flags)` for callers that do not import Glibc.
    public static func open(_ path: String, _ options: FileDescriptor.Options) throws(SystemError) -> Int32 {
        try open(path, options.rawValue)
    }

    /// What is at `path` without following a symlink ("a symlink", "a FIFO", …), nil if nothing.
    public static func slotKind(_ path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return describe(st.st_mode)
    }

    /// "a symlink", "a FIFO", … for an `st_mode`.
    public static func describe(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "a regular file"
        case S_IFLNK: return "a symlink"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFDIR: return "a directory"
        default: return "not a regular file"
        }
    }
}

extension SystemError {
    /// A slot that holds something other than a regular file (`PrivateFile.open` refused it).
    public static func notRegularFile(_ path: String, kind: String) -> SystemError {
        var e = SystemError("open", errno: EINVAL, subject: path)
        e.unsafeSlot = kind
        return e
    }
}
