import Glibc
import Synchronization

/// Watches directories for created, moved-in, written or deleted names. Used so the runner and
/// the bridge react to markers, heartbeats and version changes at once instead of on the next
/// tick. The watch table is behind a `Mutex` (a watch may be added from another thread than
/// the one that drains).
public final class Inotify: Sendable {
    public let fd: Int32
    private let watches = Mutex<[Int32: String]>([:])

    public init() throws(SystemError) {
        fd = try sys("inotify_init1") { inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK)) }
    }

    deinit { close(fd) }

    /// Watches `directory` for entries being created, replaced, written or removed, and for
    /// the directory itself being removed or moved (reported with an empty name), so a state
    /// directory renamed away wakes its processes at once.
    public func watch(directory: String) throws(SystemError) {
        let mask = UInt32(IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)
        let wd = try sys("inotify_add_watch", directory) { inotify_add_watch(fd, directory, mask) }
        watches.withLock { $0[wd] = directory }
    }

    /// The names that changed since the last call (with their directory), or empty.
    public func drain() -> [(directory: String, name: String)] {
        var out: [(String, String)] = []
        // Every loop turn drains (most find nothing): the buffer is neither allocated on the
        // heap nor zeroed, and the watch table is copied only when an event came.
        withUnsafeTemporaryAllocation(byteCount: 8192, alignment: 8) { buf in
            var watches: [Int32: String]?
            while true {
                let n = read(fd, buf.baseAddress, buf.count)
                if n <= 0 { break }
                if watches == nil { watches = self.watches.withLock { $0 } }
                var off = 0
                while off + 16 <= n {
                    let wd = buf.loadUnaligned(fromByteOffset: off, as: Int32.self)
                    let len = Int(buf.loadUnaligned(fromByteOffset: off + 12, as: UInt32.self))
                    let nameBytes = UnsafeRawBufferPointer(rebasing: buf[(off + 16)..<min(n, off + 16 + len)]).prefix { $0 != 0 }
                    out.append((watches?[wd] ?? "", String(decoding: nameBytes, as: UTF8.self)))
                    off += 16 + len
                }
            }
        }
        return out
    }
}

/// `poll` over a few descriptors with a timeout; returns the descriptors that are readable.
public func pollReadable(_ fds: [Int32], timeoutMilliseconds: Int32) -> Set<Int32> {
    var pfds = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    let r = poll(&pfds, nfds_t(pfds.count), timeoutMilliseconds)
    guard r > 0 else { return [] }
    return Set(pfds.filter { $0.revents != 0 }.map(\.fd))
}
