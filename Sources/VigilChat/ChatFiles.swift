import Foundation
import Glibc
import VigilCore
import VigilStore
import VigilSystem

/// Wakes the bridge's chat workers: "something was queued".
public enum ChatKick {
    /// Never blocks (`StateFiles.touch`: a FIFO or symlink there is quarantined).
    public static func poke(_ dir: StateDirectory, journal: Journal? = nil) {
        let files = StateFiles(dir: dir, journal: journal ?? Journal(path: dir.journal, source: "cli"))
        if files.touch(dir.chatKick) == .failed(ENOENT) {
            try? dir.makeDirectory(dir.chatDirectory)
            files.touch(dir.chatKick)
        }
    }
}

/// The notification spool: one line per message, `CRC32 JSON`, appended with one `write` and
/// fdatasync under an flock; drained into the outbox (idempotent by key) and truncated.
enum NotificationSpool {
    struct Item: Equatable {
        var key: String
        var adapter: String
        var body: String
    }

    static func encode(_ item: Item) -> Data {
        let json = JSONValue.object(["key": .string(item.key), "adapter": .string(item.adapter), "body": .string(item.body)]).encoded()
        var line = Data((CRC32.hex(json) + " ").utf8)
        line.append(json)
        line.append(0x0A)
        return line
    }

    static func decode(_ data: Data) -> [Item] {
        var out: [Item] = []
        for lineBytes in data.split(separator: 0x0A) {
            guard lineBytes.count > 10, lineBytes[lineBytes.startIndex + 8] == 0x20 else { continue }
            let crc = String(decoding: lineBytes.prefix(8), as: UTF8.self)
            let json = Data(lineBytes.dropFirst(9))
            guard CRC32.hex(json) == crc, let v = JSONValue.parse(json),
                  let k = v["key"]?.stringValue, let a = v["adapter"]?.stringValue, let b = v["body"]?.stringValue else { continue }
            out.append(Item(key: k, adapter: a, body: b))
        }
        return out
    }

    /// Appends items durably. Throws when they could not be made durable.
    static func append(_ items: [Item], dir: StateDirectory) throws {
        guard !items.isEmpty else { return }
        try dir.makeDirectory(dir.chatDirectory)
        guard let lock = try FileLock.lock(dir.chatSpoolLock, attempts: 10) else {
            throw SystemError("flock", errno: EWOULDBLOCK, subject: dir.chatSpoolLock)
        }
        defer { lock.release() }
        let created = access(dir.chatSpool, F_OK) != 0
        let fd = try PrivateFile.open(dir.chatSpool, O_WRONLY | O_APPEND | O_CREAT)
        defer { close(fd) }
        var data = Data()
        for item in items { data.append(encode(item)) }
        try AtomicFile.writeAll(fd, data, subject: dir.chatSpool)
        try sys("fdatasync", dir.chatSpool) { fdatasync(fd) }
        if created { try AtomicFile.fsyncDirectory(dir.chatDirectory) }
    }

    /// Whether the spool holds anything (one stat).
    static func isEmpty(_ dir: StateDirectory) -> Bool {
        var st = stat()
        return stat(dir.chatSpool, &st) != 0 || st.st_size == 0
    }

    /// Moves everything in the spool into the outbox, then empties the spool. Returns how many
    /// were new in the outbox. Leaves the spool alone when the outbox cannot be written.
    @discardableResult
    static func drain(into outbox: Outbox, dir: StateDirectory) throws -> Int {
        guard !isEmpty(dir) else { return 0 }
        guard let lock = try FileLock.lock(dir.chatSpoolLock, attempts: 5) else { return 0 }
        defer { lock.release() }
        guard let fd = try? PrivateFile.open(dir.chatSpool, O_RDWR) else { return 0 }
        defer { close(fd) }
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
            if n < 0 && lastErrno() == EINTR { continue }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        let items = decode(data)
        let inserted = try outbox.enqueue(items.map { ($0.key, $0.adapter, $0.body) })
        try sys("ftruncate", dir.chatSpool) { ftruncate(fd, 0) }
        try sys("fsync", dir.chatSpool) { fsync(fd) }
        return inserted
    }
}
