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
        FileStatus.at(path).map(identity)
    }

    static func identity(_ st: FileStatus) -> String {
        "exe:\(st.inode)-\(st.size)-\(st.modifiedSeconds).\(st.modifiedNanoseconds)"
    }

    /// `fileIdentity` of one path asked again and again (every loop turn, every probe): one
    /// `stat`, the text made again only when the inode, size or mtime changed.
    public struct IdentityCache: Sendable {
        private var last: (inode: UInt64, size: Int, seconds: Int, nanoseconds: Int, text: String)?
        public init() {}

        public mutating func identity(_ path: String) -> String? {
            guard let st = FileStatus.at(path) else {
                last = nil
                return nil
            }
            if let l = last, l.inode == st.inode, l.size == st.size, l.seconds == st.modifiedSeconds, l.nanoseconds == st.modifiedNanoseconds {
                return l.text
            }
            let text = Executable.identity(st)
            last = (st.inode, st.size, st.modifiedSeconds, st.modifiedNanoseconds, text)
            return text
        }
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
