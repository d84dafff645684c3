import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// The service manager's end of the notification protocol, for tests: a real `AF_UNIX`
/// `SOCK_DGRAM` socket bound to a path or an abstract name, collecting every datagram with the
/// boot-clock time it was read.
final class NotifyListener {
    let fd: Int32
    /// What `NOTIFY_SOCKET` is set to for the runner.
    let address: String
    private(set) var messages: [(at: BootInstant, fields: [(String, String)])] = []

    /// Holds the socket file (not the state directory: the runner moves a socket found there aside).
    private let home: TempDir

    /// `abstract: true` binds `@vigil-test-…`; otherwise a socket file in a fresh directory.
    init(abstract: Bool) throws {
        home = try TempDir("vigil-notify")
        let directory = home.path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        let name = abstract ? "vigil-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" : directory + "/notify.sock"
        let bytes = abstract ? [0] + Array(name.utf8) : Array(name.utf8) + [0]
        address = abstract ? "@" + name : name
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard r == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SystemError("bind", errno: e, subject: address)
        }
    }

    deinit { Glibc.close(fd) }

    /// Reads every datagram waiting now.
    func drain() {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return }
            messages.append((Clock.boot(), SystemdNotify.parse(Array(buf[0..<n]))))
        }
    }

    /// The messages (read so far) that assign `key`, with their values.
    func values(_ key: String) -> [(at: BootInstant, value: String)] {
        drain()
        return messages.flatMap { m in m.fields.filter { $0.0 == key }.map { (m.at, $0.1) } }
    }

    func count(_ key: String, value: String = "1") -> Int { values(key).filter { $0.value == value }.count }
}

/// The runner under systemd's `Type=notify` (docs/operator-guide.md, "Run under systemd"), with
/// a real datagram socket standing in for systemd.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct SystemdNotifyTests {
    /// 400 ms: the runner pings every 200 ms.
    static let watchdogUsec = 400_000

    func environment(_ h: Harness, _ listener: NotifyListener?, extra: [String: String] = [:]) -> [String: String] {
        var e = h.env
        if let listener { e["NOTIFY_SOCKET"] = listener.address }
        e["WATCHDOG_USEC"] = String(SystemdNotifyTests.watchdogUsec)
        for (k, v) in extra { e[k] = v }
        return e
    }

    func startRunner(_ h: Harness, environment: [String: String]) throws -> ProcessIdentity {
        try h.spawn([h.bin, "runner", "--state-dir", h.dir] + Harness.fast, log: "runner.out", environment: environment)
    }

    /// The notification variables in a process's environment as /proc shows it.
    func notifyVariables(pid: Int32) -> [String] {
        let raw = KernelFile.read("/proc/\(pid)/environ", limit: 1 << 20) ?? []
        return raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            .filter { $0.hasPrefix("NOTIFY_SOCKET=") || $0.hasPrefix("WATCHDOG_USEC=") || $0.hasPrefix("WATCHDOG_PID=") }
    }

    @Test func pathSocketReadyAfterHealthyThenWatchdogStatusAndStopping() throws {
        let h = Harness()
        defer { h.finish() }
        let listener = try NotifyListener(abstract: false)
        let runner = try startRunner(h, environment: environment(h, listener))

        try h.waitUntil("READY=1") { listener.count("READY") > 0 }
        let ready = try #require(listener.values("READY").first)
        // READY comes only once the bridge beats: its first beat is older than the datagram.
        let beat = try #require(h.bridgeBeat, "READY=1 arrived before the bridge's first heartbeat")
        #expect(beat <= ready.at)
        try h.waitHealthy()
        #expect(listener.count("READY") == 1, "READY=1 is sent once")
        let order = h.journal.compactMap { $0["event"]?.stringValue }
        let started = try #require(order.firstIndex(of: "bridge-started"))
        let journaledReady = try #require(order.firstIndex(of: "systemd-ready"))
        #expect(started < journaledReady)
        // The datagram with READY=1 says why.
        let readyMessage = try #require(listener.messages.first { $0.fields.contains { $0 == ("READY", "1") } })
        let readyStatus = readyMessage.fields.first { $0.0 == "STATUS" }?.1 ?? ""
        #expect(readyStatus.hasPrefix("bridge healthy; tier 0; circuit closed"), "\(readyStatus)")

        // WATCHDOG=1 again and again; never more often than every WATCHDOG_USEC/2.
        let before = listener.count("WATCHDOG")
        try h.waitUntil("10 more WATCHDOG=1") { listener.count("WATCHDOG") >= before + 10 }
        let pings = listener.values("WATCHDOG").map(\.at)
        let span = pings.last! - pings.first!
        let every = TimeSpan(nanoseconds: Int64(SystemdNotifyTests.watchdogUsec) * 1000 / 2)
        #expect(pings.count <= Int(span.nanoseconds / every.nanoseconds) + 2, "\(pings.count) pings in \(span)")
        #expect(listener.values("STATUS").contains { $0.value.contains("bridge healthy") })

        // A stopped runner sends nothing: the point of the watchdog.
        #expect(kill(runner.pid, SIGSTOP) == 0)
        try h.waitUntil("runner stopped") { ProcStat.read(pid: runner.pid)?.state == "T" }
        listener.drain()
        let whileStopped = listener.messages.count
        ThisProcess.pause(.milliseconds(Double(SystemdNotifyTests.watchdogUsec) * 3 / 1000))
        listener.drain()
        #expect(listener.messages.count == whileStopped, "a stopped runner sent \(listener.messages[whileStopped...].map(\.fields))")
        #expect(kill(runner.pid, SIGCONT) == 0)
        let resumed = listener.count("WATCHDOG")
        try h.waitUntil("WATCHDOG=1 again after SIGCONT") { listener.count("WATCHDOG") > resumed }

        // The bridge does not inherit the variables.
        let bridge = try h.waitHealthy()
        #expect(notifyVariables(pid: bridge.pid).isEmpty, "\(notifyVariables(pid: bridge.pid))")

        #expect(try h.vigil(["stop"]).code == 0)
        try h.waitUntil("STOPPING=1") { listener.count("STOPPING") == 1 }
        #expect(try h.waitExit(runner) == 0)
        #expect(listener.values("STATUS").last?.value.hasPrefix("stopping: vigil stop") == true, "\(listener.values("STATUS").last?.value ?? "")")
    }

    @Test func abstractSocketMissionEnvironmentForeignWatchdogPidAndSigterm() throws {
        let h = Harness()
        defer { h.finish() }
        let listener = try NotifyListener(abstract: true)
        #expect(listener.address.hasPrefix("@"))
        // WATCHDOG_PID names another process: the watchdog is not ours to ping.
        let runner = try startRunner(h, environment: environment(h, listener, extra: ["WATCHDOG_PID": "1"]))
        try h.waitUntil("READY=1 on the abstract socket") { listener.count("READY") == 1 }
        try h.waitHealthy()

        // A mission reads its own environment from /proc.
        let out = h.dir + "/mission.env"
        let add = try h.vigil(["mission", "add", "--", "sh", "-c", "tr '\\000' '\\n' < /proc/self/environ > \(out).tmp && mv \(out).tmp \(out)"])
        #expect(add.code == 0, "\(add.err)")
        try h.waitUntil("the mission wrote its environment") { FileManager.default.fileExists(atPath: out) }
        let env = try String(contentsOfFile: out, encoding: .utf8)
        #expect(env.contains("VIGIL_MISSION_ID="), "\(env)")
        #expect(!env.contains("NOTIFY_SOCKET") && !env.contains("WATCHDOG_USEC") && !env.contains("WATCHDOG_PID"), "\(env)")
        try h.waitUntil("STATUS with the running missions") { listener.values("STATUS").contains { $0.value.contains("missions running") } }

        #expect(listener.count("WATCHDOG") == 0, "WATCHDOG_PID=1 is not us: no pings")
        #expect(kill(runner.pid, SIGTERM) == 0)
        #expect(try h.waitExit(runner) == 0)
        #expect(listener.count("STOPPING") == 1)
        #expect(listener.values("STATUS").last?.value.hasPrefix("stopping: signal") == true)
    }

    @Test func withoutSocketOrWithNobodyListeningNothingBreaks() throws {
        // No NOTIFY_SOCKET at all: the runner runs, stops, and journals nothing about systemd.
        do {
            let h = Harness()
            defer { h.finish() }
            let runner = try startRunner(h, environment: environment(h, nil))
            try h.waitHealthy()
            #expect(try h.vigil(["stop"]).code == 0)
            #expect(try h.waitExit(runner) == 0)
            #expect(h.journal.allSatisfy { !($0["event"]?.stringValue ?? "").hasPrefix("systemd-") })
        }
        // A socket path nobody listens on: journaled once (bounded), the pair runs.
        do {
            let h = Harness()
            defer { h.finish() }
            let runner = try startRunner(h, environment: environment(h, nil, extra: ["NOTIFY_SOCKET": h.dir + "/nobody.sock"]))
            try h.waitHealthy()
            try h.waitUntil("the failure journaled") { !h.events("systemd-notify-failed").isEmpty }
            let beat = try #require(h.runnerBeat)
            try h.waitUntil("the runner beats on") { (h.runnerBeat ?? beat) > beat }
            #expect(h.events("systemd-notify-failed").count == 1, "at most one a minute")
            #expect(try h.vigil(["stop"]).code == 0)
            #expect(try h.waitExit(runner) == 0)
        }
    }

    /// The wrapper passes the socket to the runner; systemd's watchdog signal (SIGABRT to the
    /// wrapper, the main process) ends a stopped runner, and the bridge goes on.
    @Test func wrapperForwardsNotificationsAndWatchdogAbortKillsTheRunner() throws {
        let h = Harness()
        defer { h.finish() }
        let listener = try NotifyListener(abstract: false)
        var e = environment(h, listener)
        e["VIGIL_BIN"] = h.bin
        let wrapper = try h.spawn([Harness.repoRoot + "/scripts/vigil-run", "--state-dir", h.dir] + Harness.fast, log: "wrapper.out", environment: e)
        try h.waitUntil("READY=1 through the wrapper") { listener.count("READY") == 1 }
        let bridge = try h.waitHealthy()
        let runnerPID = try #require((try? h.status())?["runner"]?["pid"]?.intValue)
        let runner = Int32(runnerPID)
        let runnerID = try #require(ProcessIdentity.of(pid: runner))
        h.track(runnerID)
        #expect(kill(runner, SIGSTOP) == 0)
        #expect(kill(wrapper.pid, SIGABRT) == 0)
        #expect(try h.waitExit(wrapper) == 134)
        try h.waitUntil("the runner killed") { runnerID.liveness() == .gone }
        #expect(bridge.liveness() != .gone, "the bridge goes on for the next runner")
        let log = (try? String(contentsOfFile: (h.dir as NSString).appendingPathComponent("wrapper.out"), encoding: .utf8)) ?? ""
        #expect(log.contains("received ABRT"), "\(log)")
    }
}

/// The unit file in contrib/systemd passes `systemd-analyze verify` (systemd 252 here).
@Suite struct SystemdUnitTests {
    static let analyze = "/usr/bin/systemd-analyze"

    /// Verifies a copy of the unit whose programs point at this checkout's (the installed paths
    /// do not exist here); every line it prints is a finding.
    func verify(_ h: Harness, unit text: String) throws -> Harness.Result {
        let path = h.dir + "/vigil.service"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try h.run(SystemdUnitTests.analyze, ["verify", "--man=no", path])
    }

    func installedHere(_ text: String) -> String {
        text.replacingOccurrences(of: "/usr/local/bin/vigil-run", with: Harness.repoRoot + "/scripts/vigil-run")
            .replacingOccurrences(of: "/usr/local/bin/vigil ", with: Harness.vigil + " ")
    }

    @Test func shippedUnitVerifies() throws {
        guard FileManager.default.isExecutableFile(atPath: SystemdUnitTests.analyze) else {
            Issue.record("\(SystemdUnitTests.analyze) is missing: the unit was not verified (install systemd)")
            return
        }
        let h = Harness()
        defer { h.finish() }
        let unit = try String(contentsOfFile: Harness.repoRoot + "/contrib/systemd/vigil.service", encoding: .utf8)
        for setting in ["Type=notify", "NotifyAccess=all", "WatchdogSec=", "RestartPreventExitStatus=2 3 4", "KillMode=process",
                        "Delegate=yes", "StateDirectoryMode=0700", "User=vigil", "NoNewPrivileges=yes", "ProtectSystem=strict"] {
            #expect(unit.contains("\n" + setting), "\(setting) missing")
        }
        let r = try verify(h, unit: installedHere(unit))
        print("systemd-analyze verify:", r.code, r.out, r.err)
        #expect(r.code == 0 && r.out.isEmpty && r.err.isEmpty, "exit \(r.code): \(r.out)\(r.err)")
        // The check is not vacuous: a misspelt key and a bad value are found.
        let broken = try verify(h, unit: installedHere(unit).replacingOccurrences(of: "Type=notify", with: "Typ=notify")
            .replacingOccurrences(of: "Restart=on-failure", with: "Restart=sometimes"))
        #expect(broken.err.contains("Typ") && broken.err.contains("sometimes"), "\(broken.err)")
    }
}
