import FoundationEssentials
import VigilCore
import VigilSystem

/// A mission's checkpoints (docs/missions.md, "Checkpoints"): what an attempt saved with
/// `vigil checkpoint save FILE`, handed to the next attempt as `VIGIL_CHECKPOINT`.
///
/// Files, in `<state>/missions/<id>/checkpoints/`:
/// - `<seq>.data`: the bytes, as saved (written to a temp file, fsynced, renamed);
/// - `<seq>.meta`: a `StateFile` of kind `checkpoint` with the size and CRC-32 of the data —
///   written last, it is the commit point: a `.data` without its `.meta` was never saved;
/// - `.lock`: flock taken by a save, so two saves of one mission number their checkpoints apart.
///
/// Crash points: killed before the meta is renamed into place, the save did not happen (no id
/// was printed; the data file is removed by the next save); after the directory's fsync, the
/// checkpoint is durable and its number is printed. A power cut before that fsync may keep
/// either name: a meta without its data does not verify (the previous checkpoint is used).
/// Checkpoints beyond the newest `keep` are removed before that fsync; a crash there only
/// leaves extra ones.
public struct CheckpointStore: Sendable {
    public static let metaKind = "checkpoint"
    /// Checkpoints kept per mission (the newest).
    public static let keep = 5
    /// How long a mission's checkpoints are kept after it ended (for `vigil mission retry`).
    public static let retention = TimeSpan.seconds(7 * 86400)
    /// The largest checkpoint a save accepts.
    public static let maxSize = 64 << 20

    public struct Meta: Codable, Sendable, Equatable {
        public var mission: Int64
        public var attempt: Int
        public var seq: Int
        public var size: Int
        public var crc32: UInt32
        public var saved: String
    }

    /// One checkpoint as found on disk.
    public struct Entry: Sendable, Equatable {
        public var seq: Int
        public var data: String
        public var meta: Meta?
        /// Why it cannot be used (nil: verified).
        public var problem: String?
    }

    public let stateDir: StateDirectory
    public let mission: Int64

    public init(stateDir: StateDirectory, mission: Int64) {
        self.stateDir = stateDir
        self.mission = mission
    }

    public var directory: String { MissionPaths(stateDir: stateDir, id: mission).checkpoints }
    func dataPath(_ seq: Int) -> String { "\(directory)/\(seq).data" }
    func metaPath(_ seq: Int) -> String { "\(directory)/\(seq).meta" }

    public struct SaveError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Saves the contents of `source` (a regular file, symlinks followed, at most `maxSize`)
    /// as the mission's newest checkpoint and returns its meta once it is durable.
    public func save(from source: String, attempt: Int) throws -> Meta {
        let bytes: [UInt8]
        switch StateSlot.read(source, followSymlinks: true, sizeLimit: CheckpointStore.maxSize) {
        case .absent: throw SaveError(description: "no file at \(source)")
        case .unfit(let why): throw SaveError(description: "\(source) cannot be saved: \(why)")
        case .bytes(let b): bytes = b
        }
        let missionDir = MissionPaths(stateDir: stateDir, id: mission).directory
        guard FileManager.default.fileExists(atPath: missionDir) else {
            throw SaveError(description: "mission \(mission) has no directory in \(stateDir.path): is this a mission of that state directory?")
        }
        try AtomicFile.makeDirectory(directory, below: missionDir) // never re-creates the mission (or state) dir
        guard let lock = try FileLock.lock(directory + "/.lock", attempts: 200) else {
            throw SaveError(description: "another save of mission \(mission) holds \(directory)/.lock")
        }
        defer { lock.release() }
        let found = seqs()
        let seq = (found.max() ?? 0) + 1
        // Data without meta: a save killed before its commit point.
        for s in found where !FileManager.default.fileExists(atPath: metaPath(s)) { FileSystem.unlink(dataPath(s)) }
        // Data (contents fsynced), then meta (fsynced), then one fsync of the directory for
        // both names and the pruning: 3 fsyncs. If only the meta's name survives a power cut,
        // the data is missing, the checkpoint does not verify and the previous one is used —
        // and its number had not been printed yet.
        try AtomicFile.write(Data(bytes), to: dataPath(seq), syncDirectory: false)
        let meta = Meta(mission: mission, attempt: attempt, seq: seq, size: bytes.count, crc32: CRC32.checksum(bytes),
                        saved: Clock.iso(Clock.wall()))
        try StateFile.write(meta, kind: CheckpointStore.metaKind, to: metaPath(seq), syncDirectory: false)
        for s in seqs().sorted().dropLast(CheckpointStore.keep) where s != seq {
            FileSystem.unlink(metaPath(s)) // meta first: a crash in between leaves data that is never used
            FileSystem.unlink(dataPath(s))
        }
        try AtomicFile.fsyncDirectory(directory)
        return meta
    }

    /// Removes all of the mission's checkpoints (its retention is over). Whether there were any.
    @discardableResult
    public func removeAll() -> Bool {
        guard FileManager.default.fileExists(atPath: directory) else { return false }
        try? FileManager.default.removeItem(atPath: directory)
        try? AtomicFile.fsyncDirectory(MissionPaths(stateDir: stateDir, id: mission).directory)
        return true
    }

    /// Sequence numbers present (by their data or meta file).
    func seqs() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Array(Set(names.compactMap { name -> Int? in
            guard name.hasSuffix(".data") || name.hasSuffix(".meta") else { return nil }
            return Int(name.dropLast(5))
        }))
    }

    /// Every checkpoint, oldest first, each verified (meta readable and of this mission, data
    /// of its size and checksum).
    public func list() -> [Entry] {
        seqs().sorted().map(verify)
    }

    func verify(_ seq: Int) -> Entry {
        var e = Entry(seq: seq, data: dataPath(seq))
        switch StateFile.read(metaPath(seq), kind: CheckpointStore.metaKind, as: Meta.self) {
        case .absent:
            e.problem = "no meta file (a save that did not finish)"
            return e
        case .corrupt(let why):
            e.problem = "meta file corrupt: \(why)"
            return e
        case .ok(let m):
            e.meta = m
        }
        guard let m = e.meta, m.mission == mission, m.seq == seq else {
            e.problem = "meta file of another checkpoint"
            return e
        }
        switch StateSlot.read(e.data, sizeLimit: CheckpointStore.maxSize) {
        case .absent: e.problem = "data file missing"
        case .unfit(let why): e.problem = "data file \(why)"
        case .bytes(let b):
            if b.count != m.size {
                e.problem = "data file is \(b.count) bytes, saved \(m.size)"
            } else if CRC32.checksum(b) != m.crc32 {
                e.problem = "data file checksum mismatch"
            }
        }
        return e
    }

    /// The newest usable checkpoint, for the next attempt. Newer ones that are corrupt are
    /// quarantined (journaled by `files`); one whose save did not finish is left for the next
    /// save to remove.
    public func newestValid(files: StateFiles) -> Entry? {
        for seq in seqs().sorted().reversed() {
            let e = verify(seq)
            if e.problem == nil { return e }
            guard FileManager.default.fileExists(atPath: metaPath(seq)) else { continue }
            let why = "checkpoint \(seq) of mission \(mission): \(e.problem!)"
            files.quarantine(metaPath(seq), reason: why)
            if FileManager.default.fileExists(atPath: dataPath(seq)) { files.quarantine(dataPath(seq), reason: why) }
        }
        return nil
    }
}
