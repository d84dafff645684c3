import FoundationEssentials
import Synchronization
import VigilCore
import VigilStore
import VigilSystem

/// `program/good.json`: what the kept copy `program/good` is. See docs/operator-guide.md,
/// "Rollback of a broken update".
struct KeptProgram: Codable, Sendable, Equatable {
    static let kind = "kept-program"

    /// Identity (`Executable.fileIdentity`) of the program the copy was made from: the version
    /// that ran the healthy pair.
    var source: String
    /// Identity of the copy itself. A record whose `copy` is not the file on disk (a crash
    /// between writing the copy and writing the record) does not describe it.
    var copy: String
    /// The bridge's version stamp when the copy was kept (with a version file or command it
    /// differs from `source`).
    var stamp: String
    var keptWall: String
    /// The broken program whose rollback was journaled and announced: once per broken program.
    var rolledBackFrom: String?

    enum CodingKeys: String, CodingKey {
        case source, copy, stamp
        case keptWall = "kept_wall"
        case rolledBackFrom = "rolled_back_from"
    }
}

/// A broken update is rolled back (docs/operator-guide.md, "Rollback of a broken update").
///
/// The runner keeps a copy of the program that ran a healthy pair for `--stable-after`
/// (`program/good`, copied from its own image on a background thread, so the loop never waits
/// for the disk). `scripts/vigil-run` runs that copy after the program on disk crashed at start
/// again and again, and names the broken program in `VIGIL_ROLLBACK_FROM` (its identity) and
/// `VIGIL_ROLLBACK_PROGRAM` (its path). A runner started so journals `update-rolled-back` and
/// tells chat once per broken program, does not keep copies, and exits 42 as soon as the
/// program on disk is anything other than the broken one.
final class Rollback {
    static let brokenIdentityVariable = "VIGIL_ROLLBACK_FROM"
    static let programVariable = "VIGIL_ROLLBACK_PROGRAM"
    /// A failed copy is tried again after this long.
    static let retryDelay = TimeSpan.seconds(60)

    let dir: StateDirectory
    let files: StateFiles
    let journal: Journal
    let stableAfter: TimeSpan
    /// Set when this runner runs the kept copy: the program on disk that crashed at start, and
    /// its identity then.
    let rolledBack: (program: String, broken: String)?
    private var record: KeptProgram?
    /// The running program is not the kept one yet (decided once at start: cheap afterwards).
    private var keepWanted: Bool
    private var healthySince: BootInstant?
    private var job: KeepJob?
    private var retryAfter: BootInstant?

    init(ctx: ProcessContext, stableAfter: TimeSpan) {
        dir = ctx.dir
        files = ctx.files
        journal = ctx.journal
        self.stableAfter = stableAfter
        let env = ProcessInfo.processInfo.environment
        if let broken = env[Rollback.brokenIdentityVariable], !broken.isEmpty,
           let program = env[Rollback.programVariable], !program.isEmpty, Rollback.runsKeptCopy(ctx.dir) {
            rolledBack = (program, broken)
            // The bridges we spawn keep VIGIL_ROLLBACK_PROGRAM: their re-exec goes to the
            // program on disk once it is fixed (`Rollback.reexecTarget`), not to the kept copy.
            try? ctx.inotify.watch(directory: Path.parent(program))
        } else {
            rolledBack = nil
            ThisProcess.setEnvironment(Rollback.programVariable, nil)
        }
        ThisProcess.setEnvironment(Rollback.brokenIdentityVariable, nil)
        AtomicFile.sweepTemps(in: ctx.dir.programDir)
        record = ctx.files.load(ctx.dir.keptProgramRecord, kind: KeptProgram.kind, as: KeptProgram.self)
        let describesCopy = record != nil && record?.copy == Executable.fileIdentity(ctx.dir.keptProgram)
        keepWanted = rolledBack == nil && !Rollback.runsKeptCopy(ctx.dir)
            && !(describesCopy && record?.source == Executable.runningIdentity)
    }

    /// The program a bridge re-execs into (with the environment to add): the program on disk,
    /// except while a rollback from it is in effect (the record names its identity), when it is
    /// the kept copy. A bridge that runs the kept copy was spawned by a rolled-back runner and
    /// has the program on disk in `VIGIL_ROLLBACK_PROGRAM`.
    static func reexecTarget(_ dir: StateDirectory) -> (path: String, environment: [String: String]) {
        var program = Executable.path
        if runsKeptCopy(dir), let p = ProcessInfo.processInfo.environment[programVariable], !p.isEmpty { program = p }
        if case .ok(let kept) = StateFile.read(dir.keptProgramRecord, kind: KeptProgram.kind, as: KeptProgram.self),
           let broken = kept.rolledBackFrom, Executable.fileIdentity(program) == broken,
           Executable.fileIdentity(dir.keptProgram) == kept.copy {
            return (dir.keptProgram, [programVariable: program])
        }
        return (program, [:])
    }

    /// This process runs the kept copy (by path, or by identity when the state dir's path has a
    /// symlink in it).
    static func runsKeptCopy(_ dir: StateDirectory) -> Bool {
        Executable.path == dir.keptProgram || Executable.fileIdentity(dir.keptProgram) == Executable.runningIdentity
    }

    // MARK: - Rolled back

    /// At start, once the notifier is ready. A rolled-back runner journals and announces the
    /// rollback (once per broken program: the record remembers it). Returns a restart reason
    /// when the program on disk is no longer the broken one.
    func begin(hooks: RunnerHooks?) -> String? {
        guard let r = rolledBack else { return nil }
        if let reason = restartReason() { return reason }
        let copyIdentity = Executable.runningIdentity
        let kept = record?.copy == copyIdentity ? record : nil
        if record?.rolledBackFrom == r.broken {
            journal.append(.rollbackContinued, ["broken_version": .string(r.broken), "kept_version": json(kept?.source)])
            return nil
        }
        if kept?.source == r.broken {
            // The program on disk is the kept one: the crashes were not caused by an update.
            journal.append(.rollbackSameProgram, ["version": .string(r.broken), "program": .string(r.program)])
            return nil
        }
        // Journal first, then chat, then remember (a crash in between repeats both; the chat
        // key makes the repeat one message).
        journal.append(.updateRolledBack, [
            "broken_version": .string(r.broken), "kept_version": json(kept?.source), "kept_stamp": json(kept?.stamp),
            "program": .string(r.program), "kept_copy": .string(dir.keptProgram),
        ])
        hooks?.notify(key: "update-rolled-back-\(r.broken)", text: """
            Vigil ALERT: the program at \(r.program) (\(r.broken)) crashed at start again and again; rolled back: \
            the pair runs the kept copy of \(kept?.source ?? "the last good program") instead. The broken program \
            stays on disk; put a fixed one there and Vigil picks it up.
            """)
        var updated = kept ?? KeptProgram(source: copyIdentity, copy: copyIdentity, stamp: "unknown", keptWall: "", rolledBackFrom: nil)
        updated.rolledBackFrom = r.broken
        do {
            try files.save(updated, kind: KeptProgram.kind, to: dir.keptProgramRecord)
            record = updated
        } catch {
            journal.append(.stateWriteFailed, ["file": "program/good.json", "error": .string("\(error)")])
        }
        return nil
    }

    /// Every loop turn of a rolled-back runner (a stat): the program on disk changed from the
    /// broken one (a fix is there) → restart, so the wrapper runs it. A missing file is not a
    /// fix.
    func restartReason() -> String? {
        guard let r = rolledBack, let now = Executable.fileIdentity(r.program), now != r.broken else { return nil }
        return "a new program on disk after a rollback (\(r.program))"
    }

    // MARK: - Keeping a copy

    /// Every tick: after the pair ran healthy on this runner's own program for `stableAfter`,
    /// copy that program into `program/good` (in the background), then record it.
    func tick(now: BootInstant, verdict: Verdict?, bridge: ProcessRecord?) {
        if let job { finish(job, now: now) }
        guard keepWanted, job == nil, retryAfter.map({ now >= $0 }) ?? true else { return }
        // The pair: a healthy bridge whose image is our own program (not only the same version).
        guard verdict == .healthy, let b = bridge,
              Executable.fileIdentity("/proc/\(b.identity.pid)/exe") == Executable.runningIdentity else {
            healthySince = nil
            return
        }
        let since = healthySince ?? now
        healthySince = since
        guard now - since >= stableAfter else { return }
        let job = KeepJob(source: Executable.runningIdentity, stamp: b.version, started: now)
        self.job = job
        let stateDir = dir, programDir = dir.programDir, target = dir.keptProgram
        do {
            try SystemThread.start(name: "vigil-keep") { @Sendable in
                let outcome: KeepJob.Outcome
                do {
                    try stateDir.makeDirectory(programDir)
                    // Our own image (the inode we run, even if the file was replaced meanwhile).
                    try AtomicFile.copy(from: "/proc/self/exe", to: target, mode: PrivateFile.executableMode)
                    outcome = .copied(Executable.fileIdentity(target) ?? "exe:unknown")
                } catch {
                    outcome = .failed("\(error)")
                }
                job.outcome.withLock { $0 = outcome }
            }
        } catch {
            job.outcome.withLock { $0 = .failed("\(error)") }
        }
    }

    private func finish(_ job: KeepJob, now: BootInstant) {
        guard let outcome = job.outcome.withLock({ $0 }) else { return }
        self.job = nil
        let ms = ((now - job.started).milliseconds * 10).rounded() / 10
        switch outcome {
        case .copied(let copy):
            let kept = KeptProgram(source: job.source, copy: copy, stamp: job.stamp, keptWall: Clock.iso(Clock.wall()), rolledBackFrom: nil)
            do {
                try files.save(kept, kind: KeptProgram.kind, to: dir.keptProgramRecord)
                record = kept
                keepWanted = false
                journal.append(.programKept, ["version": .string(job.source), "stamp": .string(job.stamp), "copy": .string(dir.keptProgram), "ms": .double(ms)])
                return
            } catch {
                journal.append(.programKeepFailed, ["version": .string(job.source), "error": .string("cannot write the record: \(error)")])
            }
        case .failed(let error):
            journal.append(.programKeepFailed, ["version": .string(job.source), "error": .string(error)])
        }
        retryAfter = now + Rollback.retryDelay
        healthySince = nil
    }

    private func json(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }
}

/// One background copy of the running program; the runner's loop polls `outcome`.
final class KeepJob: Sendable {
    enum Outcome: Sendable {
        case copied(String)
        case failed(String)
    }

    let source: String
    let stamp: String
    let started: BootInstant
    let outcome = Mutex<Outcome?>(nil)

    init(source: String, stamp: String, started: BootInstant) {
        self.source = source
        self.stamp = stamp
        self.started = started
    }
}
