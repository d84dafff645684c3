import FoundationEssentials
// shape stays as it is while it moves to a target of its own; nothing else here calls it.
import VigilCore
import VigilStore
import VigilSystem

/// What the bridge and the runner share: the state directory, the journal, state files, the
/// process's own PID file with heartbeats, and signals as a pollable descriptor.
final class ProcessContext {
    let role: StateDirectory.Role
    let dir: StateDirectory
    let journal: Journal
    let files: StateFiles
    let signals: WakePipe
    let inotify: Inotify
    /// When this image started (boot clock); markers written before it are not ours.
    let started: BootInstant
    let startedWall: String
    var record: ProcessRecord
    /// The state directory we started in, pinned (docs/operator-guide.md, "The state directory
    /// removed or replaced"): checked every loop turn and before every heartbeat.
    let anchor: StateDirectoryAnchor
    /// Paths looked at every loop turn, made once: the stop marker and our restart marker.
    let stopMarker: String
    let ownRestartMarker: String
    /// Failed heartbeat writes, journaled at a bounded rate (docs/architecture.md, "Repeated failures").
    private var writeProblems = RepeatLimiter()

    /// - Parameter journalRotation: the runner and the bridge rotate the journal by size
    ///   (`journal-max-bytes`, `journal-keep`).
    init(role: StateDirectory.Role, dir: StateDirectory, version: String, journalRotation: Journal.Rotation) throws {
        self.role = role
        self.dir = dir
        stopMarker = dir.stopMarker
        ownRestartMarker = dir.restartMarker(role)
        journal = Journal(path: dir.journal, source: role.rawValue, rotation: journalRotation)
        files = StateFiles(dir: dir, journal: journal)
        signals = try WakePipe(signals: [.terminate, .interrupt, .hangup])
        inotify = try Inotify()
        anchor = try StateDirectoryAnchor(dir)
        try inotify.watch(directory: dir.path)
        started = Clock.boot()
        startedWall = Clock.iso(Clock.wall())
        record = ProcessRecord(role: role.rawValue, identity: .current, version: version, exe: Executable.path,
                               started: started, startedWall: startedWall, beat: started, beatWall: startedWall,
                               seq: 0, bootID: Clock.bootID, lastVerdict: nil, currentVersion: nil, probeCPUMicros: nil)
    }

    /// State-directory changes `waitForTurn` drained that the next loop turn must see.
    private var heldChanges: [(directory: String, name: String)] = []

    /// The changes in the watched directories since the last call: those `waitForTurn` kept,
    /// then what inotify has now.
    func drainChanges() -> [(directory: String, name: String)] {
        defer { heldChanges = [] }
        return heldChanges + inotify.drain()
    }

    /// Waits in `poll` on inotify and `fds` until `deadline`. Changes whose names `relevant`
    /// rejects (our own heartbeat and status writes, the other process's, the journal) are
    /// drained and do not end the wait: each would cost a whole loop turn, three or four a
    /// second on an idle pair (docs/architecture.md, "Wake-ups"). Any other descriptor, a
    /// relevant change (kept for `drainChanges`) or the deadline ends it.
    func waitForTurn(_ fds: [Int32], until deadline: BootInstant, relevant: (String) -> Bool) {
        while true {
            let changes = inotify.drain().filter { relevant($0.name) }
            if !changes.isEmpty {
                heldChanges += changes
                return
            }
            let now = Clock.boot()
            guard now < deadline else { return }
            let ready = pollReadable([inotify.fd] + fds, timeoutMilliseconds: (deadline - now).pollMilliseconds)
            if ready != [inotify.fd] { return }
        }
    }

    /// The PID file needs rewriting (a field other than the heartbeat changed).
    var recordDirty = true
    /// The inode of the PID file we wrote last: if the file is gone or replaced (quarantined,
    /// overwritten), the next beat writes it again.
    private var writtenInode: UInt?

    private func pidFileIsOurs() -> Bool {
        FileStatus.at(dir.pidFile(role)).map { UInt($0.inode) } == writtenInode && writtenInode != nil
    }

    /// Writes the heartbeat (and the PID file when it changed). A failed write is journaled at
    /// a low rate and reported; the caller goes on (the next beat tries again).
    @discardableResult
    func beat(now: BootInstant = Clock.boot()) -> Bool {
        // Never a heartbeat into a directory that is not ours (the loop stops at its next turn).
        if anchor.check() != nil { return false }
        record.beat = now
        record.seq &+= 1
        do {
            if recordDirty || !pidFileIsOurs() {
                record.beatWall = Clock.iso(Clock.wall())
                try files.save(record, kind: ProcessRecord.kind, to: dir.pidFile(role))
                writtenInode = FileStatus.at(dir.pidFile(role)).map { UInt($0.inode) }
                recordDirty = false
            }
            try AtomicFile.write(Heartbeat(identity: record.identity, beat: now, seq: record.seq).encoded(), to: dir.beatFile(role))
            if let report = writeProblems.success(now: now) {
                journal.append(.stateWriteRecovered, ["file": .string("\(role.rawValue).beat")].merging(report.fields) { a, _ in a })
            }
            return true
        } catch {
            recordDirty = true
            if let report = writeProblems.failure(now: now) {
                journal.append(.stateWriteFailed, ["file": .string("\(role.rawValue).beat"), "error": .string("\(error)")]
                    .merging(report.fields) { a, _ in a })
            }
            return false
        }
    }

    /// Removes our PID file if it is still ours (never another process's).
    func removeOwnPidFile() {
        if let r = files.loadRecord(role), r.identity == ProcessIdentity.current {
            try? AtomicFile.remove(dir.pidFile(role))
            try? AtomicFile.remove(dir.beatFile(role))
        }
    }

    /// Our restart marker, if one was written after we started. A marker from before our start
    /// asked for a restart that has happened already: it is removed (it is ours to remove).
    func pendingRestartMarker() -> Marker? {
        let path = ownRestartMarker
        guard let m = files.loadMarker(path) else { return nil }
        if m.applies(toProcessStartedAt: started) { return m }
        try? AtomicFile.remove(path)
        return nil
    }

    /// Says that the state directory is lost, in the only places left to say it: standard
    /// error (the journal may be gone with the directory), and the journal of the directory we
    /// started in if it still exists somewhere (renamed away), reached through the pinned
    /// descriptor, never through the path (which may name a directory that is not ours now).
    /// Returns the sentence.
    @discardableResult
    func reportLostStateDirectory(_ loss: StateDirectoryAnchor.Loss, consequence: String) -> String {
        let sentence = "the state directory \(dir.path) \(loss) while the \(role.rawValue) (pid \(ThisProcess.pid)) ran on it: " + consequence
        printErr("vigil \(role.rawValue): \(sentence)\n")
        let pinned = Journal(path: anchor.pinnedPath("journal.jsonl"), source: role.rawValue)
        pinned.append(.stateDirLost, [
            "loss": .string(loss.kind), "detail": .string(loss.description), "path": .string(dir.path),
            "device": .int(Int64(bitPattern: anchor.device)), "inode": .int(Int64(bitPattern: anchor.inode)),
            "pid": .int(Int64(ThisProcess.pid)), "exit": .int(Int64(StateDirectoryAnchor.lostExitCode)),
        ])
        return sentence
    }

    func stopRequested() -> Marker? {
        guard let m = files.loadMarker(stopMarker), m.bootID == Clock.bootID else { return nil }
        return m
    }
}

/// Prepares the state directory (checked, created 0700, symlinks/FIFOs in its slots
/// quarantined and loose permissions tightened: `StateDirectory.secure`) and takes the role's
/// singleton lock (retrying briefly: a prober may hold it for a moment), or fails with exit
/// code 3 naming the holder.
func takeSingletonLock(_ role: StateDirectory.Role, dir: StateDirectory, attempts: Int, hint: String) throws -> FileLock {
    // Started for one directory (`StateDirectoryAnchor.handedVariable`): if that one is gone,
    // neither create a new one nor work in another (docs/operator-guide.md, "The state
    // directory removed or replaced").
    // Checked again after `prepare`: the directory may go between the two.
    let handed = ProcessInfo.processInfo.environment[StateDirectoryAnchor.handedVariable]
    ThisProcess.setEnvironment(StateDirectoryAnchor.handedVariable, nil)
    func checkHanded() throws {
        guard let token = handed, let loss = StateDirectoryAnchor.verify(dir, token: token) else { return }
        throw CommandError("the state directory \(dir.path) \(loss) before this \(role.rawValue) started: not starting, and nothing written there (see docs/operator-guide.md, \"The state directory removed or replaced\")",
                           code: StateDirectoryAnchor.lostExitCode)
    }
    try checkHanded()
    do { try dir.prepare(create: handed == nil) } catch { try checkHanded(); throw error }
    try checkHanded()
    dir.secure(journal: Journal(path: dir.journal, source: role.rawValue))
    if let lock = try FileLock.lock(dir.lock(role), attempts: attempts) { return lock }
    let holder = StateFiles(dir: dir, journal: Journal(path: dir.journal, source: role.rawValue))
        .loadRecordQuietly(role).map { " (pid \($0.identity.pid))" } ?? ""
    throw CommandError("another \(role.rawValue) is already running on \(dir.path)\(holder); \(hint)", code: 3)
}

/// True when `identity` runs `vigil bridge` (or runner) on this state directory: checked
/// before any signal, so a PID file naming an unrelated process (even with a matching start
/// time, e.g. forged) never gets it signalled.
package func runsVigil(_ identity: ProcessIdentity, role: StateDirectory.Role, dir: StateDirectory) -> Bool {
    let argv = ProcStat.commandLine(pid: identity.pid)
    guard argv.contains(role.rawValue) else { return false }
    guard let i = argv.firstIndex(of: "--state-dir"), i + 1 < argv.count else { return false }
    return StateDirectory(argv[i + 1]).path == dir.path
}

/// Replaces this process image with the program at `path` (same PID).
func reexec(path: String, arguments: [String], environment: [String: String]) -> SystemError {
    ThisProcess.exec(path: path, arguments: arguments, environment: environment)
}

extension TimeSpan {
    /// Milliseconds for `poll`, clamped to [0, 1 h], rounded up so we never wake early.
    package var pollMilliseconds: Int32 {
        if nanoseconds <= 0 { return 0 }
        return Int32(min(3_600_000, (nanoseconds + 999_999) / 1_000_000))
    }
}
