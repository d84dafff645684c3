import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil restart bridge|runner`: writes that process's restart marker.
enum RestartCommand {
    static let command = Command(
        name: "restart",
        summary: "restart bridge|runner (writes its restart marker)",
        help: """
        usage: vigil restart bridge|runner [--state-dir DIR]

        Writes the process's restart marker. The bridge finishes its loop turn and re-execs the
        program on disk (same PID); the runner exits 42 and the wrapper relaunches it at once.
        Missions keep running. When no wrapper (scripts/vigil-run) runs on the state dir, the
        runner's marker is still written (exit 0) with a warning on stderr: a runner whose
        wrapper is gone does not exit for it (it journals runner-restart-skipped), and a runner
        started by hand would exit 42 with nobody to relaunch it.
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: [])
            guard args.positional.count == 1, let role = StateDirectory.Role(rawValue: args.positional[0]) else {
                throw UsageError("say which process: vigil restart bridge, or vigil restart runner")
            }
            let dir = try existing(inv.stateDir)
            let files = StateFiles(dir: dir, journal: Journal(path: dir.journal, source: "cli"))
            try files.writeMarker(dir.restartMarker(role), by: "cli \(ThisProcess.pid)", reason: "vigil restart \(role.rawValue)")
            let wrapped = role == .bridge || Wrapper.isRunning(on: dir)
            files.journal.append(.restartRequested, ["process": .string(role.rawValue), "by": "cli", "wrapper": role == .runner ? .bool(wrapped) : .null])
            let running = files.loadRecordQuietly(role).map { $0.identity.isAlive } ?? false
            printOut("restart marker written for the \(role.rawValue)" + (running ? "" : " (it is not running now; the marker applies only to a process started before it)"))
            if running && !wrapped { printErr("vigil: warning: \(Wrapper.missingWarning(dir))\n") }
        })
}

/// scripts/vigil-run, seen from the other processes: it holds `wrapper.lock` (flock, on its
/// descriptor 9, which no runner inherits) for as long as it lives.
enum Wrapper {
    /// True when a wrapper runs on `dir` (someone holds its lock). A non-blocking shared lock
    /// on a descriptor of our own, dropped at once (`FileLock.isFree`).
    static func isRunning(on dir: StateDirectory) -> Bool { !FileLock.isFree(dir.wrapperLock) }

    /// Why a runner restart marker does nothing useful now (docs/operator-guide.md, "The
    /// wrapper gone").
    static func missingWarning(_ dir: StateDirectory) -> String {
        "no wrapper (scripts/vigil-run) is running on \(dir.path), so nothing would relaunch the runner: a runner whose wrapper is gone does not exit for this marker (it journals runner-restart-skipped and keeps running), and a runner started by hand would exit 42 and stay down. Start the pair again to restart it: `vigil stop`, then scripts/vigil-run."
    }
}

/// `vigil heal reset`: asks the runner to close an open circuit and forget the escalation.
enum HealCommand {
    static let command = Command(
        name: "heal",
        summary: "heal reset (close an open circuit)",
        help: """
        usage: vigil heal reset [--state-dir DIR]

        Asks the runner to reset the watchdog: tier 0, circuit closed, failure count 0. The
        runner acts on it within one tick (at once when idle) and journals it.
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: [])
            guard args.positional == ["reset"] else { throw UsageError("the heal command has one subcommand: vigil heal reset") }
            let dir = try existing(inv.stateDir)
            let files = StateFiles(dir: dir, journal: Journal(path: dir.journal, source: "cli"))
            try files.writeMarker(dir.healReset, by: "cli \(ThisProcess.pid)", reason: "vigil heal reset")
            let running = files.loadRecordQuietly(.runner).map { $0.identity.isAlive } ?? false
            printOut("heal reset requested" + (running ? "; the runner applies it within a tick" : "; no runner is running now: it applies when the runner starts"))
        })
}

/// `vigil stop`: stops the runner (the wrapper exits) and the bridge gracefully.
enum StopCommand {
    static let command = Command(
        name: "stop",
        summary: "stop runner (wrapper exits) and bridge gracefully",
        help: """
        usage: vigil stop [--state-dir DIR] [--timeout D]

        Writes the stop marker: the bridge exits, the runner stops the bridge if needed and
        exits 0, and the wrapper exits. The watchdog does not resurrect the bridge until the
        pair is started again (scripts/vigil-run). Missions keep running and are reattached at
        the next start. Waits up to --timeout (default 15s) and reports what is still running.
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: ["timeout"])
            guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0])") }
            let timeout = try args.duration("timeout") ?? .seconds(15)
            let dir = try existing(inv.stateDir)
            let journal = Journal(path: dir.journal, source: "cli")
            let files = StateFiles(dir: dir, journal: journal)
            try files.writeMarker(dir.stopMarker, by: "cli \(ThisProcess.pid)", reason: "vigil stop")
            journal.append(.stopRequested, ["by": "cli"])
            let deadline = Clock.boot() + timeout
            var pidfds: [(String, PidFD)] = []
            for role in StateDirectory.Role.allCases {
                if let r = files.loadRecordQuietly(role), runsVigil(r.identity, role: role, dir: dir), let p = r.identity.openPidFD() { pidfds.append((role.rawValue, p)) }
            }
            // With no runner to do it, stop the bridge ourselves.
            if !pidfds.contains(where: { $0.0 == "runner" }), let b = pidfds.first(where: { $0.0 == "bridge" }) {
                b.1.perform(.terminate)
            }
            var left: [String] = []
            for (name, p) in pidfds {
                let ms = (deadline - Clock.boot()).pollMilliseconds
                if !p.waitForExit(timeoutMilliseconds: ms) { left.append("\(name) (pid \(p.identity.pid))") }
            }
            if left.isEmpty {
                printOut(pidfds.isEmpty ? "stop marker written; nothing was running" : "stopped: \(pidfds.map(\.0).joined(separator: " and "))")
            } else {
                throw CommandError("still running after \(timeout): \(left.joined(separator: ", ")); check `vigil journal`", code: 1)
            }
        })
}

func existing(_ dir: StateDirectory) throws -> StateDirectory {
    guard FileManager.default.fileExists(atPath: dir.path) else {
        throw CommandError("no state directory at \(dir.path): nothing has run here (pass --state-dir or set VIGIL_STATE_DIR)")
    }
    return dir
}
