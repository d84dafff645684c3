import Testing
import VigilCore
import VigilSystem

/// The datagram format and the environment of systemd's notification protocol
/// (docs/operator-guide.md, "Run under systemd"); the exchange itself is in
/// VigilIntegrationTests' SystemdNotifyTests.
struct SystemdNotifyFormatTests {
    @Test func messagesAreKeyValueLinesAndParseBack() {
        let text = SystemdNotify.message([("READY", "1"), ("STATUS", "bridge healthy; tier 0\nsecond line"), ("WATCHDOG", "1")])
        #expect(text == "READY=1\nSTATUS=bridge healthy; tier 0 second line\nWATCHDOG=1")
        let back = SystemdNotify.parse(Array(text.utf8))
        #expect(back.map(\.0) == ["READY", "STATUS", "WATCHDOG"])
        #expect(back[1].1 == "bridge healthy; tier 0 second line")
        // A value may hold '='; a line without one is skipped.
        let odd = SystemdNotify.parse(Array("STATUS=a=b\nnonsense\n\nERRNO=5".utf8))
        #expect(odd.map(\.0) == ["STATUS", "ERRNO"] && odd[0].1 == "a=b")
    }

    @Test func addresses() {
        #expect(SystemdNotify.Address("/run/systemd/notify") == .path("/run/systemd/notify"))
        #expect(SystemdNotify.Address("@vigil/notify") == .abstract("vigil/notify"))
        #expect(SystemdNotify.Address("@vigil")?.description == "@vigil")
        for bad in ["", "@", "/", "relative/sock", "x", "/" + String(repeating: "a", count: 107)] {
            #expect(SystemdNotify.Address(bad) == nil, "\(bad)")
        }
        #expect(SystemdNotify.Address("/" + String(repeating: "a", count: 106)) != nil)
    }

    @Test func watchdogIntervalHonoursWatchdogPid() {
        #expect(SystemdNotify.watchdogInterval(usec: "30000000", pid: nil, ourPID: 42) == .seconds(30))
        #expect(SystemdNotify.watchdogInterval(usec: "30000000", pid: "42", ourPID: 42) == .seconds(30))
        #expect(SystemdNotify.watchdogInterval(usec: "30000000", pid: "43", ourPID: 42) == nil)
        #expect(SystemdNotify.watchdogInterval(usec: "30000000", pid: "x", ourPID: 42) == nil)
        for bad in [nil, "", "0", "-5", "1.5", "abc"] as [String?] {
            #expect(SystemdNotify.watchdogInterval(usec: bad, pid: nil, ourPID: 42) == nil, "\(bad ?? "nil")")
        }
    }

    @Test func sendToNobodyIsAnErrorNotACrash() throws {
        let n = try SystemdNotify(address: .path("/nonexistent-dir-\(ThisProcess.pid)/notify"))
        defer { n.close() }
        #expect(throws: SystemError.self) { try n.send("READY=1") }
        let a = try SystemdNotify(address: .abstract("vigil-nobody-\(ThisProcess.pid)-\(UInt32.random(in: 0...UInt32.max))"))
        defer { a.close() }
        #expect(throws: SystemError.self) { try a.send("WATCHDOG=1") }
    }
}
