import FoundationEssentials
import Glibc

/// The one way Vigil replaces a file: write a temp file in the same directory, fsync it,
/// rename it over the target, fsync the directory. A reader sees the old file or the new one,
/// never a mix; after a power cut the name points at complete contents.
///
/// - Important: an fsync failure is final for that write (docs/durability.md, "A failed fsync is final"): the error
///   is thrown, the temp file removed, and nothing is acknowledged. The next write starts over
///   with a new temp file.
public enum AtomicFile {
    /// The temp-file marker; `sweepTemps` removes leftovers of dead writers.
    static let tempMarker = ".tmp."

    /// - Parameter syncDirectory: false leaves the last step (fsync of the directory) to the
    ///   caller, who must take it before anything counts on the new name (several files replaced
    ///   in one directory then share one directory fsync: a checkpoint's data and meta).
    public static func write(_ data: Data, to path: String, mode: mode_t = PrivateFile.mode, syncDirectory: Bool = true) throws(SystemError) {
        try replace(path, mode: mode, syncDirectory: syncDirectory) { fd, temp throws(SystemError) in try writeAll(fd, data, subject: temp) }
    }

    /// Copies the file at `source` over `path` with the same steps as `write` (temp, fsync,
    /// rename, fsync of the directory), in chunks: a large file (an executable) is never held
    /// in memory whole. `prefix` is written before the copied bytes.
    public static func copy(from source: String, to path: String, mode: mode_t, prefix: Data = Data()) throws(SystemError) {
        let src = try sys("open", source) { open(source, O_RDONLY | O_CLOEXEC) }
        defer { close(src) }
        try replace(path, mode: mode) { fd, temp throws(SystemError) in
            if !prefix.isEmpty { try writeAll(fd, prefix, subject: temp) }
            var chunk = Data(count: 1 << 18)
            while true {
                let n = try sys("read", source) { chunk.withUnsafeMutableBytes { Glibc.read(src, $0.baseAddress, $0.count) } }
                if n == 0 { return }
                try writeAll(fd, chunk.prefix(n), subject: temp)
            }
        }
    }

    /// The steps every replace shares; `fill` writes the contents into the temp file.
    private static func replace(_ path: String, mode: mode_t, syncDirectory: Bool = true,
                                fill: (Int32, String) throws(SystemError) -> Void) throws(SystemError) {
        let dir = Path.parent(path)
        let base = Path.lastComponent(path)
        let temp = "\(dir.isEmpty ? "." : dir)/.\(base)\(tempMarker)\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let fd = try sys("open", temp) { open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode) }
        do {
            try fill(fd, temp)
            try sys("fsync", temp) { fsync(fd) }
            close(fd)
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        do {
            try sys("rename", path) { rename(temp, path) }
        } catch {
            unlink(temp)
            throw error
        }
        if syncDirectory { try fsyncDirectory(dir.isEmpty ? "." : dir) }
    }

    /// Writes every byte with as many `write` calls as the kernel needs.
    public static func writeAll(_ fd: Int32, _ data: Data, subject: String) throws(SystemError) {
        try FileDescriptor(rawValue: fd).writeAll(data, subject: subject)
    }

    /// fsync of a directory, so that a create, rename or unlink in it survives a power cut.
    public static func fsyncDirectory(_ dir: String) throws(SystemError) {
        let fd = try sys("open", dir) { open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try sys("fsync", dir) { fsync(fd) }
    }

    /// Removes a file durably (unlink + fsync of the directory). Absent is fine.
    public static func remove(_ path: String) throws(SystemError) {
        if unlink(path) != 0 {
            let e = lastErrno()
            if e == ENOENT { return }
            throw SystemError("unlink", errno: e, subject: path)
        }
        let dir = Path.parent(path)
        try fsyncDirectory(dir.isEmpty ? "." : dir)
    }

    /// Creates a directory (and its parents) durably: each new directory's parent is fsynced.
    /// Like `makeDirectory`, but creates nothing at or above `root`: when `root` is gone the
    /// `mkdir` fails (ENOENT) instead of making a new `root`. For directories inside a state
    /// directory, which a running process must never re-create after someone removed it
    /// (docs/operator-guide.md, "The state directory removed or replaced").
    public static func makeDirectory(_ path: String, below root: String, mode: mode_t = PrivateFile.directoryMode) throws(SystemError) {
        var st = stat()
        if stat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR { return }
            throw SystemError("mkdir", errno: ENOTDIR, subject: path)
        }
        let parent = Path.parent(path)
        guard path.hasPrefix(root + "/"), !parent.isEmpty else { throw SystemError("mkdir", errno: ENOENT, subject: path) }
        if parent != root { try makeDirectory(parent, below: root, mode: mode) }
        if mkdir(path, mode) != 0 {
            let e = lastErrno()
            if e != EEXIST { throw SystemError("mkdir", errno: e, subject: path) }
            return
        }
        try fsyncDirectory(parent)
    }

    public static func makeDirectory(_ path: String, mode: mode_t = PrivateFile.directoryMode) throws(SystemError) {
        var st = stat()
        if stat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR { return }
            throw SystemError("mkdir", errno: ENOTDIR, subject: path)
        }
        let parent = Path.parent(path)
        if !parent.isEmpty && parent != path { try makeDirectory(parent, mode: mode) }
        if mkdir(path, mode) != 0 {
            let e = lastErrno()
            if e != EEXIST { throw SystemError("mkdir", errno: e, subject: path) }
            return
        }
        try fsyncDirectory(parent.isEmpty ? "." : parent)
    }

    /// Removes temp files left in `dir` by writers that are no longer running.
    @discardableResult
    public static func sweepTemps(in dir: String) -> Int {
        var removed = 0
        for name in staleTemps(in: dir) where unlink("\(dir)/\(name)") == 0 { removed += 1 }
        return removed
    }

    /// Names of the temp files in `dir` whose writer is no longer running (what `sweepTemps`
    /// removes). Read-only.
    public static func staleTemps(in dir: String) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        var stale: [String] = []
        for name in names where name.hasPrefix(".") && name.contains(tempMarker) {
            guard let range = name.firstRange(of: tempMarker) else { continue }
            let rest = name[range.upperBound...].split(separator: ".")
            if let pidText = rest.first, let pid = Int32(pidText), pid != getpid(), kill(pid, 0) == 0 || lastErrno() == EPERM {
                continue // its writer may still be running
            }
            stale.append(name)
        }
        return stale
    }
}
