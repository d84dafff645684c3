import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// The shim: the detached process that owns one attempt of a mission (docs/missions.md, "Shim
/// protocol"). Started by the runner as the leader of its own session with stdout/stderr on
/// the mission's output file. It never touches the database.
enum ShimMain {
    /// Exit code of a shim that found another shim of its mission running: nothing was run.
    static let busyExit: Int32 = 75
    /// Exit code of a shim whose workspace slot's lock another process holds (a worker cleaning
    /// it, or a shim of an earlier start that a killed runner never recorded): nothing was run.
    static let slotBusyExit: Int32 = 76

    struct Spec {
        var stateDir: StateDirectory
        var mission: Int64
        var attempt: Int
        var maxAttempts: Int
        var cwd: String
        var argv: [String]
        var settings = MissionSettings()
        /// `--let-daemons-go`: leave the mission's processes outside its session alone at the end.
        var letDaemonsGo = false
        /// The workspace slot it runs in (docs/workspaces.md): its working directory, and
        /// `VIGIL_WORKSPACE`.
        var workspace: String? = nil

        var workingDirectory: String { workspace ?? cwd }
    }

    /// Runs the attempt to its end and writes the result file. Returns the shim's exit code
    /// (0 once the result is durable).
    static func run(_ spec: Spec) -> Int32 {
        let paths = MissionPaths(stateDir: spec.stateDir, id: spec.mission)
        // One shim per mission at a time, whatever crashed: a runner killed between spawning a
        // shim and recording it may leave one the next runner cannot see yet (before its
        // exec); the second shim of a mission finds the run lock held and runs nothing.
        // The lock is on the output file (which every attempt appends to): no extra file.
        try? spec.stateDir.makeDirectory(paths.directory) // never re-creates a removed state dir
        guard let runLock = try? FileLock.tryLock(paths.output) else { return ShimMain.busyExit }
        defer { runLock.release() }
        if case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self),
           r.mission == spec.mission, r.attempt == spec.attempt {
            return 0 // this attempt ran already (its result is there): nothing to do
        }
        // The slot is the mission's only while it holds the slot's lock, from before the command
        // starts until its result is written (docs/workspaces.md, "Handing out a slot"): no
        // worker cleans it meanwhile, and no other shim, even one a killed runner spawned and
        // never recorded, runs in it. A prober may hold the lock for a moment: wait up to 1 s.
        var slotLock: FileLock? = nil
        if let slot = spec.workspace {
            guard let l = try? FileLock.lock(StateDirectory.workspaceSlotLock(ofSlot: slot), attempts: 50) else { return ShimMain.slotBusyExit }
            slotLock = l
        }
        defer { slotLock?.release() }
        let started = Clock.iso(Clock.wall())
        var output = MissionOutput(fd: 1, paths: paths, cap: spec.settings.outputCap)
        if spec.attempt > 1 {
            output.note("--- vigil: attempt \(spec.attempt) of \(spec.maxAttempts) ---\n")
        }
        try? spec.stateDir.makeDirectory(paths.scratch)

        var exitCode: Int32 = 127
        var signal: Int32? = nil
        var reason: String? = nil
        var childPID: Int32? = nil
        var outside = (killed: 0, letGo: 0, left: 0) // processes of the mission outside its session at the end
        var isDirectory = false
        if !FileManager.default.fileExists(atPath: spec.workingDirectory, isDirectory: &isDirectory) || !isDirectory {
            reason = spec.workspace != nil ? "cannot start \(spec.argv[0]): its workspace slot \(spec.workingDirectory) does not exist (the slot is cloned again when the mission ends)"
                : "cannot start \(spec.argv[0]): its working directory \(spec.cwd) does not exist"
        } else {
            var options = Spawner.Options()
            options.newSession = false
            options.newProcessGroup = true
            options.workingDirectory = spec.workingDirectory
            // A clean environment (docs/missions.md, "Environment"); VIGIL_STATE_DIR and
            // VIGIL_MISSION_ID also tag every process of the mission, wherever it goes.
            options.inheritEnvironment = false
            options.environment = MissionEnvironment.make(from: ProcessInfo.processInfo.environment, passing: spec.settings.passEnv, mission: [
                "VIGIL_STATE_DIR": spec.stateDir.path,
                "VIGIL_MISSION_ID": "\(spec.mission)",
                "VIGIL_MISSION_ATTEMPT": "\(spec.attempt)",
                "VIGIL_MISSION_SCRATCH": paths.scratch,
            ])
            if let w = spec.workspace { options.environment["VIGIL_WORKSPACE"] = w }
            // The newest checkpoint that verifies (docs/missions.md, "Checkpoints").
            let checkpoints = CheckpointStore(stateDir: spec.stateDir, mission: spec.mission)
            if let newest = checkpoints.newestValid(files: StateFiles(dir: spec.stateDir, journal: Journal(path: spec.stateDir.journal, source: "shim"))) {
                options.environment["VIGIL_CHECKPOINT"] = newest.data
                output.note("--- vigil: resuming from checkpoint \(newest.seq) (saved by attempt \(newest.meta?.attempt ?? 0)) ---\n")
            }
            // Output through us (a pipe), so the cap holds whatever the mission writes.
            // (The shim has one thread: nothing can spawn between pipe and FD_CLOEXEC.)
            let made: (read: FileDescriptor, write: FileDescriptor)?
            do { made = try FileDescriptor.pipe() } catch {
                made = nil
                reason = "cannot make the output pipe: \(error.reason)"
            }
            if let pipe = made {
                let pipeFDs = [pipe.read.rawValue, pipe.write.rawValue]
                options.outputDescriptor = pipeFDs[1]
                // The command is born in the mission's cgroup: we enter it to spawn and leave.
                var noCgroup: String? = nil
                let entered = MissionCgroup.enter(spec.stateDir, mission: spec.mission, why: &noCgroup)
                var group = entered?.group
                func leave() {
                    guard let entered else { return }
                    do { try entered.home.add() } catch {
                        // Still inside: `cgroup.kill` would end us too; the tag and the
                        // session find the mission's processes instead.
                        output.note("vigil: cannot leave the mission's cgroup (\(error)); its processes are found by their tag\n")
                        group = nil
                    }
                }
                do {
                    let child: ProcessIdentity
                    do { child = try Spawner.spawn(spec.argv, options) } catch { leave(); throw error }
                    leave()
                    pipe.write.close()
                    childPID = child.pid
                    pump(pipeFDs[0], until: child, into: &output)
                    // The zombie pins its process group: kill what the mission left behind,
                    // then its cgroup (everything it started, wherever), then any other group it
                    // made in our session, then every process that carries the mission's tag
                    // (where there is no cgroup), then reap.
                    ProcessGroup(id: child.pid).signal(.kill)
                    var killedInCgroup = 0 // of them outside our session, for the counts below
                    if let group, !spec.letDaemonsGo {
                        killedInCgroup = group.cgroup.processes().filter { ProcStat.read(pid: $0).map { $0.session != ThisProcess.pid } ?? false }.count
                        let ended = group.kill()
                        if ended.left { output.note("vigil: the mission's cgroup \(group.cgroup) still has processes after SIGKILL\n") }
                    }
                    MissionProcesses.killSession(of: ProcessIdentity.current, sparingShim: true, patience: .milliseconds(200))
                    // Only processes started after us: one an older row of the same id let go is not ours.
                    let since = ProcessIdentity.current.startTicks
                    if !spec.letDaemonsGo {
                        let tagged = MissionProcesses.killMembers(of: spec.stateDir, mission: spec.mission, startedSince: since)
                        let killed = tagged.killed + killedInCgroup
                        if killed > 0 {
                            output.note("vigil: killed \(killed) process\(killed == 1 ? "" : "es") of the mission outside its session\n")
                        }
                        if tagged.left > 0 { output.note("vigil: \(tagged.left) process(es) of the mission outlived SIGKILL\n") }
                        outside = (killed, 0, tagged.left)
                    } else {
                        // --let-daemons-go: what left the session lives on, and is forgotten (docs/missions.md).
                        // Out of the mission's cgroup first (into its parent), so the cgroup can go.
                        let released = group?.release() ?? 0
                        outside.letGo = max(released, MissionProcesses.members(of: spec.stateDir)
                            .filter { $0.mission == spec.mission && $0.identity.startTicks >= since }.count)
                        if outside.letGo > 0 {
                            output.note("vigil: let \(outside.letGo) process\(outside.letGo == 1 ? "" : "es") of the mission outside its session go (--let-daemons-go)\n")
                        }
                    }
                    drain(pipeFDs[0], into: &output)
                    if let status = Spawner.wait(child.pid) {
                        exitCode = exitCodeFromStatus(status)
                        signal = terminatingSignal(fromWaitStatus: status)
                    } else {
                        reason = "lost track of its process (waitpid failed)"
                        exitCode = 255
                    }
                } catch {
                    pipe.write.close()
                    reason = "\(error)"
                }
                pipe.read.close()
            }
        }
        if let reason { output.note("vigil: \(reason)\n") }

        CrashPoint.hit("shim-before-result")
        try? FileDescriptor.standardOutput.sync()
        try? FileManager.default.removeItem(atPath: paths.scratch)
        let result = MissionResult(mission: spec.mission, attempt: spec.attempt, exitCode: exitCode, signal: signal, reason: reason,
                                   childPID: childPID, started: started, finished: Clock.iso(Clock.wall()),
                                   outsideKilled: outside.killed > 0 ? outside.killed : nil, outsideLetGo: outside.letGo > 0 ? outside.letGo : nil,
                                   outsideLeft: outside.left > 0 ? outside.left : nil)
        // The mission has run: if the result cannot be written now (a full disk, say), keep
        // trying instead of exiting without one, which would make the runner start the
        // mission again. A fresh temp file each try; the runner sees us alive meanwhile.
        let giveUp = Clock.boot() + resultPatience
        var pause = TimeSpan.milliseconds(50)
        var noted = false
        while true {
            do {
                try StateFile.write(result, kind: MissionResult.kind, to: paths.result)
                if noted { output.note("vigil: result file written after all\n") }
                return 0
            } catch {
                if !noted {
                    output.note("vigil: cannot write the result file \(paths.result): \(error); retrying\n")
                    noted = true
                }
                if Clock.boot() + pause > giveUp {
                    output.note("vigil: giving up on the result file after \(resultPatience): \(error)\n")
                    return 1
                }
                ThisProcess.pause(pause)
                pause = min(pause * 2, .seconds(1))
            }
        }
    }

    /// How long the shim keeps trying to write its result file.
    static let resultPatience = TimeSpan.seconds(3600)

    static func exitCodeFromStatus(_ status: Int32) -> Int32 { VigilSystem.exitCode(fromWaitStatus: status) }

    /// Copies the mission's output from the pipe `fd` into `output` until `child` has exited
    /// (left a zombie) or every writer closed the pipe (then waits for the child).
    static func pump(_ fd: Int32, until child: ProcessIdentity, into output: inout MissionOutput) {
        // No pidfd when the child exited before we opened one (a `setsid -f` parent exits at
        // once; `openPidFD` refuses a zombie): then look every 100 ms.
        let pidfd = child.openPidFD()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            // The child's exit first, at every turn: a process it left behind (its own session)
            // may write so often that the pipe is readable at every poll, and reading first
            // would never get here (what it writes is drained after it is killed).
            if Spawner.hasExited(child.pid) { return }
            let ready = pollReadable([fd] + (pidfd.map { [$0.fd] } ?? []), timeoutMilliseconds: pidfd == nil ? 100 : -1)
            if let pidfd, ready.contains(pidfd.fd) { return }
            if ready.contains(fd) {
                let n = (try? buf.withUnsafeMutableBytes { (b) throws(SystemError) in try FileDescriptor(rawValue: fd).read(into: b) }) ?? 0
                if n > 0 {
                    output.write(Data(buf[0..<n]))
                    continue
                }
                Spawner.waitWithoutReaping(child.pid) // end of file (or a read error): no writer is left
                return
            }
        }
    }

    /// Copies what is left in the pipe (the mission's processes are gone or killed) without
    /// waiting for more.
    static func drain(_ fd: Int32, into output: inout MissionOutput) {
        let file = FileDescriptor(rawValue: fd)
        file.setNonBlocking()
        // Up to the cap; nothing more to read now (EAGAIN) or an error ends it.
        _ = try? file.readChunks(limit: Int(output.cap)) { output.write(Data($0)); return true }
    }
}
