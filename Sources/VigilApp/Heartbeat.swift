import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// A process's heartbeat (`bridge.beat`, `runner.beat`): one short line, replaced atomically
/// every beat and read by the probe on every tick, so it is parsed as bytes, not JSON:
///
///     vigil-beat 1 PID START_TICKS BOOT_NS SEQ CRC32
///
/// The CRC-32 covers everything before it. Identity, version and start live in the JSON PID
/// file (`bridge.json`), which changes only at start and re-exec.
package struct Heartbeat: Equatable, Sendable {
    package var identity: ProcessIdentity
    package var beat: BootInstant
    package var seq: UInt64

    package init(identity: ProcessIdentity, beat: BootInstant, seq: UInt64) {
        self.identity = identity
        self.beat = beat
        self.seq = seq
    }

    static let magic = "vigil-beat 1"

    package func encoded() -> Data {
        let body = "\(Heartbeat.magic) \(identity.pid) \(identity.startTicks) \(beat.nanoseconds) \(seq)"
        return Data("\(body) \(CRC32.hex(Array(body.utf8)))\n".utf8)
    }

    /// Parsed as bytes (this runs on every probe): the fields are split at spaces without
    /// making a `String` of the line, each number read from its few bytes.
    package static func decode(_ raw: UnsafeRawBufferPointer) -> StateFile.Read<Heartbeat> {
        guard !raw.isEmpty else { return .corrupt("empty file") }
        guard let nl = raw.firstIndex(of: 0x0A) else { return .corrupt("torn: no end of line") }
        guard let lastSpace = raw[0..<nl].lastIndex(of: 0x20) else { return .corrupt("not a heartbeat") }
        let body = UnsafeRawBufferPointer(rebasing: raw[0..<lastSpace])
        guard let want = UInt32(ascii: raw[(lastSpace + 1)..<nl], radix: 16), CRC32.checksum(body) == want else {
            return .corrupt("checksum mismatch")
        }
        let fields = body.split(separator: 0x20)
        guard fields.count == 6, fields[0].elementsEqual("vigil-beat".utf8), fields[1].elementsEqual("1".utf8),
              let pid = Int32(ascii: fields[2]), let start = UInt64(ascii: fields[3]), let boot = Int64(ascii: fields[4]),
              let seq = UInt64(ascii: fields[5]) else {
            return .corrupt("not a heartbeat")
        }
        return .ok(Heartbeat(identity: ProcessIdentity(pid: pid, startTicks: start), beat: BootInstant(nanoseconds: boot), seq: seq))
    }

    /// One `read` into a stack buffer, through `StateSlot` (a FIFO or a huge file there is
    /// `.corrupt`, never a blocked `open`; docs/operator-guide.md, "Bad input").
    package static func read(_ path: String) -> StateFile.Read<Heartbeat> {
        StateSlot.withContents(of: path, sizeLimit: 256) { contents in
            switch contents {
            case .absent: return .absent
            case .unfit(let why): return .corrupt(why)
            case .bytes(let raw): return decode(raw)
            }
        }
    }
}

extension FixedWidthInteger {
    /// The number written in `bytes` (ASCII), as `init?(_:radix:)` reads it from text.
    init?(ascii bytes: Slice<UnsafeRawBufferPointer>, radix: Int = 10) {
        self.init(String(decoding: UnsafeRawBufferPointer(rebasing: bytes), as: UTF8.self), radix: radix)
    }
}

extension StateFiles {
    /// The PID file with the latest heartbeat folded in (when the heartbeat is the same
    /// process's). A corrupt heartbeat is quarantined like any state file.
    func loadLiveRecord(_ role: StateDirectory.Role, quiet: Bool = false) -> ProcessRecord? {
        guard var record = quiet ? loadRecordQuietly(role) : loadRecord(role) else { return nil }
        record.foldIn(heartbeat(role, quiet: quiet))
        return record
    }

    /// The PID file with its heartbeat folded in, read-only (nothing is quarantined), and the
    /// reason when the PID file is corrupt: for `vigil status` and `vigil doctor`, which must
    /// see the heartbeat age from `*.beat`, not the start-time beat in `*.json`.
    static func readLiveRecordQuietly(_ dir: StateDirectory, _ role: StateDirectory.Role) -> (ProcessRecord?, String?) {
        var (record, problem) = StatusCommand.readQuietly(dir.pidFile(role), kind: ProcessRecord.kind, ProcessRecord.self)
        record?.foldIn(StateFiles(dir: dir, journal: Journal(path: "/dev/null", source: "status")).heartbeat(role, quiet: true))
        return (record, problem)
    }

    func heartbeat(_ role: StateDirectory.Role, quiet: Bool) -> Heartbeat? {
        heartbeat(at: dir.beatFile(role), quiet: quiet)
    }

    /// The heartbeat at `path` (a role's `beatFile`, its path made once by the caller).
    func heartbeat(at path: String, quiet: Bool) -> Heartbeat? {
        switch Heartbeat.read(path) {
        case .ok(let b): return b
        case .absent: return nil
        case .corrupt(let why):
            if !quiet { quarantine(path, reason: why) }
            return nil
        }
    }
}

extension ProcessRecord {
    mutating func foldIn(_ hb: Heartbeat?) {
        guard let hb, hb.identity == identity, hb.beat > beat else { return }
        beat = hb.beat
        seq = hb.seq
    }
}

/// The PID file, re-read only when the file changed (`StateFileCache`): the probe's hot path
/// reads it on every probe, but it changes only at a (re)start.
typealias RecordCache = StateFileCache<ProcessRecord>

extension StateFileCache<ProcessRecord> {
    convenience init(_ dir: StateDirectory, _ role: StateDirectory.Role) {
        self.init(dir.pidFile(role), kind: ProcessRecord.kind)
    }
}
