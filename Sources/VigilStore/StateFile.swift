import FoundationEssentials
import VigilCore
import VigilSystem

/// Small state files (PID files, heal state, markers, mission results): a one-line header with
/// the kind, the payload length and its CRC-32, then the payload as JSON.
///
///     vigil-state 1 bridge 187 5c1d0e2a
///     {"pid":1234,...}
///
/// Written only through `AtomicFile`. A file that is torn, has a wrong checksum or length, the
/// wrong kind, or JSON of the wrong shape is corrupt: `StateFiles.load` quarantines it (renames
/// it into `quarantine/`), journals that, and treats it as absent.
public enum StateFile {
    static let magic = "vigil-state"
    static let formatVersion = 1

    public enum Read<T>: Sendable where T: Sendable {
        case absent
        case ok(T)
        case corrupt(String)
    }

    public static func encode<T: Encodable>(_ value: T, kind: String) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let payload = try e.encode(value)
        var data = Data("\(magic) \(formatVersion) \(kind) \(payload.count) \(CRC32.hex(payload))\n".utf8)
        data.append(payload)
        data.append(0x0A)
        return data
    }

    public static func decode<T: Decodable & Sendable>(_ data: Data, kind: String, as type: T.Type) -> Read<T> {
        data.withUnsafeBytes { raw in decode(raw, kind: kind, as: type) }
    }

    /// Parses the header as bytes and checks the payload's checksum before any JSON work:
    /// this runs on every probe.
    static func decode<T: Decodable & Sendable>(_ raw: UnsafeRawBufferPointer, kind: String, as type: T.Type) -> Read<T> {
        guard let nl = raw.firstIndex(of: 0x0A) else {
            return .corrupt(raw.isEmpty ? "empty file" : "no header line")
        }
        let header = String(decoding: UnsafeRawBufferPointer(rebasing: raw[0..<nl]), as: UTF8.self).split(separator: " ")
        guard header.count == 5, header[0] == magic else { return .corrupt("not a Vigil state file") }
        guard header[1] == "\(formatVersion)" else { return .corrupt("unknown format version \(header[1])") }
        guard header[2] == kind else { return .corrupt("holds a \(header[2]) record, expected \(kind)") }
        guard let length = Int(header[3]), length >= 0 else { return .corrupt("bad length") }
        let start = nl + 1
        guard raw.count - start >= length else { return .corrupt("torn: shorter than its header says") }
        let payload = UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)])
        let crc = CRC32.checksum(payload)
        guard let want = UInt32(header[4], radix: 16), crc == want else { return .corrupt("checksum mismatch") }
        do {
            return .ok(try JSONDecoder().decode(T.self, from: Data(payload)))
        } catch {
            return .corrupt("wrong shape: \(shortDecodingError(error))")
        }
    }

    /// Reads through `StateSlot` (docs/operator-guide.md, "Bad input"): a FIFO, device,
    /// symlink, directory or a file over `StateSlot.sizeLimit` is `.corrupt` (so `StateFiles.load`
    /// quarantines it), never a blocked `open`.
    public static func read<T: Decodable & Sendable>(_ path: String, kind: String, as type: T.Type) -> Read<T> {
        StateSlot.withContents(of: path) { contents in
            switch contents {
            case .absent: return .absent
            case .unfit(let why): return .corrupt(why)
            case .bytes(let raw): return decode(raw, kind: kind, as: type)
            }
        }
    }

    public static func write<T: Encodable>(_ value: T, kind: String, to path: String, mode: UInt32 = PrivateFile.mode, syncDirectory: Bool = true) throws {
        try AtomicFile.write(try encode(value, kind: kind), to: path, mode: mode, syncDirectory: syncDirectory)
    }

    static func shortDecodingError(_ error: any Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        switch e {
        case .keyNotFound(let k, _): return "missing field \(k.stringValue)"
        case .typeMismatch(_, let c): return "wrong type at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case .valueNotFound(_, let c): return "null at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case .dataCorrupted(let c): return "invalid JSON \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// Loading with the corrupt-file policy: quarantine, journal, treat as absent.
public struct StateFiles: Sendable {
    public let dir: StateDirectory
    public let journal: Journal

    public init(dir: StateDirectory, journal: Journal) {
        self.dir = dir
        self.journal = journal
    }

    /// The file's value, or nil when absent or corrupt (a corrupt file is quarantined and
    /// journaled; this never throws).
    public func load<T: Decodable & Sendable>(_ path: String, kind: String, as type: T.Type) -> T? {
        switch StateFile.read(path, kind: kind, as: type) {
        case .absent: return nil
        case .ok(let v): return v
        case .corrupt(let reason):
            quarantine(path, reason: reason)
            return nil
        }
    }

    public func save<T: Encodable>(_ value: T, kind: String, to path: String, mode: UInt32 = PrivateFile.mode) throws {
        try StateFile.write(value, kind: kind, to: path, mode: mode)
    }

    /// Touches a wake file (`missions.wake`, `chat/kick`) without ever blocking: whatever is
    /// there instead of a regular file (a FIFO, a symlink) is quarantined and the touch tried
    /// once more. Returns how the last try went (`.failed(ENOENT)`: the directory is missing).
    @discardableResult
    public func touch(_ path: String) -> StateSlot.Touched {
        var result = StateSlot.touch(path)
        if case .unfit(let why) = result {
            quarantine(path, reason: why)
            result = StateSlot.touch(path)
        }
        return result
    }

    /// Moves a bad file aside into `quarantine/` (never deletes it) and journals it.
    public func quarantine(_ path: String, reason: String) {
        let name = Path.lastComponent(path)
        if let target = moveToQuarantine(path) {
            journal.append(.quarantined, ["file": .string(name), "reason": .string(reason), "moved_to": .string(target)])
        } else if FileStatus.at(path, followSymlinks: false) != nil {
            // Could not move it (read-only, full): remove it so it cannot wedge every probe.
            FileSystem.unlink(path)
            journal.append(.quarantined, ["file": .string(name), "reason": .string(reason), "moved_to": nil, "removed": true])
        }
    }

    /// Moves `path` (a file or a whole directory) into `quarantine/` as `NAME.MS.PID.RANDOM`
    /// (NAME: `name`, or the last path component), fsyncing both directories; returns where it
    /// went, or nil when it could not be moved (nothing is removed then). Journals nothing: the
    /// caller says why (`quarantine` journals `quarantined`).
    public func moveToQuarantine(_ path: String, name: String? = nil) -> String? {
        let name = name ?? Path.lastComponent(path)
        let stamp = Int64(Clock.wall().timeIntervalSince1970 * 1000)
        let target = dir.quarantineEntry("\(name).\(stamp).\(ThisProcess.pid).\(UInt16.random(in: 0...UInt16.max))")
        // `dir.makeDirectory`: never re-creates a state directory someone removed.
        guard (try? dir.makeDirectory(dir.quarantine)) != nil, (try? FileSystem.rename(path, to: target)) != nil else { return nil }
        try? AtomicFile.fsyncDirectory(dir.quarantine)
        try? AtomicFile.fsyncDirectory(Path.parent(path))
        return target
    }
}

/// One state file read on every probe but rarely rewritten (`bridge.json`): looked at with a
/// `stat`, read again only when it says the file changed or had not settled
/// (`FileChangeCheck`: a rewrite within the file system's timestamp granularity, into a reused
/// inode, is still seen), and decoded again only when the bytes differ from the last ones, with
/// `StateFiles.load`'s policy (corrupt or planted: quarantined and journaled, as absent; absent
/// and corrupt files are never cached).
public final class StateFileCache<T: Decodable & Sendable> {
    public let path: String
    let kind: String
    private var check = FileChangeCheck()
    private var value: T?
    private var bytes: [UInt8] = []
    /// How many times the file was decoded (for tests).
    public private(set) var reads = 0

    public init(_ path: String, kind: String) {
        self.path = path
        self.kind = kind
    }

    /// The file's value now (nil when absent or corrupt).
    /// - Parameter now: the wall clock (a test passes its own).
    public func load(_ files: StateFiles, now: Date = Clock.wall()) -> T? {
        if check.isUnchanged(path, now: now), let value { return value }
        let result: StateFile.Read<T> = StateSlot.withContents(of: path) { contents in
            switch contents {
            case .absent: return .absent
            case .unfit(let why): return .corrupt(why)
            case .bytes(let raw):
                if let value, raw.elementsEqual(bytes) { return .ok(value) }
                reads += 1
                bytes = Array(raw)
                return StateFile.decode(raw, kind: kind, as: T.self)
            }
        }
        switch result {
        case .ok(let v): value = v
        case .absent: value = nil
        case .corrupt(let why):
            value = nil
            files.quarantine(path, reason: why)
        }
        if value == nil {
            check.forget()
            bytes = []
        }
        return value
    }
}
