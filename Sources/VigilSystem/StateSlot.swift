import Glibc

/// A path Vigil reads a small file from, or touches: state files, markers, heartbeats,
/// `vigil.json`, the wake files (`missions.wake`, `chat/kick`), and the few files an operator
/// names (`--version-file`, a chat token file). Whatever sits there — a FIFO, a socket, a
/// device, a directory, a symlink, a huge file — it can neither hang nor crash the reader:
///
/// - opened `O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC` (no `open` waits for a FIFO's writer, a
///   symlink is not followed unless the caller asks for it);
/// - `fstat` on the descriptor must say a regular file of at most `sizeLimit` bytes;
/// - anything else is `.unfit` with a sentence saying what is there. The caller decides what
///   that means: state files are quarantined like corrupt ones (`StateFiles.load`), the
///   configuration is refused.
///
/// See docs/operator-guide.md, "Bad input".
public enum StateSlot {
    /// No state file of ours comes near this: a larger one is corrupt.
    public static let sizeLimit = 1 << 20

    public enum Opened {
        case absent
        /// An open descriptor of a regular file (the caller closes it) and its size.
        case file(fd: Int32, size: Int)
        /// Not a regular file, too large, or unreadable: why, as a phrase ("a FIFO").
        case unfit(String)
    }

    /// Opens `path` for reading without blocking and checks what it is.
    /// - Parameters:
    ///   - followSymlinks: for paths an operator named (a `--version-file` may well be a link).
    ///   - sizeLimit: nil for files that are streamed, not loaded (a mission's output).
    public static func openForReading(_ path: String, followSymlinks: Bool = false, sizeLimit: Int? = StateSlot.sizeLimit) -> Opened {
        let flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (followSymlinks ? 0 : O_NOFOLLOW)
        let fd: Int32
        do {
            fd = try sys("open", path) { open(path, flags) }
        } catch {
            switch error.errno {
            case ENOENT, ENOTDIR: return .absent
            case ELOOP: return .unfit("a symbolic link (Vigil does not follow links here)")
            case ENXIO: return .unfit("a socket")
            default: return .unfit("unreadable: \(error)")
            }
        }
        var st = stat()
        if fstat(fd, &st) != 0 {
            close(fd)
            return .unfit("unreadable: fstat failed")
        }
        if let problem = kind(st.st_mode) {
            close(fd)
            return .unfit(problem)
        }
        if let limit = sizeLimit, Int(st.st_size) > limit {
            close(fd)
            return .unfit("too large (\(st.st_size) bytes; a state file is at most \(limit))")
        }
        return .file(fd: fd, size: Int(st.st_size))
    }

    /// What `mode` is when it is not a regular file, as a phrase; nil for a regular file.
    static func kind(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFIFO: return "a FIFO (named pipe), not a regular file"
        case S_IFSOCK: return "a socket, not a regular file"
        case S_IFCHR: return "a character device, not a regular file"
        case S_IFBLK: return "a block device, not a regular file"
        case S_IFDIR: return "a directory, not a regular file"
        case S_IFLNK: return "a symbolic link (Vigil does not follow links here)"
        default: return "not a regular file"
        }
    }

    public enum Contents {
        case absent
        /// The whole file (valid only inside the closure).
        case bytes(UnsafeRawBufferPointer)
        case unfit(String)
    }

    /// Reads the whole (small) file at `path` into a temporary buffer (on the stack for small
    /// files: this runs on every probe) and hands it to `body`.
    public static func withContents<R>(of path: String, followSymlinks: Bool = false, sizeLimit: Int = StateSlot.sizeLimit,
                                       _ body: (Contents) -> R) -> R {
        switch openForReading(path, followSymlinks: followSymlinks, sizeLimit: sizeLimit) {
        case .absent: return body(.absent)
        case .unfit(let why): return body(.unfit(why))
        case .file(let fd, let size):
            defer { close(fd) }
            // One byte more than fstat said, so a file that grew past the limit is seen.
            let capacity = min(size, sizeLimit) + 1
            return withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 1) { buf -> R in
                var used = 0
                while used < capacity {
                    let n: Int
                    do {
                        n = try FileDescriptor(rawValue: fd).read(into: UnsafeMutableRawBufferPointer(rebasing: buf[used..<capacity]))
                    } catch {
                        return body(.unfit("unreadable: \(error)"))
                    }
                    if n == 0 { break }
                    used += n
                }
                if used > sizeLimit { return body(.unfit("too large (more than \(sizeLimit) bytes)")) }
                return body(.bytes(UnsafeRawBufferPointer(rebasing: buf[0..<used])))
            }
        }
    }

    public enum Loaded {
        case absent
        case bytes([UInt8])
        case unfit(String)
    }

    /// The whole (small) file at `path`, copied out.
    public static func read(_ path: String, followSymlinks: Bool = false, sizeLimit: Int = StateSlot.sizeLimit) -> Loaded {
        withContents(of: path, followSymlinks: followSymlinks, sizeLimit: sizeLimit) { c in
            switch c {
            case .absent: return .absent
            case .unfit(let why): return .unfit(why)
            case .bytes(let raw): return .bytes(Array(raw))
            }
        }
    }

    public enum Touched: Equatable {
        case touched
        /// Something other than a regular file is there (the caller moves it aside).
        case unfit(String)
        case failed(Int32)

        /// `.failed(ENOENT)`: the directory it would be in is missing.
        public var isNoEntry: Bool {
            if case .failed(let e) = self { return e == ENOENT }
            return false
        }
    }

    /// Touches a wake file: open for writing (created `mode` if missing) and close, which
    /// inotify reports as `IN_CLOSE_WRITE`. Never blocks: a FIFO without a reader fails at once
    /// (`ENXIO`), one with a reader is opened and closed without a write; both are `.unfit`, as
    /// are a symlink and a directory. No write and no `O_TRUNC` (a truncate makes ext4 flush on
    /// close).
    public static func touch(_ path: String, mode: mode_t = 0o600) -> Touched {
        let fd: Int32
        do {
            fd = try sys("open", path) { open(path, O_WRONLY | O_CREAT | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, mode) }
        } catch {
            switch error.errno {
            case ELOOP: return .unfit("a symbolic link (Vigil does not follow links here)")
            case ENXIO: return .unfit("a FIFO (named pipe) or socket, not a regular file")
            case EISDIR: return .unfit("a directory, not a regular file")
            default: return .failed(error.errno)
            }
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0, let problem = kind(st.st_mode) { return .unfit(problem) }
        return .touched
    }
}
