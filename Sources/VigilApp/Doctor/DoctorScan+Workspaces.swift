import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil doctor`: workspace anomalies (docs/workspaces.md, "Anomalies and auto-recover"), as the
/// auto-recover pass sees them (`WorkspaceCheck.survey`, quick checks, no fsck). `--fix` runs
/// the conservative pass (never interrupting a live mission) and finishes cleanups and clones
/// nobody works on.
extension DoctorScan {
    func checkWorkspaces(_ db: Database) throws {
        guard schemaVersion >= 8 else { return }
        let store = WorkspaceStore(db: db)
        let check = WorkspaceCheck(stateDir: dir, store: store, queue: MissionQueue(db: db), journal: Journal(path: dir.journal, source: "doctor"))
        let now = Clock.wall().timeIntervalSince1970
        let limit = AutoRecoverOptions().maxAllocation
        for (s, v) in try check.survey(fsck: false) {
            let subject = "slot \(s.id) (\(s.repo))"
            let r = s.record
            switch r.phase {
            case .allocated where !v.missionRunning:
                add(DoctorFinding(check: "workspaces.orphaned", subject: subject, severity: .warning,
                                  what: "allocated to mission \(r.mission ?? 0), which does not run",
                                  why: "nobody works in it, and no mission can get it until it is cleaned",
                                  action: "vigil workspace auto-recover (the runner does at its next pass)", repair: .workspaceAutoRecover))
            case .allocated:
                if let at = r.allocatedAt, now - at > limit.seconds {
                    add(DoctorFinding(check: "workspaces.long-allocated", subject: subject, severity: .warning,
                                      what: "allocated to mission \(r.mission ?? 0) for \(Doctor.age(.seconds(now - at)))",
                                      why: "a mission holding a slot this long may be stuck; missions of \(s.repo) wait for its slots",
                                      action: "vigil mission show \(r.mission ?? 0); vigil mission cancel \(r.mission ?? 0), or vigil workspace auto-recover --force-release-long"))
                }
            case .available:
                if let damage = v.damage {
                    add(DoctorFinding(check: "workspaces.corrupted", subject: subject, severity: .warning, what: damage,
                                      why: "a mission handed this slot would fail or work on a broken checkout",
                                      action: "vigil workspace recover \(s.id) (or auto-recover)", repair: .workspaceAutoRecover))
                } else if v.staleLocks > 0 {
                    add(DoctorFinding(check: "workspaces.stale-locks", subject: subject, severity: .warning,
                                      what: "\(v.staleLocks) stale git lock file\(v.staleLocks == 1 ? "" : "s") in an idle slot",
                                      why: "git refuses to work in it while they are there", action: "vigil workspace auto-recover", repair: .workspaceAutoRecover))
                }
            case .error:
                add(DoctorFinding(check: "workspaces.error", subject: subject, severity: r.isolatedByPerson ? .info : .warning,
                                  what: (r.isolatedByPerson ? "isolated by an operator" : "out of use") + (r.reason.map { ": \($0)" } ?? ""),
                                  why: "never handed to a mission until recovered",
                                  action: "vigil workspace recover \(s.id) [--force]",
                                  repair: r.isolatedByPerson ? nil : .workspaceAutoRecover))
            case .cleaning, .cloning:
                guard FileLock.isFree(s.lockPath(in: dir)), FileLock.isFree(dir.lock(.runner)) else { continue }
                add(DoctorFinding(check: "workspaces.unfinished", subject: subject, severity: .warning,
                                  what: "\(r.phase == .cloning ? "to be cloned" : "to be cleaned"), and no worker and no runner is there",
                                  why: "missions of \(s.repo) wait for it", action: "start the pair (the runner finishes it), or vigil doctor --fix",
                                  repair: .workspaceAutoRecover))
            }
        }
    }
}
