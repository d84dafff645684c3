import Foundation
import Testing
import VigilApp
import VigilCore
import VigilStore
import VigilSystem

/// `bridge.beat`'s line (docs/architecture.md, "File formats"), parsed as bytes on every probe.
@Suite struct HeartbeatFormatTests {
    func decode(_ text: String) -> StateFile.Read<Heartbeat> {
        Data(text.utf8).withUnsafeBytes { Heartbeat.decode($0) }
    }

    func line(_ body: String) -> String { "\(body) \(CRC32.hex(Array(body.utf8)))\n" }

    @Test func roundTrip() {
        let hb = Heartbeat(identity: ProcessIdentity(pid: 4242, startTicks: 987_654), beat: BootInstant(nanoseconds: 12_345_678_901), seq: 77)
        let data = hb.encoded()
        guard case .ok(let back) = data.withUnsafeBytes({ Heartbeat.decode($0) }) else { Issue.record("not decoded"); return }
        #expect(back == hb)
    }

    @Test(arguments: [
        ("", "empty file"),
        ("vigil-beat 1 1 2 3 4 00000000", "torn: no end of line"),
        ("vigil-beat 1 1 2 3 4 00000000\n", "checksum mismatch"),
        ("vigil-beat 1 1 2 3 4 zz\n", "checksum mismatch"),
        ("nospace\n", "not a heartbeat"),
    ])
    func corrupt(text: String, reason: String) {
        guard case .corrupt(let why) = decode(text) else { Issue.record("accepted \(text.debugDescription)"); return }
        #expect(why == reason)
    }

    @Test(arguments: ["vigil-beat 2 1 2 3 4", "vigil-beet 1 1 2 3 4", "vigil-beat 1 1 2 3", "vigil-beat 1 1 2 3 4 5",
                      "vigil-beat 1 x 2 3 4", "vigil-beat 1 1 2 3 -4", "vigil-beat 1 99999999999 2 3 4", "vigil-beat 1 1 2 3 4.0"])
    func wellSummedButNotAHeartbeat(body: String) {
        guard case .corrupt(let why) = decode(line(body)) else { Issue.record("accepted \(body)"); return }
        #expect(why == "not a heartbeat")
    }

    @Test func spacesAsTheLineWasSplitBefore() {
        // Runs of spaces separate fields, as `split(separator: " ")` did.
        guard case .ok(let hb) = decode(line("vigil-beat  1 10 20  30 40")) else { Issue.record("refused"); return }
        #expect(hb.identity == ProcessIdentity(pid: 10, startTicks: 20) && hb.beat == BootInstant(nanoseconds: 30) && hb.seq == 40)
    }
}
