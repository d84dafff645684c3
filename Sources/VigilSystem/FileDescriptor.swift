import FoundationEssentials
import Glibc
import VigilCore

/// The one file-descriptor type (in the manner of swift-system's `FileDescriptor`): a raw
/// descriptor as a value with the calls Vigil makes on it. Every `read` and `write` here
/// retries `EINTR` (through `sys`), in this one place; errors are `SystemError`s. The value
/// does not own the descriptor: `close()` it, or use `closeAfter`.
public struct FileDescriptor: RawRepresentable, Hashable, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let standardInput = FileDescriptor(rawValue: STDIN_FILENO)
    public static let standardOutput = FileDescriptor(rawValue: STDOUT_FILENO)
    public static let standardError = FileDescriptor(rawValue: STDERR_FILENO)

    /// `open(2)` flags. `closeOnExec` is always added by `open`.
    public struct Options: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let readOnly = Options([])
        public static let writeOnly = Options(rawValue: O_WRONLY)
        public static let readWrite = Options(rawValue: O_RDWR)
        public static let create = Options(rawValue: O_CREAT)
        public static let exclusive = Options(rawValue: O_EXCL)
        public static let append = Options(rawValue: O_APPEND)
        public static let truncate = Options(rawValue: O_TRUNC)
        public static let noFollow = Options(rawValue: O_NOFOLLOW)
        public static let nonBlocking = Options(rawValue: O_NONBLOCK)
        public static let directory = Options(rawValue: O_DIRECTORY)
        public static let closeOnExec = Options(rawValue: O_CLOEXEC)
    }

    /// `open(path, options | O_CLOEXEC, permissions)`.
    public static func open(_ path: String, _ options: Options, permissions: UInt32 = PrivateFile.mode) throws(SystemError) -> FileDescriptor {
        let fd = try sys("open", path) { Glibc.open(path, options.rawValue | O_CLOEXEC, mode_t(permissions)) }
        return FileDescriptor(rawValue: fd)
    }

    public func close() { _ = Glibc.close(rawValue) }

    /// Runs `body`, then closes the descriptor, whatever `body` did.
    public func closeAfter<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        defer { close() }
        return try body()
    }

    /// One `read` (or `pread` at `offset`) into `buffer`: the count, 0 at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int? = nil) throws(SystemError) -> Int {
        if let offset { return try sys("pread") { Glibc.pread(rawValue, buffer.baseAddress, buffer.count, off_t(offset)) } }
        return try sys("read") { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
    }

    /// Reads until end of file (from `offset` with `pread` when given), at most `limit` bytes.
    /// A non-blocking descriptor with nothing more to read now (`EAGAIN`) ends the read too.
    public func readAll(limit: Int = .max, from offset: Int? = nil) throws(SystemError) -> [UInt8] {
        var out: [UInt8] = []
        try readChunks(limit: limit, from: offset) { out.append(contentsOf: $0); return true }
        return out
    }

    /// Reads until end of file like `readAll`, handing each chunk (valid only inside `body`) to
    /// `body`, which returns false to stop early. Returns the bytes read.
    @discardableResult
    public func readChunks(limit: Int = .max, from offset: Int? = nil, chunkSize: Int = 65536,
                           _ body: (UnsafeRawBufferPointer) -> Bool) throws(SystemError) -> Int {
        let chunkSize = max(1, min(chunkSize, limit))
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 1)
        defer { buf.deallocate() }
        var total = 0
        while total < limit {
            let want = min(chunkSize, limit - total)
            let n: Int
            do {
                n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<want]), at: offset.map { $0 + total })
            } catch where error.errno == EAGAIN {
                return total
            }
            if n == 0 { return total }
            total += n
            if !body(UnsafeRawBufferPointer(rebasing: buf[0..<n])) { return total }
        }
        return total
    }

    /// One `write`: how many bytes the kernel took.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        try sys("write") { Glibc.write(rawValue, bytes.baseAddress, bytes.count) }
    }

    /// Writes every byte with as many `write` calls as the kernel needs.
    public func writeAll(_ bytes: UnsafeRawBufferPointer, subject: String = "") throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            offset += try sys("write", subject) { Glibc.write(rawValue, bytes.baseAddress! + offset, bytes.count - offset) }
        }
    }

    public func writeAll(_ bytes: some ContiguousBytes, subject: String = "") throws(SystemError) {
        var offset = 0
        while true {
            let n = try sys("write", subject) {
                bytes.withUnsafeBytes { raw in offset >= raw.count ? 0 : Glibc.write(rawValue, raw.baseAddress! + offset, raw.count - offset) }
            }
            if n == 0 { return }
            offset += n
        }
    }

    /// `fstat`.
    public func status() throws(SystemError) -> FileStatus {
        var st = stat()
        try sys("fstat") { fstat(rawValue, &st) }
        return FileStatus(st)
    }

    /// `fsync` (`dataOnly`: `fdatasync`).
    public func sync(dataOnly: Bool = false, subject: String = "") throws(SystemError) {
        try sys(dataOnly ? "fdatasync" : "fsync", subject) { dataOnly ? fdatasync(rawValue) : fsync(rawValue) }
    }

    /// `ftruncate`.
    public func truncate(to size: Int, subject: String = "") throws(SystemError) {
        try sys("ftruncate", subject) { ftruncate(rawValue, off_t(size)) }
    }

    /// `lseek(fd, 0, SEEK_END)`: the size, leaving the offset at the end.
    public func seekToEnd() throws(SystemError) -> Int {
        Int(try sys("lseek") { lseek(rawValue, 0, SEEK_END) })
    }

    /// Sets or clears `O_NONBLOCK`.
    public func setNonBlocking(_ on: Bool = true) {
        let fl = fcntl(rawValue, F_GETFL)
        if fl >= 0 { _ = fcntl(rawValue, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) }
    }

    /// Sets or clears `FD_CLOEXEC`.
    @discardableResult
    public func setCloseOnExec(_ on: Bool = true) -> Bool {
        fcntl(rawValue, F_SETFD, on ? FD_CLOEXEC : 0) == 0
    }

    /// A pipe, both ends close-on-exec (set right after `pipe`: no thread of ours spawns
    /// meanwhile where this is used).
    public static func pipe() throws(SystemError) -> (read: FileDescriptor, write: FileDescriptor) {
        var fds: [Int32] = [-1, -1]
        try sys("pipe") { Glibc.pipe(&fds) }
        let r = FileDescriptor(rawValue: fds[0]), w = FileDescriptor(rawValue: fds[1])
        r.setCloseOnExec()
        w.setCloseOnExec()
        return (r, w)
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) for `events` (`POLLIN` by default; see
    /// `pollReadable` for several descriptors). True when they came.
    public func poll(priority: Bool = false, timeoutMilliseconds: Int32) -> Bool {
        var p = pollfd(fd: rawValue, events: Int16(priority ? POLLPRI : POLLIN), revents: 0)
        return Glibc.poll(&p, 1, timeoutMilliseconds) == 1
    }
}

/// What `stat` says about a file.
public struct FileStatus: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case regular, directory, symlink, fifo, socket, characterDevice, blockDevice, other }

    public var kind: Kind
    /// The permission bits (and setuid/setgid/sticky).
    public var permissions: UInt32
    public var mode: UInt32
    public var size: Int
    public var device: UInt64
    public var inode: UInt64
    public var linkCount: UInt64
    public var owner: UInt32
    public var modifiedSeconds: Int
    public var modifiedNanoseconds: Int
    /// The inode's change time (`st_ctim`): set by the kernel at every write, rename or
    /// `utimensat`, never by the caller.
    public var changedSeconds: Int
    public var changedNanoseconds: Int

    init(_ st: stat) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        case S_IFIFO: kind = .fifo
        case S_IFSOCK: kind = .socket
        case S_IFCHR: kind = .characterDevice
        case S_IFBLK: kind = .blockDevice
        default: kind = .other
        }
        mode = UInt32(st.st_mode)
        permissions = UInt32(st.st_mode & 0o7777)
        size = Int(st.st_size)
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        linkCount = UInt64(st.st_nlink)
        owner = UInt32(st.st_uid)
        modifiedSeconds = Int(st.st_mtim.tv_sec)
        modifiedNanoseconds = Int(st.st_mtim.tv_nsec)
        changedSeconds = Int(st.st_ctim.tv_sec)
        changedNanoseconds = Int(st.st_ctim.tv_nsec)
    }

    /// Which file this is and when it last changed: equal stamps of one path are the same
    /// contents only once the file has settled (`FileChangeCheck`).
    public struct Stamp: Equatable, Sendable {
        public var device: UInt64
        public var inode: UInt64
        public var size: Int
        public var modifiedSeconds: Int
        public var modifiedNanoseconds: Int
        public var changedSeconds: Int
        public var changedNanoseconds: Int
    }

    public var stamp: Stamp {
        Stamp(device: device, inode: inode, size: size, modifiedSeconds: modifiedSeconds, modifiedNanoseconds: modifiedNanoseconds,
              changedSeconds: changedSeconds, changedNanoseconds: changedNanoseconds)
    }

    /// `stat` (or `lstat` when `followSymlinks` is false).
    public static func of(_ path: String, followSymlinks: Bool = true) throws(SystemError) -> FileStatus {
        var st = stat()
        try sys(followSymlinks ? "stat" : "lstat", path) { followSymlinks ? stat(path, &st) : lstat(path, &st) }
        return FileStatus(st)
    }

    /// `of(path)`, nil when it fails for any reason.
    public static func at(_ path: String, followSymlinks: Bool = true) -> FileStatus? {
        try? of(path, followSymlinks: followSymlinks)
    }

    /// "a symlink", "a FIFO", … (`PrivateFile.describe`).
    public var kindPhrase: String { PrivateFile.describe(mode_t(mode)) }
}

extension SystemError {
    /// The errno's text, as `strerror` gives it.
    public var reason: String { String(cString: strerror(errno)) }

    /// True for "no such file" (`ENOENT`), or a path component that is not a directory (`ENOTDIR`).
    public var isNotFound: Bool { errno == ENOENT || errno == ENOTDIR }
    public var isNoEntry: Bool { errno == ENOENT }
    public var isExists: Bool { errno == EEXIST }
    public var isInterrupted: Bool { errno == EINTR }
    public var isNoMemory: Bool { errno == ENOMEM }
}

extension SystemError {
    /// `EAGAIN` for `call`: a retry loop that gave up.
    public static func tryAgain(_ call: String, subject: String = "") -> SystemError {
        SystemError(call, errno: EAGAIN, subject: subject)
    }
}
