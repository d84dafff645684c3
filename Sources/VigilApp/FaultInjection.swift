import FoundationEssentials
// Glibc: the faults themselves (malloc and memset for runaway memory, pause for a hang) are
// libc calls, and exist only under VIGIL_TEST_FAULTS=1.
import Glibc
import VigilCore
import VigilStore
import VigilSystem

// Fault injection, all of it: reachable only through the environment variable
// `VIGIL_TEST_FAULTS=1` (tests, `vigil-bench` and the chaos soak set it; docs/chaos.md). The
// bridge and the runner each call one hook here; without the variable the hooks do nothing
// and read nothing.

/// Fault injection for tests, the benchmark and the chaos soak. Only when the environment has
/// `VIGIL_TEST_FAULTS=1` does the bridge read `<state>/fault` at start: `exit-at-start` (dies
/// right after writing its PID file), `ignore-term` (ignores SIGTERM), `hang` (its loop stops
/// turning), `bloat=MB` (touches MB of memory), `bloat-grow=MB/s` (touches MB more memory every
/// second, up to 4 GiB: runaway memory). The running bridge also re-reads the file when inotify
/// reports it changed (for `scripts/chaos`): `hang`, `ignore-term` and `bloat-grow` then take
/// effect at once and stay until the process exits or re-execs; removing the file undoes nothing.
///
/// The runner reads `<state>/runner-fault` at its start: `exit-at-start` makes it exit 1 at
/// once (a runner that crashes at start: the wrapper's backoff and rollback).
enum FaultInjection {
    static let enabled = ProcessInfo.processInfo.environment["VIGIL_TEST_FAULTS"] == "1"

    static func runner(_ dir: StateDirectory) -> String? {
        guard enabled, case .bytes(let data) = StateSlot.read(dir.runnerFault) else { return nil }
        let text = String(decoding: data, as: UTF8.self).trimmingWhitespace()
        return text.isEmpty ? nil : text
    }

    static func current(_ dir: StateDirectory) -> String? {
        guard enabled, case .bytes(let data) = StateSlot.read(dir.fault) else { return nil }
        let text = String(decoding: data, as: UTF8.self).trimmingWhitespace()
        return text.isEmpty ? nil : text
    }

    /// Runaway memory: grows by `mbPerSecond` (touched, so it counts in RSS) on every loop turn.
    struct Bloat {
        private var rate = 0
        private var since = BootInstant.zero
        private var held = 0
        private var blocks: [UnsafeMutableRawPointer] = []
        static let capMB = 4096

        mutating func start(mbPerSecond: Int, now: BootInstant) {
            if rate == 0 { since = now }
            rate = mbPerSecond
        }

        mutating func grow(now: BootInstant) {
            guard rate > 0 else { return }
            let want = min(Bloat.capMB, Int((now - since).seconds * Double(rate)))
            while held < want {
                guard let p = malloc(1 << 20) else { return }
                memset(p, 1, 1 << 20)
                blocks.append(p)
                held += 1
            }
        }
    }
}

extension FaultInjection {
    /// The runner's hook, at its start: `exit-at-start` in `<state>/runner-fault` exits 1.
    static func runnerStarting(_ dir: StateDirectory, journal: Journal) {
        guard runner(dir) == "exit-at-start" else { return }
        journal.append(.faultInjected, ["fault": "exit-at-start", "runtime": false])
        exit(1)
    }

    /// The bridge's hooks: `nil` (nothing to call) unless `VIGIL_TEST_FAULTS=1`.
    static func bridge(_ dir: StateDirectory, journal: Journal) -> BridgeFaults? {
        enabled ? BridgeFaults(dir: dir, journal: journal) : nil
    }

    /// What the bridge's loop calls: before its first beat, once started, and at every turn.
    struct BridgeFaults {
        let dir: StateDirectory
        let journal: Journal
        private var fault: String?
        private var bloat = Bloat()
        /// `ignore-term` was played: the loop does not stop on SIGTERM.
        private(set) var ignoresTerm = false

        init(dir: StateDirectory, journal: Journal) {
            self.dir = dir
            self.journal = journal
        }

        /// A program that crashes at start never beats: the fault that plays one exits first.
        mutating func beforeFirstBeat() {
            if FaultInjection.current(dir) == "exit-at-start" { inject("exit-at-start") }
        }

        /// After the start is journaled: plays the fault the file names.
        mutating func started() {
            fault = FaultInjection.current(dir)
            if let fault { inject(fault) }
        }

        /// Every loop turn: a changed `fault` file (inotify) plays its new fault at once; a
        /// runaway memory fault grows.
        mutating func turn(changed: [(directory: String, name: String)], now: BootInstant) {
            if changed.contains(where: { $0.name == "fault" }), let f = FaultInjection.current(dir), f != fault {
                fault = f
                inject(f, runtime: true)
            }
            bloat.grow(now: now)
        }

        private mutating func inject(_ fault: String, runtime: Bool = false) {
            journal.append(.faultInjected, ["fault": .string(fault), "runtime": .bool(runtime)])
            if fault == "ignore-term" { ignoresTerm = true }
            if fault == "exit-at-start" && !runtime { exit(1) }
            if fault.hasPrefix("bloat-grow="), let rate = Int(fault.dropFirst(11).replacing("/s", with: "")), rate > 0 {
                bloat.start(mbPerSecond: rate, now: Clock.boot())
            }
            if fault == "hang" { while true { pause() } }
            if fault.hasPrefix("bloat="), let mb = Int(fault.dropFirst(6)) {
                let bytes = mb << 20
                let p = malloc(bytes)!
                memset(p, 1, bytes)
            }
        }
    }
}
