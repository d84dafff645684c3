import FoundationEssentials
import Synchronization
import VigilCore
import VigilSystem

/// The heal journal: an append-only file of JSON lines, one `write` per record on an
/// O_APPEND descriptor, fdatasync per record. Each line ends with a CRC-32 of the rest, so a
/// torn or garbage line is recognised and skipped by readers. Several processes append to it
/// at once (runner, bridge, CLI).
///
/// Rotation by size (docs/architecture.md, "Journal rotation"): an appender holds an exclusive
/// `flock` on the journal file for each record and checks, under it, that its descriptor is
/// still the file at `path` (same inode); otherwise it reopens. A writer given a `Rotation`
/// (the runner and the bridge) whose record took the file past `maxBytes` renames, still
/// holding the lock, `path.(k-1)` → `path.k` … `path` → `path.1`, fsyncing the directory after
/// each rename; the next appender creates a new `path`. So no record is written to a file after
/// it was renamed away, and none is lost or written twice.
///
/// When a write fails (disk full, read-only), the entry is kept in memory and written before
/// the next one: the caller goes on healing, and the journal catches up when it can.
///
/// Sendable: the writer's state (descriptor, sink flag, entries not yet written) is behind
/// one `Mutex`; the rest is constant.
public final class Journal: Sendable {
    public let path: String
    private let source: String
    public let rotation: Rotation?
    private let writer = Mutex(Writer())

    /// What appends change, only under `writer`'s lock.
    private struct Writer {
        var fd: Int32 = -1
        var isSink = false
        var pending: [Data] = []
        /// The directory the journal was first opened in (device, inode): a journal that is
        /// gone from `path` because its whole directory was moved away is not re-created in
        /// whatever directory now has that name.
        var directory: (device: UInt64, inode: UInt64)?
    }

    /// When the journal is rotated: past `maxBytes`, keeping `keep` old files
    /// (`journal.jsonl.1` the newest … `journal.jsonl.<keep>` the oldest; older ones deleted).
    public struct Rotation: Sendable, Equatable {
        public var maxBytes: Int64
        public var keep: Int
        public init(maxBytes: Int64 = Rotation.defaultMaxBytes, keep: Int = Rotation.defaultKeep) {
            self.maxBytes = maxBytes
            self.keep = min(max(1, keep), Journal.maxKeep)
        }
        public static let defaultMaxBytes: Int64 = 16 << 20
        public static let defaultKeep = 3
    }

    /// The most old files a journal keeps (readers look for `path.1` … `path.<maxKeep>`).
    public static let maxKeep = 20

    /// - Parameters:
    ///   - source: who writes ("runner", "bridge", "cli"), stored in every entry.
    ///   - rotation: when this writer rotates the file; nil: it never does (CLI commands, which
    ///     do not read the tunables, only append; the runner and bridge rotate).
    public init(path: String, source: String, rotation: Rotation? = nil) {
        self.path = path
        self.source = source
        self.rotation = rotation
    }

    deinit { writer.withLock { if $0.fd >= 0 { FileDescriptor(rawValue: $0.fd).close() } } }

    /// Entries waiting to be written because an earlier write failed.
    public var backlog: Int { writer.withLock { $0.pending.count } }

    /// Appends one entry. Returns false when it could not be made durable now (it stays queued
    /// in memory and is retried with the next append or `flush()`).
    @discardableResult
    public func append(_ event: JournalEvent, _ fields: [String: JSONValue] = [:]) -> Bool {
        appendLine(event.rawValue, fields)
    }

    /// Package-only, for the journal's format tests: an entry under a synthetic name that is
    /// not a `JournalEvent`. Nothing in Sources uses it; everything there passes a `JournalEvent`.
    @discardableResult
    package func append(_ name: String, _ fields: [String: JSONValue] = [:]) -> Bool {
        appendLine(name, fields)
    }

    private func appendLine(_ event: String, _ fields: [String: JSONValue]) -> Bool {
        let line = Journal.encode(event: event, source: source, fields: fields, boot: Clock.boot(), wall: Clock.wall())
        return writer.withLock { w in
            w.pending.append(line)
            return flushLocked(&w)
        }
    }

    /// Retries entries whose write failed earlier.
    @discardableResult
    public func flush() -> Bool { writer.withLock { flushLocked(&$0) } }

    private func flushLocked(_ w: inout Writer) -> Bool {
        while let line = w.pending.first {
            do {
                let held = try openCurrentLocked(&w)
                defer { if w.fd >= 0 && held { FileDescriptor(rawValue: w.fd).unlock() } }
                // Another writer may have been killed mid-record: start on a line of our own.
                var record = line
                let before = Journal.fileSize(fd: w.fd)
                if !Journal.endsWithNewline(fd: w.fd, size: before) { record.insert(0x0A, at: record.startIndex) }
                try AtomicFile.writeAll(w.fd, record, subject: path)
                // A sink (`/dev/null`) has nothing to sync (fdatasync fails there with EINVAL).
                if !w.isSink { try FileDescriptor(rawValue: w.fd).sync(dataOnly: true, subject: path) }
                w.pending.removeFirst()
                if let rotation, held, before + Int64(record.count) > rotation.maxBytes {
                    rotateHeld(rotation)
                    // Our descriptor is the renamed file now: the next record opens the new one.
                    FileDescriptor(rawValue: w.fd).close()
                    w.fd = -1
                }
            } catch {
                // The descriptor may be in a bad state after ENOSPC/EIO: reopen next time. The
                // line may now be partly on disk: readers skip it by its checksum, and it is
                // written again whole.
                if w.fd >= 0 { FileDescriptor(rawValue: w.fd).close(); w.fd = -1 }
                if w.pending.count > 10_000 { w.pending.removeFirst(w.pending.count - 10_000) }
                return false
            }
        }
        return true
    }

    /// Opens `path` if needed and takes the lock on it, making sure the descriptor is the file
    /// at `path` now (a rotation may have renamed ours away: then reopen). The lock is
    /// exclusive: records are serialised across processes (each holds it for one write and
    /// fdatasync), so the writer whose record took the file past the limit rotates it in the
    /// same hold, and a rotation never waits behind a stream of other writers.
    ///
    /// The wait for the lock is bounded (`lockWait`): a writer stopped while holding it (SIGSTOP,
    /// a debugger) must not stop the runner's loop. Past the bound the record is written without
    /// the lock (returns false: no rotation then). It cannot interleave (one `write` on
    /// `O_APPEND`); if a rotation is under way it may land at the end of the file just renamed to
    /// `.1`: still read, in file order, never lost.
    private func openCurrentLocked(_ w: inout Writer) throws(SystemError) -> Bool {
        for _ in 0..<100 {
            if w.fd < 0 {
                let created = !FileSystem.exists(path)
                w.fd = try PrivateFile.open(path, [.readWrite, .append, .create])
                if created {
                    let dir = Path.parent(path)
                    try? AtomicFile.fsyncDirectory(dir)
                }
                if w.directory == nil, let d = FileStatus.at(Path.parent(path)) { w.directory = (d.device, d.inode) }
            }
            let mine: FileStatus
            do { mine = try FileDescriptor(rawValue: w.fd).status() } catch { throw SystemError("fstat", errno: error.errno, subject: path) }
            // `/dev/null` (a sink) is never rotated: no lock, no check.
            w.isSink = mine.kind != .regular
            if w.isSink { return false }
            let held = try Journal.lock(w.fd, path: path)
            if let now = FileStatus.at(path), now.inode == mine.inode && now.device == mine.device { return held }
            // The directory itself was moved or removed (a state directory replaced under the
            // pair): go on writing to the file we have, in the directory it moved with; the pair
            // stops at its next anchor check (docs/operator-guide.md, "The state directory removed
            // or replaced"), and nothing is written into the directory that now has the name.
            if let dir = w.directory, FileStatus.at(Path.parent(path)).map({ $0.device != dir.device || $0.inode != dir.inode }) ?? true {
                return held
            }
            if held { FileDescriptor(rawValue: w.fd).unlock() }
            // Renamed away (or removed) since we opened it: a rotation. Open the new file.
            FileDescriptor(rawValue: w.fd).close()
            w.fd = -1
        }
        throw SystemError.tryAgain("open", subject: path)
    }

    /// How long an append waits for another writer's lock before writing without it.
    public static let lockWait = TimeSpan.milliseconds(100)

    /// Takes the exclusive lock, polling for at most `lockWait`; false when it stayed busy.
    private static func lock(_ fd: Int32, path: String) throws(SystemError) -> Bool {
        let deadline = Clock.boot() + lockWait
        while true {
            if try FileDescriptor(rawValue: fd).tryLock(subject: path) { return true }
            if Clock.boot() >= deadline { return false }
            ThisProcess.pause(.milliseconds(0.5))
        }
    }

    /// Rotates, holding the lock on the file at `path`: renames oldest first
    /// (`path.(keep-1)` → `path.keep`, replacing the oldest, … `path` → `path.1`), fsyncing the
    /// directory after each rename, so after a crash or power cut the names are what a prefix of
    /// the renames made: readers see every file in order, at worst with a gap in the numbers.
    private func rotateHeld(_ rotation: Rotation) {
        let dir = Path.parent(path)
        var k = rotation.keep
        while k >= 2 {
            if (try? FileSystem.rename("\(path).\(k - 1)", to: "\(path).\(k)")) != nil { try? AtomicFile.fsyncDirectory(dir) }
            k -= 1
        }
        if (try? FileSystem.rename(path, to: "\(path).1")) != nil { try? AtomicFile.fsyncDirectory(dir) }
    }

    private static func fileSize(fd: Int32) -> Int64 {
        (try? FileDescriptor(rawValue: fd).status()).map { Int64($0.size) } ?? 0
    }

    private static func endsWithNewline(fd: Int32, size: Int64) -> Bool {
        guard size > 0 else { return true }
        return (try? FileDescriptor(rawValue: fd).readAll(limit: 1, from: Int(size - 1))) == [0x0A]
    }

    // MARK: - Format

    static let crcSuffixLength = #","crc":"00000000"}"#.utf8.count

    /// One line: the entry's JSON object (sorted keys) with `"crc"` appended last, covering the
    /// bytes of the object without it.
    public static func encode(event: String, source: String, fields: [String: JSONValue], boot: BootInstant, wall: Date) -> Data {
        var object = fields
        object["ts"] = .string(Clock.iso(wall))
        object["boot"] = .int(boot.nanoseconds)
        object["event"] = .string(event)
        object["source"] = .string(source)
        object.removeValue(forKey: "crc")
        var body = JSONValue.object(object).encoded()
        let crc = CRC32.hex(body)
        body.removeLast() // "}"
        var line = body
        if object.isEmpty { line.append(contentsOf: "\"crc\":\"\(crc)\"}\n".utf8) } else {
            line.append(contentsOf: ",\"crc\":\"\(crc)\"}\n".utf8)
        }
        return line
    }

    /// Parses and verifies one line; nil for a torn or garbage line.
    public static func decode(line: Substring) -> [String: JSONValue]? {
        let bytes = Array(line.utf8)
        guard bytes.count > crcSuffixLength, bytes.last == UInt8(ascii: "}") else { return nil }
        let suffix = bytes[(bytes.count - crcSuffixLength)...]
        guard suffix.starts(with: Array(#","crc":""#.utf8)) else { return nil }
        let crcText = String(decoding: suffix.dropFirst(8).prefix(8), as: UTF8.self)
        var body = Array(bytes[..<(bytes.count - crcSuffixLength)])
        body.append(UInt8(ascii: "}"))
        guard CRC32.hex(body) == crcText,
              case .object(let o)? = JSONValue.parse(Data(bytes)) else { return nil }
        return o
    }

    public struct ReadResult: Sendable {
        public var entries: [[String: JSONValue]]
        /// Lines that failed their checksum (torn by a crash, or not written by Vigil).
        public var skipped: Int
        /// Bytes consumed (for `--follow`).
        public var offset: Int
    }

    /// Reads entries of the file at `path` alone from `offset` on. An unterminated last line is
    /// left for the next read. (`readAll` reads the rotated files too.)
    public static func read(path: String, from offset: Int = 0) -> ReadResult {
        // Through `StateSlot` (docs/operator-guide.md, "Bad input"): a FIFO or symlink in the
        // journal's place reads as empty, never as a blocked `open`.
        guard case .file(let fd, let size) = StateSlot.openForReading(path, sizeLimit: nil) else {
            return ReadResult(entries: [], skipped: 0, offset: offset)
        }
        defer { FileDescriptor(rawValue: fd).close() }
        return read(fd: fd, size: size, from: offset)
    }

    /// `"event":"` followed by one of `names` (each with its closing quote), anywhere in `line`.
    private static func namesEvent(_ line: UnsafeRawBufferPointer, _ names: [[UInt8]]) -> Bool {
        let key = eventKey, n = line.count, k = key.count
        var i = 0
        while i + k < n {
            if line[i] == 0x22 {
                var j = 1
                while j < k && line[i + j] == key[j] { j += 1 }
                if j == k {
                    let at = i + k
                    for name in names where at + name.count <= n {
                        var m = 0
                        while m < name.count && line[at + m] == name[m] { m += 1 }
                        if m == name.count { return true }
                    }
                }
            }
            i += 1
        }
        return false
    }
    private static let eventKey = Array("\"event\":\"".utf8)

    private static func read(fd: Int32, size: Int, from offset: Int, containing needles: [[UInt8]]? = nil) -> ReadResult {
        var data = Data(capacity: max(0, size - offset))
        // To the end of the file, from `offset` (pread: the descriptor's offset is not moved).
        _ = try? FileDescriptor(rawValue: fd).readChunks(from: offset) { data.append(contentsOf: $0); return true }
        var entries: [[String: JSONValue]] = []
        var skipped = 0
        var consumed = 0
        var start = data.startIndex
        while let nl = data[start...].firstIndex(of: 0x0A) {
            // A reader that wants only some events skips, undecoded, the lines that name none.
            if let needles, !data[start..<nl].withUnsafeBytes({ Journal.namesEvent($0, needles) }) {
                consumed += nl - start + 1
                start = data.index(after: nl)
                continue
            }
            let line = String(decoding: data[start..<nl], as: UTF8.self)
            if !line.isEmpty {
                if let e = decode(line: Substring(line)) { entries.append(e) } else { skipped += 1 }
            }
            consumed += nl - start + 1
            start = data.index(after: nl)
        }
        return ReadResult(entries: entries, skipped: skipped, offset: offset + consumed)
    }

    // MARK: - Reading across rotated files

    /// Where a reader of the whole journal is: the file (by inode) and the bytes consumed in
    /// it. The file may have been renamed to `path.1` (or further) since: `readAll(after:)`
    /// finds it by its inode.
    public struct Cursor: Sendable, Equatable {
        public var inode: UInt64
        public var offset: Int
        public init(inode: UInt64, offset: Int) {
            self.inode = inode
            self.offset = offset
        }
    }

    public struct Span: Sendable {
        /// Oldest first, across files.
        public var entries: [[String: JSONValue]]
        public var skipped: Int
        /// Where the next `readAll(after:)` goes on; nil when there was no journal.
        public var cursor: Cursor?
    }

    private struct OpenFile {
        var fd: Int32
        var inode: UInt64
        var size: Int
        var modified: Date
    }

    /// The journal's files, newest first (`path`, `path.1`, …), each opened once. Opened newest
    /// first, so a rotation while opening shows a file twice (skipped by its inode), never
    /// hides one that was there before and after.
    private static func openFiles(_ path: String) -> [OpenFile] {
        var out: [OpenFile] = []
        var seen: Set<UInt64> = []
        for name in [path] + (1...maxKeep).map({ "\(path).\($0)" }) {
            guard case .file(let fd, let size) = StateSlot.openForReading(name, sizeLimit: nil) else { continue }
            guard let st = try? FileDescriptor(rawValue: fd).status(), seen.insert(st.inode).inserted else { FileDescriptor(rawValue: fd).close(); continue }
            let mtime = Date(timeIntervalSince1970: Double(st.modifiedSeconds) + Double(st.modifiedNanoseconds) / 1e9)
            out.append(OpenFile(fd: fd, inode: st.inode, size: size, modified: mtime))
        }
        return out
    }

    /// Reads the journal across its rotated files, oldest first. With `after`, only what came
    /// after that cursor (`--follow`: the file it was in is found by inode wherever it is now);
    /// a cursor whose file is gone (rotated out) reads every file there is. With
    /// `modifiedSince`, rotated files last written before it are not read (`--since`: their
    /// entries are all older).
    ///
    /// With `events`, only lines that contain one of these events' `"event":"NAME"` are decoded
    /// and returned (the metrics' counts: docs/operator-guide.md, "Probes and metrics"); the
    /// others are passed over without their checksum or JSON being looked at (`skipped` counts
    /// only the lines looked at).
    public static func readAll(path: String, after cursor: Cursor? = nil, modifiedSince: Date? = nil, events: [JournalEvent]? = nil) -> Span {
        let needles = events.map { $0.map { Array("\($0.rawValue)\"".utf8) } }
        let files = openFiles(path)
        defer { for f in files { FileDescriptor(rawValue: f.fd).close() } }
        guard let newest = files.first else { return Span(entries: [], skipped: 0, cursor: cursor) }
        var start = files.count - 1
        var startOffset = 0
        if let cursor, let k = files.firstIndex(where: { $0.inode == cursor.inode }) {
            start = k
            startOffset = cursor.offset
        }
        var entries: [[String: JSONValue]] = []
        var skipped = 0
        var end = Cursor(inode: newest.inode, offset: 0)
        for k in stride(from: start, through: 0, by: -1) {
            let f = files[k]
            if k > 0, let since = modifiedSince, f.modified < since { continue }
            let r = read(fd: f.fd, size: f.size, from: k == start ? startOffset : 0, containing: needles)
            entries += r.entries
            skipped += r.skipped
            if k == 0 { end.offset = r.offset }
        }
        return Span(entries: entries, skipped: skipped, cursor: end)
    }

    /// The last `count` entries, reading the newest file first and older ones only as needed
    /// (chat's `/journal N`).
    public static func readLast(path: String, count: Int) -> [[String: JSONValue]] {
        let files = openFiles(path)
        defer { for f in files { FileDescriptor(rawValue: f.fd).close() } }
        var out: [[String: JSONValue]] = []
        for f in files where out.count < count {
            out = read(fd: f.fd, size: f.size, from: 0).entries + out
        }
        return Array(out.suffix(count))
    }
}
