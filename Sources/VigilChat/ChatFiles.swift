import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// Wakes the bridge's chat workers: "something was queued".
public enum ChatKick {
    /// Never blocks (`StateFiles.touch`: a FIFO or symlink there is quarantined).
    public static func poke(_ dir: StateDirectory, journal: Journal? = nil) {
        let files = StateFiles(dir: dir, journal: journal ?? Journal(path: dir.journal, source: "cli"))
        if files.touch(dir.chatKick).isNoEntry {
            try? dir.makeDirectory(dir.chatDirectory)
            files.touch(dir.chatKick)
        }
    }
}

/// The notification spool: one line per message, `CRC32 JSON`, appended with one `write` and
/// fdatasync under an flock; drained into the outbox (idempotent by key) and truncated.
enum NotificationSpool {
    typealias Item = OutboxItem

    /// One line. `html`, `priority` and `meta` are written only when they say something, so a
    /// line of an older Vigil (key, adapter, body) reads as a plain notice.
    static func encode(_ item: Item) -> Data {
        var fields: [String: JSONValue] = ["key": .string(item.key), "adapter": .string(item.adapter), "body": .string(item.body)]
        if let html = item.html { fields["html"] = .string(html) }
        if item.priority != .notice { fields["priority"] = .int(Int64(item.priority.rawValue)) }
        if let meta = item.meta.columnText { fields["meta"] = .string(meta) }
        let json = JSONValue.object(fields).encoded()
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
            out.append(Item(key: k, adapter: a, body: b, html: v["html"]?.stringValue,
                            priority: v["priority"]?.intValue.flatMap { OutboxPriority(rawValue: Int($0)) } ?? .notice,
                            meta: OutboxMeta.parse(v["meta"]?.stringValue)))
        }
        return out
    }

    /// Appends items durably. Throws when they could not be made durable.
    static func append(_ items: [Item], dir: StateDirectory) throws {
        guard !items.isEmpty else { return }
        try dir.makeDirectory(dir.chatDirectory)
        guard let lock = try FileLock.lock(dir.chatSpoolLock, attempts: 10) else {
            throw SystemError.tryAgain("flock", subject: dir.chatSpoolLock)
        }
        defer { lock.release() }
        let created = !FileSystem.exists(dir.chatSpool)
        let fd = FileDescriptor(rawValue: try PrivateFile.open(dir.chatSpool, [.writeOnly, .append, .create]))
        defer { fd.close() }
        var data = Data()
        for item in items { data.append(encode(item)) }
        try fd.writeAll(data, subject: dir.chatSpool)
        try fd.sync(dataOnly: true, subject: dir.chatSpool)
        if created { try AtomicFile.fsyncDirectory(dir.chatDirectory) }
    }

    /// Whether the spool holds anything (one stat).
    static func isEmpty(_ dir: StateDirectory) -> Bool {
        (FileStatus.at(dir.chatSpool)?.size ?? 0) == 0
    }

    /// Moves everything in the spool into the outbox, then empties the spool. Returns how many
    /// were new in the outbox. Leaves the spool alone when the outbox cannot be written.
    @discardableResult
    static func drain(into outbox: Outbox, dir: StateDirectory) throws -> Int {
        guard !isEmpty(dir) else { return 0 }
        guard let lock = try FileLock.lock(dir.chatSpoolLock, attempts: 5) else { return 0 }
        defer { lock.release() }
        guard let raw = try? PrivateFile.open(dir.chatSpool, .readWrite) else { return 0 }
        let fd = FileDescriptor(rawValue: raw)
        defer { fd.close() }
        var data = Data()
        // What could be read (an error ends the read like the end of the file).
        _ = try? fd.readChunks { data.append(contentsOf: $0); return true }
        let items = decode(data)
        let inserted = try outbox.enqueue(items)
        try fd.truncate(to: 0, subject: dir.chatSpool)
        try fd.sync(subject: dir.chatSpool)
        return inserted
    }
}
