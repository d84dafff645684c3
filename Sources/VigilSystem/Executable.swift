import CVigil
import FoundationEssentials
import Glibc

/// The program on disk and the image that runs: where versions of Vigil come from.
public enum Executable {
    /// Absolute path of the running executable as it was when started (`/proc/self/exe`,
    /// without the ` (deleted)` suffix the kernel adds after the file is replaced). Recorded
    /// at start, because re-exec must use the path, not /proc/self/exe (which is the old image).
    public static let path: String = {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, 4095)
        guard n > 0 else { return CommandLine.arguments[0] }
        var p = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if p.hasSuffix(" (deleted)") { p.removeLast(" (deleted)".count) }
        return p
    }()

    /// A version string for a file: its inode, size and modification time. A replaced binary
    /// (new inode) or one rewritten in place (new mtime) is a new version. Nil when absent.
    public static func fileIdentity(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return "exe:\(st.st_ino)-\(st.st_size)-\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
    }

    /// The version of the image this process runs (stat through /proc/self/exe reaches the
    /// running inode even after the file was replaced).
    public static let runningIdentity: String = fileIdentity("/proc/self/exe") ?? "exe:unknown"
}

/// File-system facts about a path.
public enum FileSystem {
    /// The name of the network file system holding `path`, if it is one (SQLite's WAL needs
    /// shared memory on one host).
    public static func networkKind(at path: String) -> String? {
        let kinds: [Int: String] = [0x6969: "nfs", 0xFF53_4D42: "cifs", 0xFE53_4D42: "smb2", 0x517B: "smb", 0x6573_5546: "fuse"]
        let t = cvigil_fs_type(path.isEmpty ? "." : path)
        return t < 0 ? nil : kinds[Int(t)]
    }
}
