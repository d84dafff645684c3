import FoundationEssentials
import VigilCore

/// Whether a small file changed since it was last read, from one `stat` (the probe's cache of
/// `bridge.json`, the version file: docs/architecture.md, "File formats").
///
/// The stamp (device, inode, size, modification and change times) alone is not enough: a
/// file system's timestamps are coarse (a kernel tick, a few milliseconds; 2 s on some), and an
/// atomic replace frees the old inode, which the next replace may get again. Two writes within
/// one timestamp tick, the second of the same size into a reused inode (or in place), leave the
/// same stamp with other contents. So a stamp is trusted only when the file had *settled* when
/// it was looked at: its change time was more than `granularity` before the look. Any later
/// write then carries a later change time (the kernel sets it; `utimensat` cannot set it back),
/// so a changed file never shows a trusted stamp. A file changed less than `granularity` before
/// it was read is read again at every look until it has settled.
public struct FileChangeCheck: Sendable {
    /// More than any local file system's timestamp granularity (ext4, xfs, btrfs, tmpfs: a
    /// kernel tick; FAT: 2 s).
    public static let granularity = TimeSpan.seconds(3)

    private var last: (stamp: FileStatus.Stamp, settled: Bool)?
    private let followSymlinks: Bool

    /// - Parameter followSymlinks: for a path an operator named (a `--version-file` may be a
    ///   link); state files are looked at with `lstat` (a symlink there is refused anyway).
    public init(followSymlinks: Bool = false) {
        self.followSymlinks = followSymlinks
    }

    /// Looks at `path` (one `stat`): true when it is the file of the last look, unchanged and
    /// settled then, so what was read at that look is still what it holds. False otherwise
    /// (the caller reads it), and this look is remembered for the next.
    /// - Parameter now: the wall clock before the `stat` (a test passes its own).
    public mutating func isUnchanged(_ path: String, now: Date = Clock.wall()) -> Bool {
        guard let st = FileStatus.at(path, followSymlinks: followSymlinks) else {
            last = nil
            return false
        }
        let stamp = st.stamp
        let unchanged = last.map { $0.settled && $0.stamp == stamp } ?? false
        if !unchanged {
            let changed = Double(stamp.changedSeconds) + Double(stamp.changedNanoseconds) / 1e9
            last = (stamp, now.timeIntervalSince1970 - changed > FileChangeCheck.granularity.seconds)
        }
        return unchanged
    }

    /// Forgets the last look (what was read is not kept: absent, corrupt): the next look reads.
    public mutating func forget() {
        last = nil
    }
}
