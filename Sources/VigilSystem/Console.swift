import CVigil
import Glibc
import Synchronization

/// Standard output and standard error. Every byte Vigil writes to either goes through here
/// (`printOut`, `printErr`, `mission show`'s copy of an output file): `write(2)` in a loop that
/// retries `EINTR` and short writes, where a closed descriptor (`EBADF`: started with `>&-`) or
/// a reader that went away (`EPIPE`: `| head -1`) means "nobody is listening" — the text is
/// dropped, the caller is told, and nothing crashes (Foundation's `FileHandle.write` traps on
/// both). Long-running processes and the CLI ignore `SIGPIPE` (`ignoreSIGPIPE`), so `EPIPE`
/// arrives as an error, not as a signal. See docs/operator-guide.md, "Bad input".
public enum Console: Sendable {
    case out
    case err

    var fd: Int32 { self == .out ? STDOUT_FILENO : STDERR_FILENO }

    private static let outGone = Atomic<Bool>(false)
    private static let errGone = Atomic<Bool>(false)

    private var gone: Bool {
        get { self == .out ? Console.outGone.load(ordering: .relaxed) : Console.errGone.load(ordering: .relaxed) }
        nonmutating set {
            if self == .out { Console.outGone.store(newValue, ordering: .relaxed) } else { Console.errGone.store(newValue, ordering: .relaxed) }
        }
    }

    /// True once a write found nobody listening (closed, or its reader gone): loops that only
    /// print (`journal --follow`) stop then.
    public var isGone: Bool { gone }

    /// Writes all of `bytes`. False when they could not be written: nobody is listening (then
    /// `isGone`), or another error (a full disk behind a redirect). Never traps.
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard !gone else { return false }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n > 0 { done += n; continue }
            let e = lastErrno()
            if n < 0 && e == EINTR { continue }
            if n < 0 && e == EAGAIN {
                // A non-blocking descriptor someone handed us: wait until it takes more.
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&p, 1, 1000) > 0 { continue }
                return false
            }
            if n < 0 && (e == EPIPE || e == EBADF) { gone = true }
            return false
        }
        return true
    }

    @discardableResult
    public func write(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    /// Sets `SIGPIPE` to ignored, once per process (a Swift process starts with the default,
    /// which kills it at the first write into a closed pipe). Children get the default back
    /// (`Spawner` resets signals).
    public static func ignoreSIGPIPE() {
        cvigil_ignore_sigpipe()
    }
}
