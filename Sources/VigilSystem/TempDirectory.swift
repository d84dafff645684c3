import Glibc

/// A fresh private directory under /tmp (`mkdtemp`, mode 0700), for benchmarks and tools.
public enum TempDirectory {
    /// Makes `/tmp/<prefix>-XXXXXX` and returns its path.
    public static func make(prefix: String) throws(SystemError) -> String {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw SystemError("mkdtemp", errno: lastErrno(), subject: "/tmp/\(prefix)-XXXXXX")
        }
        return String(cString: p)
    }
}
