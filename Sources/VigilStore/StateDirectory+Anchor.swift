import FoundationEssentials
import VigilSystem

/// The state directory a process started in, pinned: its device and inode, and an open
/// descriptor of it (docs/operator-guide.md, "The state directory removed or replaced").
///
/// The bridge and the runner write everything by path. If the directory is removed
/// (`rm -rf`) or another directory is put at its path (renamed away, a backup restored) while
/// they run, those paths lead into nothing or into a directory that is not theirs: an
/// acknowledged mission would vanish, status would read "healthy" from an empty directory, a
/// second pair started there would meet processes it does not know. So every loop turn (and
/// just before each heartbeat write) they `check()` the path (one `stat`), and stop acting at
/// the first difference.
public final class StateDirectoryAnchor {
    public let path: String
    public let device: UInt64
    public let inode: UInt64
    /// O_DIRECTORY descriptor of the directory we started in (close-on-exec): it reaches that
    /// directory wherever it is now (`pinnedPath`), and tells a removed one (no links left).
    private let fd: Int32
    /// The exit code of a runner or bridge whose state directory was lost; scripts/vigil-run
    /// does not relaunch after it (docs/operator-guide.md, "Exit codes").
    public static let lostExitCode: Int32 = 4

    /// The first loss seen; a loss is final.
    private var lost: Loss?

    /// What became of the directory at `path`.
    public enum Loss: Sendable, Equatable, CustomStringConvertible {
        /// Nothing is at the path any more (or not a directory).
        case removed(String)
        /// Another directory is at the path now.
        case replaced
        /// The path cannot be looked at (a directory above it changed, an I/O error).
        case unreachable(String)

        public var description: String {
            switch self {
            case .removed(let why): return "was removed (\(why))"
            case .replaced: return "was replaced by another directory (its device and inode changed)"
            case .unreachable(let why): return "cannot be looked at any more (\(why))"
            }
        }

        /// For the journal: `removed`, `replaced`, `unreachable`.
        public var kind: String {
            switch self {
            case .removed: return "removed"
            case .replaced: return "replaced"
            case .unreachable: return "unreachable"
            }
        }
    }

    /// Pins the directory at `dir.path` now (it must exist: after `StateDirectory.prepare`).
    public init(_ dir: StateDirectory) throws(SystemError) {
        path = dir.path
        let d = try FileDescriptor.open(dir.path, [.readOnly, .directory])
        let st: FileStatus
        do { st = try d.status() } catch {
            d.close()
            throw SystemError("fstat", errno: error.errno, subject: dir.path)
        }
        fd = d.rawValue
        device = st.device
        inode = st.inode
    }

    deinit { FileDescriptor(rawValue: fd).close() }

    /// The environment variable that hands a process the state directory it is started for,
    /// as `DEVICE:INODE` (`token`): the runner to the bridges it spawns and the bridge to its
    /// re-exec, scripts/vigil-run to its runners. A process given it starts only in that very
    /// directory (`verifyHanded`), so one spawned just as the directory went away never makes
    /// a new one.
    public static let handedVariable = "VIGIL_STATE_DIR_ID"

    /// `DEVICE:INODE` (decimal, as `stat -c %d:%i` prints them).
    public var token: String { "\(device):\(inode)" }

    /// Nil when `dir.path` is the directory `token` names (or `token` is no token); what became
    /// of it otherwise.
    public static func verify(_ dir: StateDirectory, token: String) -> Loss? {
        let parts = token.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return nil }
        let st: FileStatus
        do { st = try FileStatus.of(dir.path) } catch { return .removed(error.reason) }
        if st.kind != .directory { return .removed("not a directory now") }
        return st.device == dev && st.inode == ino ? nil : .replaced
    }

    /// Nil while `path` still names the directory we started in; otherwise what became of it
    /// (and from then on always that). One `stat`, plus an `fstat` when the path is gone.
    public func check() -> Loss? {
        if let lost { return lost }
        let st: FileStatus
        do { st = try FileStatus.of(path) } catch {
            let text = error.reason
            if error.isNotFound {
                let unlinked = (try? FileDescriptor(rawValue: fd).status())?.linkCount == 0
                lost = .removed(unlinked ? "deleted: \(text)" : "renamed away or moved: \(text) at its path")
            } else if error.isInterrupted || error.isNoMemory {
                return nil // not an answer: ask again next turn
            } else {
                lost = .unreachable(text)
            }
            return lost
        }
        if st.kind != .directory {
            lost = .removed("a \(st.kindPhrase.dropFirst(2)) is at its path now")
        } else if st.device != device || st.inode != inode {
            lost = .replaced
        }
        return lost
    }

    /// A path to `name` in the directory we started in, wherever it is now (renamed away), or
    /// nowhere (removed: then opening it fails): through our descriptor in /proc/self/fd. For
    /// the last journal entry of a process whose state directory is lost.
    public func pinnedPath(_ name: String) -> String { "/proc/self/fd/\(fd)/\(name)" }
}
