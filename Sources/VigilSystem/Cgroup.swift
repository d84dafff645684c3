import Glibc
import VigilCore

/// Files of /proc and /sys whose size `fstat` does not tell (it says 0): read to their end, up
/// to `limit` bytes. Not for state files (those are `StateSlot`'s).
public enum KernelFile {
    /// The whole file, at most `limit` bytes; nil when it cannot be opened or read.
    public static func read(_ path: String, limit: Int) -> [UInt8]? {
        guard let fd = try? FileDescriptor.open(path, .readOnly) else { return nil }
        return fd.closeAfter { try? fd.readAll(limit: limit) }
    }

    /// Writes `text` with one `write` (how cgroup control files take a value).
    public static func write(_ text: String, to path: String) throws(SystemError) {
        let fd = try FileDescriptor.open(path, .writeOnly)
        try fd.closeAfter { () throws(SystemError) in
            let bytes = Array(text.utf8)
            let n: Int
            n = try sys("write", path) { bytes.withUnsafeBytes { Glibc.write(fd.rawValue, $0.baseAddress, $0.count) } }
            if n != bytes.count { throw SystemError("write", errno: EIO, subject: path) }
        }
    }
}

/// A cgroup v2 directory (docs/missions.md, "Every process of a mission"). A process is in
/// exactly one cgroup and its children are born in it; only a process allowed to write the
/// common ancestor's `cgroup.procs` (root, or the owner of a delegated subtree) can move one
/// out. Vigil makes one per mission so that every process of a mission can be found and
/// killed, whatever session it started or environment it cleared.
///
/// The corresponding kernel interface is the cgroup2 file system: `mkdir`, `rmdir`,
/// `cgroup.procs`, `cgroup.events`, `cgroup.kill` (Linux 5.14).
public struct Cgroup: Sendable, Equatable, CustomStringConvertible {
    /// Absolute path of the directory under the cgroup2 mount.
    public let path: String

    public init(path: String) { self.path = path }

    public var description: String { path }

    /// The cgroup this process is in, when a cgroup2 hierarchy is mounted and we are in it
    /// (a pure cgroup v1 system has none). Nil otherwise.
    public static func ofCurrentProcess() -> Cgroup? {
        guard let mount = mountPoint(), let own = KernelFile.read("/proc/self/cgroup", limit: 64 << 10) else { return nil }
        // The v2 line is "0::/path".
        for line in own.split(separator: 0x0A) where line.starts(with: Array("0::".utf8)) {
            let rel = String(decoding: line.dropFirst(3), as: UTF8.self)
            guard rel.hasPrefix("/") else { return nil }
            return Cgroup(path: rel == "/" ? mount : mount + rel)
        }
        return nil
    }

    /// Where the cgroup2 file system is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
    /// on a hybrid system), from /proc/self/mountinfo.
    public static func mountPoint() -> String? {
        guard let info = KernelFile.read("/proc/self/mountinfo", limit: 1 << 20) else { return nil }
        for line in info.split(separator: 0x0A) {
            let text = String(decoding: line, as: UTF8.self)
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS… - FSTYPE SOURCE SUPER"
            guard let dash = text.firstRange(of: " - ") else { continue }
            let after = text[dash.upperBound...].split(separator: " ")
            let before = text[..<dash.lowerBound].split(separator: " ")
            guard after.first == "cgroup2", before.count >= 5, before[3] == "/" else { continue }
            return unescapeMountPath(String(before[4]))
        }
        return nil
    }

    /// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
    public static func unescapeMountPath(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count,
               let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public func child(_ name: String) -> Cgroup { Cgroup(path: path + "/" + name) }

    public var exists: Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Makes the directory (and missing parents below the mount); an existing one is fine.
    public func create() throws(SystemError) {
        // Twice: a parent removed by another process just as we make the child (ENOENT).
        for attempt in 0..<2 {
            if exists { return }
            if let parent, !parent.exists { try parent.create() }
            do {
                _ = try sys("mkdir", path) { mkdir(path, 0o755) }
                return
            } catch where error.errno == EEXIST {
                return
            } catch where error.errno == ENOENT && attempt == 0 {}
        }
    }

    /// The cgroup above this one (nil at the top of the path).
    public var parent: Cgroup? {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return nil }
        return Cgroup(path: String(path[..<slash]))
    }

    /// Whether this process may make cgroups below this one.
    public var isWritable: Bool { access(path, W_OK) == 0 && access(path + "/cgroup.procs", W_OK) == 0 }

    /// Moves process `pid` (0: the calling process) into this cgroup.
    public func add(pid: Int32 = 0) throws(SystemError) {
        try KernelFile.write("\(pid)\n", to: path + "/cgroup.procs")
    }

    /// The processes in this cgroup (not its children), zombies excluded by the kernel.
    public func processes() -> [Int32] {
        guard let data = KernelFile.read(path + "/cgroup.procs", limit: 4 << 20) else { return [] }
        return data.split(separator: 0x0A).compactMap { Int32(String(decoding: $0, as: UTF8.self)) }
    }

    /// Whether any live process is in this cgroup or below it (`cgroup.events`: "populated 1").
    /// False when the cgroup does not exist.
    public var isPopulated: Bool {
        guard let data = KernelFile.read(path + "/cgroup.events", limit: 4096) else { return false }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").contains("populated 1")
    }

    /// The processes in this cgroup (not its children, not this process), each pinned by a
    /// pidfd opened for its identity (PID + start time) and then seen in `cgroup.procs` again:
    /// a PID that was reused between the first listing and the pin is not among them, so a
    /// signal through one of these reaches only a process of this cgroup.
    public func members() -> [PidFD] {
        let pinned = processes().filter { $0 > 1 && $0 != getpid() }.compactMap { ProcessIdentity.of(pid: $0)?.openPidFD() }
        let still = Set(processes())
        return pinned.filter { still.contains($0.identity.pid) }
    }

    /// Waits until no live process is in this cgroup or below it, up to `timeout`: the kernel
    /// wakes a `poll` for POLLPRI on `cgroup.events` when "populated" changes. Whether it is
    /// empty at the end.
    public func waitUntilEmpty(timeout: TimeSpan) -> Bool {
        let deadline = Clock.boot() + timeout
        while true {
            // Open first, then look: a change after the look still wakes the poll.
            guard let fd = try? sys("open", path + "/cgroup.events", { open(path + "/cgroup.events", O_RDONLY | O_CLOEXEC) }) else {
                return !exists
            }
            defer { close(fd) }
            if !isPopulated { return true }
            let left = deadline - Clock.boot()
            if left <= .zero { return false }
            var p = pollfd(fd: fd, events: Int16(POLLPRI), revents: 0)
            _ = poll(&p, 1, Int32(min(max(left.milliseconds, 1), 60_000)))
        }
    }

    /// SIGKILLs every process in this cgroup and below it: `cgroup.kill` (no process can escape
    /// by forking meanwhile); where the kernel has none, SIGKILL to each member (`members`).
    /// Returns how many processes were listed just before.
    @discardableResult
    public func killAll() -> Int {
        let listed = processes().count
        if (try? KernelFile.write("1\n", to: path + "/cgroup.kill")) == nil {
            for m in members() { m.signal(.kill) }
        }
        return listed
    }

    /// Sends `signal` to every process of this cgroup (not its children), through pidfds
    /// (`members`). Returns how many were signalled.
    @discardableResult
    public func signalAll(_ signal: Signal) -> Int {
        members().filter { $0.signal(signal) }.count
    }

    /// Removes the (empty) cgroup. EBUSY while a process is still in it.
    public func remove() throws(SystemError) {
        do {
            _ = try sys("rmdir", path) { rmdir(path) }
        } catch where error.errno == ENOENT {}
    }
}
