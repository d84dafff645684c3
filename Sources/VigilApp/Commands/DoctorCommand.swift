import Foundation
import VigilCore
import VigilStore
import VigilSystem

/// `vigil doctor [--fix]`: anomalies of a state directory and, with `--fix`, safe repairs.
enum DoctorCommand {
    static let command = Command(
        name: "doctor",
        summary: "anomalies and, with --fix, safe repairs",
        help: """
        usage: vigil doctor [--state-dir DIR] [--json] [--fix [--release-long-running] [--purge-quarantine]]
                            [--max-runtime D] [--stuck-after D] [--max-wal SIZE] [--min-free SIZE]
                            [--min-free-percent P] [--only GROUP,…]

        Looks for: missions running longer than --max-runtime, missions marked running whose
        shim is gone while no runner runs, locks held by missions that are not running, orphaned
        mission shims, processes and workspaces, corrupt state files and files in quarantine/,
        database integrity failures, an old schema or a large WAL, a locked database, failed or
        stuck outbox messages, an open circuit, a runner or bridge that is not running, a stop
        in effect, low disk space or memory, a runner or bridge that grew large, temp files of
        dead writers, workspace anomalies.

        --fix repairs what is safe and looks again: temp files swept, corrupt state files
        quarantined (when their writer is not running), stale locks released, the runner's
        start-up recovery run (only while no runner runs), messages of a dead sender put back
        to pending, the WAL checkpointed, an old schema migrated. It never touches a database
        that fails its integrity check, never restarts processes, and never cancels a mission
        unless asked:
          --release-long-running   cancel missions running longer than --max-runtime (the
                                   normal cancel: SIGTERM, then SIGKILL after the grace)
          --purge-quarantine       delete files in quarantine/ older than 30 days

        options:
          --json                   one object: findings (check, subject, severity, what, why,
                                   action, fixable, requires, fixed, resolved, needs_person, note), and
                                   the counts fixed, needs_person, fixable, remaining
          --max-runtime D          a mission running longer is reported (default 6h)
          --stuck-after D          an outbox message undelivered longer is stuck (default 10m)
          --max-wal SIZE           a larger WAL is reported (default 64MiB)
          --min-free SIZE          less free disk space is low (default 100MiB)
          --min-free-percent P     so is less than P percent free (default 5)
          --only GROUP,…           only these groups of checks: config, processes, heal,
                                   state-files, quarantine, temp-files, disk, memory, database
                                   (with the integrity check), missions, outbox, workspaces
                                   (the runner's self-checks run one group at a time)

        Exit status: 0 when nothing needs attention (informational findings aside), 1 when
        findings remain (after --fix: what it could not repair), 2 for bad usage.
        The database waits for another writer up to $VIGIL_BUSY_TIMEOUT (default 2s).
        """,
        run: run)

    static func run(_ inv: Invocation) throws {
        let args = try Arguments(inv.arguments, valued: ["max-runtime", "stuck-after", "max-wal", "min-free", "min-free-percent", "only"],
                                 booleans: ["json", "fix", "release-long-running", "purge-quarantine"])
        guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0].debugDescription)") }
        var options = DoctorOptions()
        options.fix = args.has("fix")
        options.releaseLongRunning = args.has("release-long-running")
        options.purgeQuarantine = args.has("purge-quarantine")
        for flag in ["release-long-running", "purge-quarantine"] where args.has(flag) && !options.fix {
            throw UsageError("--\(flag) only works together with --fix")
        }
        if let d = try args.duration("max-runtime") { options.maxRuntime = d }
        if let d = try args.duration("stuck-after") { options.stuckAfter = d }
        options.maxWAL = try size(args, "max-wal") ?? options.maxWAL
        options.minFreeBytes = try size(args, "min-free") ?? options.minFreeBytes
        if let p = args.value("min-free-percent") {
            guard let v = Double(p), v >= 0, v <= 100 else { throw UsageError("--min-free-percent \(p.debugDescription): give a number from 0 to 100") }
            options.minFreePercent = v
        }
        if let only = args.value("only") {
            let groups = Set(only.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
            let unknown = groups.subtracting(Doctor.groups)
            guard !groups.isEmpty, unknown.isEmpty else {
                throw UsageError("--only \(only.debugDescription): unknown group \(unknown.sorted().joined(separator: ", ")) (groups: \(Doctor.groups.joined(separator: ", ")))")
            }
            options.only = groups
        }
        if let text = ProcessInfo.processInfo.environment["VIGIL_BUSY_TIMEOUT"], let t = TimeSpan.parse(text), t.nanoseconds >= 0 {
            options.busyTimeout = t
        }
        let report = try Doctor.run(inv.stateDir, options)
        printOut(args.has("json") ? report.json.jsonString : report.text)
        if report.exitCode != 0 { throw ExitCode(report.exitCode) }
    }

    static func size(_ args: Arguments, _ name: String) throws -> UInt64? {
        guard let text = args.value(name) else { return nil }
        guard let v = ByteSize.parse(text) else { throw UsageError("--\(name) \(text.debugDescription): not a size (use 100MB, 1GiB, 64k)") }
        return v
    }
}
