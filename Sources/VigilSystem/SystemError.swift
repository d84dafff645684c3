import CVigil
import Glibc

/// A failed system call: its name, the errno, and what it was about (a path, a pid).
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public var call: String
    public var errno: Int32
    public var subject: String
    /// Set when the call was refused because the path holds something other than a regular
    /// file (what is there: "a symlink", "a FIFO", …); see `PrivateFile.open`.
    public var unsafeSlot: String? = nil

    public init(_ call: String, errno: Int32, subject: String = "") {
        self.call = call
        self.errno = errno
        self.subject = subject
    }

    public var description: String {
        if let kind = unsafeSlot {
            return "\(subject) is \(kind), not a regular file: refused (Vigil never opens a symlink, FIFO or device in its state directory; see docs/operator-guide.md, \"Security of the state directory\")"
        }
        let what = String(cString: strerror(errno))
        return subject.isEmpty ? "\(call): \(what)" : "\(call) \(subject): \(what)"
    }

    /// Disk full or quota: the operator has to free space.
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }
}

/// The errno funnel: runs `body` until it does not fail with EINTR, and throws a `SystemError`
/// naming the call when it returns -1. Only VigilSystem reads `errno` (this funnel, and
/// `lastErrno` for its few calls whose failure is not -1).
@discardableResult
public func sys<T: BinaryInteger>(_ call: String, _ subject: @autoclosure () -> String = "", _ body: () -> T) throws(SystemError) -> T {
    while true {
        let r = body()
        if r != -1 { return r }
        let e = cvigil_errno()
        if e == EINTR { continue }
        throw SystemError(call, errno: e, subject: subject())
    }
}

/// The current errno, for the rare call whose failure is not -1 (posix_spawn returns it).
public func lastErrno() -> Int32 { cvigil_errno() }

func cvigilErrno() -> Int32 { cvigil_errno() }
