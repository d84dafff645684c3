import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// A mission's output with a cap (docs/missions.md, "Output cap"). The shim reads the
/// mission's stdout and stderr from a pipe and appends them to `output.log` (its fd 1, opened
/// O_APPEND by the runner). When `output.log` would grow past half the cap, it is copied to
/// `output.log.1` (temp file, fsync, rename, fsync of the directory: the older part survives
/// any crash) and then truncated; the copy starts with a cut line when an older
/// `output.log.1` was dropped by it. So the two files hold at most the cap (plus one line) and
/// always the newest bytes; a crash between the copy and the truncate leaves the same bytes in
/// both files, never a loss.
struct MissionOutput {
    static let cutPrefix = "--- vigil: output over its cap of "

    let fd: Int32
    let paths: MissionPaths
    let cap: Int64
    private(set) var size: Int64
    /// Bytes dropped so far (all attempts), as the newest cut line says.
    private(set) var dropped: Int64

    /// - Parameter fd: `output.log`, open for appending.
    init(fd: Int32, paths: MissionPaths, cap: Int64) {
        self.fd = fd
        self.paths = paths
        self.cap = max(cap, MissionSettings.minimumOutputCap)
        size = (try? FileDescriptor(rawValue: fd).status()).map { Int64($0.size) } ?? 0
        dropped = MissionOutput.cutCount(paths.previousOutput) ?? 0
    }

    /// The line at the top of `output.log.1` once bytes were dropped.
    static func cutLine(dropped: Int64, cap: Int64) -> String {
        "\(cutPrefix)\(ByteSize.format(UInt64(cap))): the \(dropped) bytes before this line were cut ---\n"
    }

    /// The byte count of the cut line at the top of `path`, if it starts with one.
    static func cutCount(_ path: String) -> Int64? {
        guard let head = firstLine(path), head.hasPrefix(cutPrefix), let r = head.firstRange(of: ": the ") else { return nil }
        return Int64(head[r.upperBound...].prefix { $0.isNumber })
    }

    /// Length in bytes of the cut line at the top of `path` (0 when there is none).
    static func cutLineLength(_ path: String) -> Int {
        guard let head = firstLine(path), head.hasPrefix(cutPrefix) else { return 0 }
        return head.utf8.count + 1
    }

    private static func firstLine(_ path: String) -> String? {
        guard let fd = try? FileDescriptor.open(path, [.readOnly, .nonBlocking, .noFollow]) else { return nil }
        var buf = [UInt8](repeating: 0, count: 256)
        guard let n = fd.closeAfter({ try? buf.withUnsafeMutableBytes { (b) throws(SystemError) in try fd.read(into: b, at: 0) } }),
              n > 0, let end = buf[0..<n].firstIndex(of: 10) else { return nil }
        return String(decoding: buf[0..<end], as: UTF8.self)
    }

    /// Appends `bytes`, first moving `output.log` aside when they would take it past half the cap.
    mutating func write(_ bytes: Data) {
        guard !bytes.isEmpty else { return }
        if size > 0 && size + Int64(bytes.count) > cap / 2 { rotate() }
        if (try? AtomicFile.writeAll(fd, bytes, subject: "output")) != nil { size += Int64(bytes.count) }
    }

    /// A line of the shim's own.
    mutating func note(_ text: String) { write(Data(text.utf8)) }

    private mutating func rotate() {
        let older = fileSize(paths.previousOutput)
        let willDrop = older > 0 ? older - Int64(MissionOutput.cutLineLength(paths.previousOutput)) : 0
        let total = dropped + max(0, willDrop)
        let prefix = total > 0 ? Data(MissionOutput.cutLine(dropped: total, cap: cap).utf8) : Data()
        do {
            try AtomicFile.copy(from: paths.output, to: paths.previousOutput, mode: 0o600, prefix: prefix)
            dropped = total
            try? FileDescriptor(rawValue: fd).truncate(to: 0)
            size = 0
        } catch {
            // No room for the copy: keep the cap anyway, dropping what output.log held.
            dropped = total + size
            try? FileDescriptor(rawValue: fd).truncate(to: 0)
            size = 0
            note("\(MissionOutput.cutPrefix)\(ByteSize.format(UInt64(cap))): \(dropped) earlier bytes were cut (\(error)) ---\n")
        }
    }

    private func fileSize(_ path: String) -> Int64 {
        FileStatus.at(path).map { Int64($0.size) } ?? 0
    }

    // MARK: - Showing output to a person

    /// `bytes` safe for a terminal: valid UTF-8 text, newline and tab pass; every other control
    /// byte (ESC, CR, BEL, …, DEL, the C1 controls U+0080–U+009F) and every byte that is not
    /// valid UTF-8 is shown as `\xNN`. `carry` holds an incomplete UTF-8 sequence at the end
    /// for the next call (pass `final: true` with the last piece).
    static func escapeForTerminal(_ bytes: [UInt8], carry: inout [UInt8], final: Bool = false) -> [UInt8] {
        let input = carry + bytes
        carry = []
        var out: [UInt8] = []
        out.reserveCapacity(input.count)
        func hex(_ b: UInt8) {
            let digits = Array("0123456789abcdef".utf8)
            out += [UInt8(ascii: "\\"), UInt8(ascii: "x"), digits[Int(b >> 4)], digits[Int(b & 15)]]
        }
        var i = 0
        while i < input.count {
            let b = input[i]
            if b < 0x80 {
                if b == 10 || b == 9 || (b >= 0x20 && b != 0x7f) { out.append(b) } else { hex(b) }
                i += 1
                continue
            }
            let length = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 ? (b <= 0xEF ? 3 : 0) : b >= 0xC2 ? 2 : 0
            if length == 0 { hex(b); i += 1; continue }
            if i + length > input.count {
                let rest = Array(input[i...])
                if !final && rest.dropFirst().allSatisfy({ $0 & 0xC0 == 0x80 }) { carry = rest; return out }
                hex(b); i += 1; continue
            }
            let seq = Array(input[i..<(i + length)])
            if seq.dropFirst().allSatisfy({ $0 & 0xC0 == 0x80 }), String(validating: seq, as: UTF8.self) != nil,
               !(length == 2 && b == 0xC2 && seq[1] < 0xA0) {
                out += seq
                i += length
            } else {
                hex(b)
                i += 1
            }
        }
        return out
    }
}
