import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// What no running attempt claims (read-only: recovery's last step acts on it, `vigil doctor` reports it).
extension MissionRunner {
    // MARK: - Orphans (read-only: recovery's last step acts on them, `vigil doctor` reports them)

    /// Live shims of `stateDir` that are none of `claimed` (the shims of running attempts).
    static func orphanShims(of stateDir: StateDirectory, claimed: Set<ProcessIdentity>) -> [MissionProcesses.ShimProcess] {
        MissionProcesses.shims(of: stateDir).filter { !claimed.contains($0.identity) }
    }

    /// Mission processes of `stateDir` (by environment) whose mission has not ended and that no
    /// live shim runs (docs/missions.md, "Every process of a mission"): outside
    /// `claimedSessions`, of a mission not in `watched` (running with a live shim, whose shim
    /// decides at the end), and whose mission has not ended. A mission has ended when its row is
    /// final or its directory holds its result (its shim killed or let go what was left then):
    /// what still lives of it is forgotten, never killed. A mission with no row and no
    /// directory is not known here: its processes are left alone too.
    static func orphanProcesses(of stateDir: StateDirectory, _ q: MissionQueue, claimedSessions: Set<Int32>,
                                watched: Set<Int64>) throws -> [MissionProcesses.MemberProcess] {
        // A process in the session of a live shim of its mission is that shim's business: a
        // claimed one decides at the end, an orphan one is killed with its session (a shim that
        // appeared after `orphanShims` looked, from a spawn a killed runner never recorded,
        // is left to the next recovery).
        let candidates = MissionProcesses.members(of: stateDir).filter { p in
            guard !claimedSessions.contains(p.session), !watched.contains(p.mission) else { return false }
            if let leader = ProcStat.read(pid: p.session), !leader.isZombie,
               MissionProcesses.parseShim(ProcStat.commandLine(pid: p.session), stateDir: stateDir)?.mission == p.mission { return false }
            return true
        }
        let ids = Array(Set(candidates.map(\.mission))).sorted()
        let states = try q.states(ids)
        var notEnded = Set<Int64>()
        for id in ids where !(states[id]?.isFinal ?? false) {
            let paths = MissionPaths(stateDir: stateDir, id: id)
            if case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self), r.mission == id { continue }
            if states[id] == nil && !FileSystem.exists(paths.directory) { continue }
            notEnded.insert(id)
        }
        return candidates.filter { notEnded.contains($0.mission) }
    }

    /// Mission directories with no row (recovery moves them to quarantine/), and scratch
    /// directories of missions that are not in `running`.
    static func orphanPaths(of stateDir: StateDirectory, _ q: MissionQueue, running: Set<Int64>) throws -> (directories: [String], scratch: [String]) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: stateDir.missions)) ?? []
        let ids = names.compactMap { Int64($0) }.sorted()
        let existing = try q.existing(ids)
        var directories: [String] = []
        var scratch: [String] = []
        for id in ids where !running.contains(id) {
            let paths = MissionPaths(stateDir: stateDir, id: id)
            if !existing.contains(id) {
                directories.append(paths.directory)
            } else if FileSystem.exists(paths.scratch) {
                scratch.append(paths.scratch)
            }
        }
        return (directories, scratch)
    }
}
