import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The embedded default adapter: delivered messages are appended to `<state>/chat.log`, one
/// line each (`TIME [#ID] TEXT`, newlines escaped as `\n`), with one `write` on an O_APPEND
/// descriptor and fdatasync. The foreground runner shows new lines with `ConsoleFollower`.
/// Commands come in through `vigil say` (the inbox), so this adapter only sends.
///
/// A retry (a deliverer died, or stopped, after writing and before marking delivered) first
/// looks for the message's `[#ID]` near the end of the log, so it is not written twice. Bridge
/// and runner both deliver (docs/chat.md, "Delivery"): the look and the write happen under an
/// flock on `chat/console.lock`, so a deliverer that was stopped mid-delivery and resumes after
/// another took its row over still sees the line and does not write it again.
final class ConsoleAdapter: ChatAdapter, Sendable {
    let name = "console"
    let lease = TimeSpan.seconds(5)
    let path: String
    let lockPath: String
    /// The log is rotated to `chat.log.1` past this size.
    let rotateBytes: Int

    init(stateDir: StateDirectory, rotateBytes: Int = 8 << 20) {
        try? stateDir.makeDirectory(stateDir.chatDirectory)
        path = stateDir.chatLog
        lockPath = stateDir.chatConsoleLock
        self.rotateBytes = rotateBytes
    }

    func cancel() {}

    func deliver(_ message: OutboxMessage) -> DeliveryResult {
        let tag = "[#\(message.id)]"
        let entry = "\(tag) \(ConsoleAdapter.escape(message.body))\n"
        let line = "\(Clock.iso(Clock.wall())) \(entry)"
        do {
            // Up to 1 s: the other deliverer holds it only for one append.
            guard let lock = try FileLock.lock(lockPath, attempts: 50) else {
                return .retry("chat.log is being written by another process", after: nil)
            }
            defer { lock.release() }
            // A retry after a crash or a take-over — or the first claimer resuming after being
            // stopped while another took its row over: delivered already if the whole line is
            // there (a torn line from a failed write does not count).
            if ConsoleAdapter.tailContains(path, entry) {
                return .delivered(remoteID: tag)
            }
            rotateIfNeeded()
            let created = !FileSystem.exists(path)
            let fd = FileDescriptor(rawValue: try PrivateFile.open(path, [.writeOnly, .append, .create]))
            defer { fd.close() }
            let before = (try? fd.status())?.size ?? -1
            do {
                try fd.writeAll(Data(line.utf8), subject: path)
            } catch {
                // Disk full mid-line: cut the partial line off (the bridge is chat.log's only
                // writer), so the retry starts on a clean line.
                if before >= 0 { try? fd.truncate(to: before, subject: path) }
                throw error
            }
            try fd.sync(dataOnly: true, subject: path)
            if created { try? AtomicFile.fsyncDirectory(Path.parent(path)) }
            return .delivered(remoteID: tag)
        } catch {
            return .retry("cannot append to chat.log: \(error)", after: nil)
        }
    }

    private func rotateIfNeeded() {
        guard let st = FileStatus.at(path), st.size > rotateBytes else { return }
        if (try? FileSystem.rename(path, to: path + ".1")) != nil {
            try? AtomicFile.fsyncDirectory(Path.parent(path))
        }
    }

    /// One line per message: backslash, newline and tab escaped; other control characters were
    /// removed when the message was queued.
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": continue
            default: out.append(c)
            }
        }
        return out
    }

    static func unescape(_ s: Substring) -> String {
        var out = ""
        var escaped = false
        for c in s {
            if escaped {
                switch c {
                case "n": out += "\n"
                case "t": out += "\t"
                default: out.append(c)
                }
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// Whether the last 256 KiB of the file contain `" " + entry` (a byte search).
    static func tailContains(_ path: String, _ entry: String) -> Bool {
        // `StateSlot`: a FIFO in chat.log's place is not waited on (docs/operator-guide.md, "Bad input").
        guard case .file(let fd, let size) = StateSlot.openForReading(path, sizeLimit: nil) else { return false }
        let file = FileDescriptor(rawValue: fd)
        defer { file.close() }
        let start = max(0, size - (256 << 10))
        guard size > start, let buf = try? file.readAll(limit: size - start, from: start), !buf.isEmpty else { return false }
        let needle = Array((" " + entry).utf8)
        return buf.firstRange(of: needle) != nil
    }
}

/// Shows new chat.log lines: the foreground runner polls it (every tick) and prints what it
/// returns; follows rotation. Without `persist` it starts at the end of the log (old messages are
/// not replayed). With `persist` it keeps its position in `chat/echo.json` (inode + offset), so
/// lines written while the runner was down are printed when it is back; the position is saved
/// after the lines are returned (a crash in between prints them again, never skips them).
public final class ConsoleFollower {
    public let path: String
    private var offset: Int
    private var inode: UInt = 0
    private var partial = Data()
    private let positionFile: String?
    private var savedOffset: Int?

    struct Position: Codable, Sendable {
        var inode: UInt
        var offset: Int
    }

    static let positionKind = "console-echo"

    /// At most this much of a backlog is replayed after a restart (the rest is skipped, saying so).
    static let replayLimit = 256 << 10

    /// - Parameters:
    ///   - fromStart: replay the whole log instead of starting at its end.
    ///   - persist: resume from (and keep) the position in `chat/echo.json`.
    public init(stateDir: StateDirectory, fromStart: Bool = false, persist: Bool = false) {
        path = stateDir.chatLog
        positionFile = persist ? stateDir.consoleEchoPosition : nil
        guard let st = FileStatus.at(path) else {
            // No log yet: it will be shown from its start (inode 0 says so in the position).
            offset = 0
            if persist { commit() }
            return
        }
        inode = UInt(st.inode)
        let size = st.size
        offset = fromStart ? 0 : size
        var saved: Position?
        if let file = positionFile, case .ok(let p) = StateFile.read(file, kind: ConsoleFollower.positionKind, as: Position.self) {
            saved = p.inode == 0 ? Position(inode: inode, offset: 0) : p
        }
        if let p = saved, p.inode == inode, p.offset <= size {
            offset = max(p.offset, size - ConsoleFollower.replayLimit)
            skipped = offset - p.offset
            savedOffset = p.offset
            dropFirstLine = skipped > 0 // the cut is mid-line
        }
        if persist && savedOffset == nil { commit() } // the first start: from here on nothing is missed
    }

    private var dropFirstLine = false

    /// Bytes of backlog skipped at start (more than `replayLimit` was written while down).
    public private(set) var skipped = 0

    /// New messages since the last call, formatted for a terminal: `HH:MM:SS text`, continuation
    /// lines indented. Safe to print: control characters were removed when queued and are
    /// removed again here.
    public func poll() -> [String] {
        guard let st = FileStatus.at(path) else { return [] }
        if UInt(st.inode) != inode || st.size < offset {
            inode = UInt(st.inode)
            offset = 0
            partial.removeAll()
        }
        guard st.size > offset else { return [] }
        guard case .file(let raw, _) = StateSlot.openForReading(path, sizeLimit: nil) else { return [] }
        let fd = FileDescriptor(rawValue: raw)
        defer { fd.close() }
        let want = min(st.size - offset, 4 << 20)
        guard let buf = try? fd.readAll(limit: want, from: offset), !buf.isEmpty else { return [] }
        offset += buf.count
        partial.append(contentsOf: buf)
        var lines: [String] = []
        while let nl = partial.firstIndex(of: 0x0A) {
            let raw = String(decoding: partial[partial.startIndex..<nl], as: UTF8.self)
            partial.removeSubrange(partial.startIndex...nl)
            if dropFirstLine {
                dropFirstLine = false
                continue
            }
            if let shown = ConsoleFollower.format(raw) { lines.append(shown) }
        }
        return lines
    }

    /// Saves the position of the last whole line returned (call after printing what `poll`
    /// returned). Writes only when it moved.
    public func commit() {
        guard let file = positionFile else { return }
        let whole = offset - partial.count
        guard whole != savedOffset else { return }
        if (try? StateFile.write(Position(inode: inode, offset: whole), kind: ConsoleFollower.positionKind, to: file)) != nil {
            savedOffset = whole
        }
    }

    static func format(_ line: String) -> String? {
        let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        let time = parts[0].count >= 19 ? String(parts[0].dropFirst(11).prefix(8)) : String(parts[0])
        let text = ChatText.clean(ConsoleAdapter.unescape(parts[2]), maxLength: 100_000)
        return "[chat \(time)] " + text.replacing("\n", with: "\n    ")
    }
}
