import Foundation
import Glibc
import VigilCore
import VigilSystem

/// The heal journal: an append-only file of JSON lines, one `write` per record on an
/// O_APPEND descriptor, fdatasync per record. Each line ends with a CRC-32 of the rest, so a
/// torn or garbage line is recognised and skipped by readers. Several processes append to it
/// at once (runner, bridge, CLI).
///
/// When a write fails (disk full, read-only), the entry is kept in memory and written before
/// the next one: the caller goes on healing, and the journal catches up when it can.
public final class Journal: @unchecked Sendable {
    public let path: String
    private let source: String
    private let lock = NSLock()
    private var fd: Int32 = -1
    private var pending: [Data] = []

    /// - Parameter source: who writes ("runner", "bridge", "cli"), stored in every entry.
    public init(path: String, source: String) {
        self.path = path
        self.source = source
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Entries waiting to be written because an earlier write failed.
    public var backlog: Int { lock.withLock { pending.count } }

    /// Appends one entry. Returns false when it could not be made durable now (it stays queued
    /// in memory and is retried with the next append or `flush()`).
    @discardableResult
    public func append(_ event: String, _ fields: [String: JSONValue] = [:]) -> Bool {
        let line = Journal.encode(event: event, source: source, fields: fields, boot: Clock.boot(), wall: Clock.wall())
        return lock.withLock {
            pending.append(line)
            return flushLocked()
        }
    }

    /// Retries entries whose write failed earlier.
    @discardableResult
    public func flush() -> Bool { lock.withLock { flushLocked() } }

    private func flushLocked() -> Bool {
        while let line = pending.first {
            do {
                try openIfNeeded()
                // Another writer may have been killed mid-record: start on a line of our own.
                var record = line
                if !Journal.endsWithNewline(fd: fd) { record.insert(0x0A, at: record.startIndex) }
                try AtomicFile.writeAll(fd, record, subject: path)
                try sys("fdatasync", path) { fdatasync(fd) }
                pending.removeFirst()
            } catch {
                // The descriptor may be in a bad state after ENOSPC/EIO: reopen next time. The
                // line may now be partly on disk: readers skip it by its checksum, and it is
                // written again whole.
                if fd >= 0 { close(fd); fd = -1 }
                if pending.count > 10_000 { pending.removeFirst(pending.count - 10_000) }
                return false
            }
        }
        return true
    }

    private func openIfNeeded() throws(SystemError) {
        guard fd < 0 else { return }
        let created = access(path, F_OK) != 0
        let f = try PrivateFile.open(path, O_RDWR | O_APPEND | O_CREAT)
        fd = f
        if created {
            let dir = (path as NSString).deletingLastPathComponent
            try? AtomicFile.fsyncDirectory(dir)
        }
    }

    private static func endsWithNewline(fd: Int32) -> Bool {
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size > 0 else { return true }
        var b: UInt8 = 0
        return pread(fd, &b, 1, st.st_size - 1) == 1 && b == 0x0A
    }

    // MARK: - Format

    static let crcSuffixLength = #","crc":"00000000"}"#.utf8.count

    /// One line: the entry's JSON object (sorted keys) with `"crc"` appended last, covering the
    /// bytes of the object without it.
    static func encode(event: String, source: String, fields: [String: JSONValue], boot: BootInstant, wall: Date) -> Data {
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

    /// Reads entries from `offset` on. An unterminated last line is left for the next read.
    public static func read(path: String, from offset: Int = 0) -> ReadResult {
        // Through `StateSlot` (docs/operator-guide.md, "Bad input"): a FIFO or symlink in the
        // journal's place reads as empty, never as a blocked `open`.
        guard case .file(let fd, let size) = StateSlot.openForReading(path, sizeLimit: nil) else {
            return ReadResult(entries: [], skipped: 0, offset: offset)
        }
        defer { close(fd) }
        var data = Data(capacity: max(0, size - offset))
        var buf = [UInt8](repeating: 0, count: 65536)
        var pos = offset
        while true {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 65536, off_t(pos)) }
            if n < 0 && lastErrno() == EINTR { continue }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
            pos += n
        }
        var entries: [[String: JSONValue]] = []
        var skipped = 0
        var consumed = 0
        var start = data.startIndex
        while let nl = data[start...].firstIndex(of: 0x0A) {
            let line = String(decoding: data[start..<nl], as: UTF8.self)
            if !line.isEmpty {
                if let e = decode(line: Substring(line)) { entries.append(e) } else { skipped += 1 }
            }
            consumed += nl - start + 1
            start = data.index(after: nl)
        }
        return ReadResult(entries: entries, skipped: skipped, offset: offset + consumed)
    }
}
