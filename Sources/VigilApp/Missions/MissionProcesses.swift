import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// Finding and signalling the processes of missions through /proc. See docs/missions.md,
/// "Shim protocol": a shim is the leader of its own session S; the mission runs in other
/// process groups of S.
enum MissionProcesses {
    /// A running `vigil shim` of one state directory, recognised by its argv.
    struct ShimProcess: Equatable {
        var identity: ProcessIdentity
        var mission: Int64
        var attempt: Int
    }

    /// A process whose environment says it belongs to a mission of one state directory.
    struct MemberProcess: Equatable {
        var identity: ProcessIdentity
        var mission: Int64
        var session: Int32
    }

    /// The argv a runner gives a shim. Fixed positions, so /proc can be matched cheaply.
    static func shimArguments(executable: String, stateDir: StateDirectory, mission: Mission, settings: MissionSettings = .init()) -> [String] {
        var argv = [executable, "shim", "--state-dir", stateDir.path, "--mission", "\(mission.id)", "--attempt", "\(mission.attempts)",
                    "--max-attempts", "\(mission.maxAttempts)", "--cwd", mission.cwd, "--output-cap", "\(settings.outputCap)"]
        if !settings.passEnv.isEmpty { argv += ["--pass-env", settings.passEnv.joined(separator: ",")] }
        if mission.letDaemonsGo { argv.append("--let-daemons-go") }
        if let repo = mission.workspace, let slot = mission.slot { argv += ["--workspace", stateDir.workspaceSlot(repo: repo, id: slot)] }
        return argv + ["--"] + mission.argv
    }

    static func parseShim(_ argv: [String], stateDir: StateDirectory) -> (mission: Int64, attempt: Int)? {
        guard argv.count >= 8, argv[1] == "shim", argv[2] == "--state-dir", argv[3] == stateDir.path,
              argv[4] == "--mission", argv[6] == "--attempt",
              let id = Int64(argv[5]), let attempt = Int(argv[7]) else { return nil }
        return (id, attempt)
    }

    /// Every live (non-zombie) shim of `stateDir`.
    static func shims(of stateDir: StateDirectory) -> [ShimProcess] {
        var out: [ShimProcess] = []
        for pid in allPIDs() {
            guard let data = readFile("/proc/\(pid)/cmdline", limit: 64 << 10), data.count > 6 else { continue }
            let argv = data.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            guard let (mission, attempt) = parseShim(argv, stateDir: stateDir),
                  let identity = ProcessIdentity.of(pid: pid) else { continue }
            out.append(ShimProcess(identity: identity, mission: mission, attempt: attempt))
        }
        return out
    }

    /// Every live process (not a shim) whose environment names a mission of `stateDir`.
    static func members(of stateDir: StateDirectory) -> [MemberProcess] {
        let dirMark = Array("VIGIL_STATE_DIR=\(stateDir.path)".utf8)
        let idMark = Array("VIGIL_MISSION_ID=".utf8)
        var out: [MemberProcess] = []
        for pid in allPIDs() where pid != ThisProcess.pid {
            guard let env = readFile("/proc/\(pid)/environ", limit: 1 << 20) else { continue }
            var mission: Int64? = nil
            var ours = false
            for entry in env.split(separator: 0) {
                if entry.elementsEqual(dirMark) { ours = true }
                if entry.starts(with: idMark) { mission = Int64(String(decoding: entry.dropFirst(idMark.count), as: UTF8.self)) }
            }
            guard ours, let mission, let stat = ProcStat.read(pid: pid), !stat.isZombie else { continue }
            out.append(MemberProcess(identity: ProcessIdentity(pid: pid, startTicks: stat.startTicks), mission: mission, session: stat.session))
        }
        return out
    }

    /// Sends `signal` to every process group of the session led by `shim` (its pid is the
    /// session id), except the shim's own group when `sparingShim`. Returns the groups signalled.
    ///
    /// Safe against PID reuse: while the shim lives the session id is pinned, so every member
    /// is a mission process. After the shim died, a different process holding its PID means
    /// the id was reused, which the kernel allows only once our session is empty: nothing is
    /// sent then.
    @discardableResult
    static func signalSession(of shim: ProcessIdentity, _ signal: Signal, sparingShim: Bool) -> Int {
        let sid = shim.pid
        if let leader = ProcStat.read(pid: sid), leader.startTicks != shim.startTicks { return 0 }
        var groups = Set<Int32>()
        for pid in allPIDs() {
            guard let st = ProcStat.read(pid: pid), st.session == sid, !st.isZombie else { continue }
            if sparingShim && st.processGroup == sid { continue }
            groups.insert(st.processGroup)
        }
        for g in groups where g > 1 { ProcessGroup(id: g).signal(signal) }
        return groups.count
    }

    /// SIGKILLs everything left in a dead (or doomed) shim's session, including the shim, and
    /// waits up to `patience` until none of it runs (zombies count as gone), so a requeued
    /// attempt never overlaps the old one. Returns the groups signalled.
    @discardableResult
    static func killSession(of shim: ProcessIdentity, sparingShim: Bool = false, patience: TimeSpan = .milliseconds(500)) -> Int {
        var total = 0
        let deadline = Clock.boot() + patience
        while true {
            let n = signalSession(of: shim, .kill, sparingShim: sparingShim)
            total += n
            if n == 0 || Clock.boot() >= deadline { return total }
            ThisProcess.pause(.milliseconds(2))
        }
    }

    /// Sends `signal` to every live process tagged with `mission` of `stateDir` (its
    /// environment) outside `session` (0: wherever it is) that started at or after
    /// `startedSince` (start ticks: those of the attempt's shim, so a process an older row of
    /// the same id let go is spared). Returns how many were signalled.
    ///
    /// - Important: a process of another user whose environment we cannot read, or one that
    ///   cleared its environment, is not found (docs/missions.md, "Every process of a mission").
    @discardableResult
    static func signalMembers(of stateDir: StateDirectory, mission: Int64, _ signal: Signal, outside session: Int32 = 0, startedSince: UInt64 = 0) -> Int {
        var n = 0
        for p in members(of: stateDir) where p.mission == mission && (session == 0 || p.session != session) && p.identity.startTicks >= startedSince {
            if p.identity.signal(signal) { n += 1 }
        }
        return n
    }

    /// SIGKILLs every process tagged with `mission` of `stateDir` and waits until none is left
    /// (zombies count as gone), so the mission's end (and its lock) comes only after all of
    /// them, up to `patience` (a process stuck in the kernel can outlast SIGKILL). Returns how
    /// many were killed and how many were still there at the end. `startedSince`: as for
    /// `signalMembers`.
    @discardableResult
    static func killMembers(of stateDir: StateDirectory, mission: Int64, patience: TimeSpan = .seconds(30), startedSince: UInt64 = 0) -> (killed: Int, left: Int) {
        var killed = Set<ProcessIdentity>()
        var pause = TimeSpan.milliseconds(1)
        let deadline = Clock.boot() + patience
        while true {
            let left = members(of: stateDir).filter { $0.mission == mission && $0.identity.startTicks >= startedSince }
            if left.isEmpty || Clock.boot() >= deadline { return (killed.count, left.count) }
            for p in left where p.identity.signal(.kill) { killed.insert(p.identity) }
            ThisProcess.pause(pause)
            pause = min(TimeSpan(nanoseconds: pause.nanoseconds * 2), .milliseconds(100))
        }
    }

    static func allPIDs() -> [Int32] { ProcessTable.allPIDs() }

    /// Reads a whole (small) file of /proc; nil when it cannot be opened.
    static func readFile(_ path: String, limit: Int) -> [UInt8]? { KernelFile.read(path, limit: limit) }
}

/// The cgroup v2 of one mission (docs/missions.md, "Every process of a mission"):
/// `<the runner's cgroup>/vigil-<CRC-32 of the state dir's path>/mission-<id>`. The shim
/// enters it just long enough to spawn the mission's command, so the command and everything it
/// starts, in any session, with any environment, are born in it; the shim itself is not.
/// Where no cgroup2 hierarchy is mounted or it is not writable (not root, no delegation), there
/// is none and the environment tag alone finds the mission's processes.
struct MissionCgroup {
    let cgroup: Cgroup

    /// The parent of every mission cgroup of `stateDir`, under the cgroup of this process (the
    /// runner's, which its shims inherit). Nil without a cgroup2 hierarchy.
    static func base(of stateDir: StateDirectory) -> Cgroup? {
        guard let own = Cgroup.ofCurrentProcess() else { return nil }
        let tag = String(CRC32.checksum(Array(stateDir.path.utf8)), radix: 16)
        // A shim (or a test) that is inside one of our mission cgroups looks from its parent.
        var home = own
        if Path.lastComponent(home.path).hasPrefix("mission-"),
           Path.lastComponent(Path.parent(home.path)) == "vigil-\(tag)" {
            home = Cgroup(path: Path.parent(Path.parent(home.path)))
        }
        return home.child("vigil-\(tag)")
    }

    /// Whether missions get cgroups here: the parent's path when it can be made, else why not
    /// (journaled at start-up recovery, `missions-recovered`).
    static func probe(_ stateDir: StateDirectory) -> String {
        guard let base = base(of: stateDir), let home = base.parent else { return "none: no cgroup v2 hierarchy is mounted" }
        if base.exists || home.isWritable { return base.path }
        return "none: \(home) is not writable by uid \(ThisProcess.userID)"
    }

    /// Every mission cgroup of `stateDir` that exists, by mission id.
    static func all(of stateDir: StateDirectory) -> [(Int64, MissionCgroup)] {
        guard let base = base(of: stateDir), let names = try? FileManager.default.contentsOfDirectory(atPath: base.path) else { return [] }
        return names.compactMap { name in
            guard name.hasPrefix("mission-"), let id = Int64(name.dropFirst(8)) else { return nil }
            return (id, MissionCgroup(cgroup: base.child(name)))
        }.sorted { $0.0 < $1.0 }
    }

    /// The cgroup of `mission`, whether or not it exists.
    static func of(_ stateDir: StateDirectory, mission: Int64) -> MissionCgroup? {
        base(of: stateDir).map { MissionCgroup(cgroup: $0.child("mission-\(mission)")) }
    }

    /// For the shim, before spawning the command: makes the cgroup (killing what an earlier
    /// attempt may have left in it) and moves this process into it. Returns the cgroup to
    /// leave again, or nil (no cgroup: the reason is in `why`).
    static func enter(_ stateDir: StateDirectory, mission: Int64, why: inout String?) -> (group: MissionCgroup, home: Cgroup)? {
        guard let home = Cgroup.ofCurrentProcess(), let group = of(stateDir, mission: mission) else {
            why = "no cgroup v2 hierarchy is mounted"
            return nil
        }
        do {
            try group.cgroup.create()
            if group.cgroup.isPopulated { _ = group.kill(patience: .seconds(5)) }
            try group.cgroup.add()
            return (group, home)
        } catch {
            why = "cannot use the cgroup \(group.cgroup): \(error)"
            try? group.cgroup.remove()
            return nil
        }
    }

    /// SIGKILLs every process in the cgroup and waits until it is empty (up to `patience`),
    /// then removes it. Returns how many were listed and whether it is still populated.
    @discardableResult
    func kill(patience: TimeSpan = .seconds(30)) -> (killed: Int, left: Bool) {
        guard cgroup.exists else { return (0, false) }
        // The calling process must not be in it (`cgroup.kill` would kill it too).
        if Cgroup.ofCurrentProcess() == cgroup { return (0, true) }
        let killed = cgroup.killAll()
        let left = !cgroup.waitUntilEmpty(timeout: patience)
        if !left {
            try? cgroup.remove()
            try? cgroup.parent?.remove() // the state dir's parent group, when no other mission has one (EBUSY)
        }
        return (killed, left)
    }

    /// `--let-daemons-go`: moves every process left in the cgroup to its parent (they live on,
    /// no longer the mission's) and removes the cgroup. Returns how many were moved.
    @discardableResult
    func release() -> Int {
        guard cgroup.exists, let parent = cgroup.parent else { return 0 }
        var moved = 0
        // Members pinned by pidfd (the PID is written, but only while its process is ours).
        for m in cgroup.members() where !m.hasExited && (try? parent.add(pid: m.identity.pid)) != nil { moved += 1 }
        try? cgroup.remove()
        return moved
    }

    /// Sends `signal` to every process in the cgroup (the first step of a cancel).
    @discardableResult
    func signal(_ signal: Signal) -> Int { cgroup.signalAll(signal) }
}

/// Fault injection for crash tests: `VIGIL_MISSIONS_CRASH_AT=name[,name…]` makes the process
/// SIGKILL itself when it reaches that point. Names are listed in docs/missions.md.
enum CrashPoint {
    static let armed: Set<String> = Set(
        (ProcessInfo.processInfo.environment["VIGIL_MISSIONS_CRASH_AT"] ?? "").split(separator: ",").map(String.init))

    static func hit(_ name: String) {
        if !armed.isEmpty && armed.contains(name) { ThisProcess.raise(.kill) }
    }
}
