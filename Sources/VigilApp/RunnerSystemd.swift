import Foundation
import VigilCore
import VigilStore
import VigilSystem

/// The runner under systemd's `Type=notify` (docs/operator-guide.md, "Run under systemd"):
/// READY=1 once the first bridge is healthy, WATCHDOG=1 at half the manager's watchdog
/// interval, STATUS= with the verdict, tier, circuit and running missions (on change, at most
/// once a second), STOPPING=1 when it stops the pair.
///
/// Everything is sent from the runner's loop, never from another thread: a runner whose loop
/// is stuck (a hang, SIGSTOP) stops pinging, and systemd's watchdog restarts it. A failed send
/// never stops the runner; it is journaled at a bounded rate (docs/architecture.md, "Repeated
/// failures").
final class RunnerSystemd {
    /// What the environment asked for, read once and removed at the runner's start.
    struct Request {
        var address: SystemdNotify.Address
        var watchdog: TimeSpan?

        /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then removes them from this
        /// process's environment so that bridges, shims, missions and workers do not inherit
        /// them. Nil when no (usable) socket is named: then the runner sends nothing. An
        /// unusable value is returned in `invalid` to be journaled once the journal is open.
        static func take(invalid: inout String?) -> Request? {
            let env = ProcessInfo.processInfo.environment
            let socket = env[SystemdNotify.socketVariable]
            let usec = env[SystemdNotify.watchdogVariable], pid = env[SystemdNotify.watchdogPIDVariable]
            for name in [SystemdNotify.socketVariable, SystemdNotify.watchdogVariable, SystemdNotify.watchdogPIDVariable] {
                ThisProcess.setEnvironment(name, nil)
            }
            guard let socket, !socket.isEmpty else { return nil }
            guard let address = SystemdNotify.Address(socket) else {
                invalid = socket
                return nil
            }
            return Request(address: address, watchdog: SystemdNotify.watchdogInterval(usec: usec, pid: pid, ourPID: ThisProcess.pid))
        }
    }

    /// STATUS= is sent when it changes, but at most this often.
    static let statusEvery = TimeSpan.seconds(1)

    private let socket: SystemdNotify?
    let address: SystemdNotify.Address
    /// WATCHDOG=1 every this long (half of `WATCHDOG_USEC`); nil: no watchdog for us.
    let pingEvery: TimeSpan?
    private let journal: Journal
    private let started = Clock.boot()
    private var nextPing = BootInstant.zero
    private(set) var readySent = false
    private var sentStatus: String?
    /// When STATUS= was last tried.
    private var statusSentAt: BootInstant?
    private var statusPending = false
    private var failures = RepeatLimiter()

    init(_ request: Request, journal: Journal) {
        address = request.address
        pingEvery = request.watchdog.map { TimeSpan(nanoseconds: max($0.nanoseconds / 2, 1_000_000)) }
        self.journal = journal
        do {
            socket = try SystemdNotify(address: request.address)
        } catch {
            socket = nil
            note(failure: "\(error)", now: Clock.boot())
        }
    }

    /// One loop turn, after the probe: READY=1 at the first healthy verdict, the status when it
    /// changed (and a second has passed since the last), WATCHDOG=1 when due. One datagram.
    func turn(now: BootInstant, verdict: Verdict?, heal: HealState, missionsRunning: Int?) {
        var fields: [(String, String)] = []
        let ready = !readySent && verdict == .healthy
        if ready { fields.append(("READY", "1")) }
        let status = RunnerSystemd.status(verdict: verdict, heal: heal, missionsRunning: missionsRunning)
        statusPending = status != sentStatus
        let sendsStatus = statusPending && (ready || statusSentAt.map { now - $0 >= RunnerSystemd.statusEvery } ?? true)
        if sendsStatus {
            fields.append(("STATUS", status))
            // The rate counts tries: a send that fails is tried again a second later, not at once.
            statusSentAt = now
        }
        if let every = pingEvery, now >= nextPing {
            fields.append(("WATCHDOG", "1"))
            nextPing = now + every
        }
        guard !fields.isEmpty else { return }
        if send(fields, now: now) {
            if sendsStatus {
                sentStatus = status
                statusPending = false
            }
            if ready {
                readySent = true
                journal.append(.systemdReady, [
                    "socket": .string(address.description), "after_ms": .double(((now - started).milliseconds * 10).rounded() / 10),
                    "watchdog_ping_ms": pingEvery.map { .double($0.milliseconds) } ?? .null,
                ])
            }
        }
    }

    /// The next instant a turn has something to send (a ping, a status held back by the rate).
    var nextDeadline: BootInstant? {
        var d: [BootInstant] = []
        if pingEvery != nil { d.append(nextPing) }
        if statusPending, let at = statusSentAt { d.append(at + RunnerSystemd.statusEvery) }
        return d.min()
    }

    /// The runner stops the pair (a stop, a signal, its state directory lost).
    func stopping(_ reason: String) {
        _ = send([("STOPPING", "1"), ("STATUS", "stopping: \(reason)")], now: Clock.boot())
    }

    /// The runner exits 42 for the wrapper to relaunch it: not a stop of the service.
    func restarting(_ reason: String) {
        _ = send([("STATUS", "runner restarting (exit 42): \(reason)")], now: Clock.boot())
    }

    /// What STATUS= says: the last verdict, the tier and circuit, the missions running when the
    /// runner's mission engine knows (no database read for it).
    static func status(verdict: Verdict?, heal: HealState, missionsRunning: Int?) -> String {
        var s = "bridge \(verdict?.rawValue ?? "not probed yet"); tier \(heal.displayTier); circuit \(heal.circuit.rawValue)"
        if let n = missionsRunning { s += "; missions running \(n)" }
        return s
    }

    private func send(_ fields: [(String, String)], now: BootInstant) -> Bool {
        guard let socket else { return false }
        do {
            try socket.send(SystemdNotify.message(fields))
            if let report = failures.success(now: now) {
                journal.append(.systemdNotifyRecovered, ["socket": .string(address.description)].merging(report.fields) { a, _ in a })
            }
            return true
        } catch {
            note(failure: "\(error)", now: now)
            return false
        }
    }

    private func note(failure: String, now: BootInstant) {
        guard let report = failures.failure(now: now) else { return }
        journal.append(.systemdNotifyFailed, ["socket": .string(address.description), "error": .string(failure)]
            .merging(report.fields) { a, _ in a })
    }
}
