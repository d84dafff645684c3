import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// What one auto-recover pass found and did (`vigil workspace auto-recover --json`; the names
/// are the contract of docs/workspaces.md, "Anomalies and auto-recover").
struct AutoRecoverReport: Equatable {
    var counts = AutoRecoverCounts()
    /// One line per problem left (a repair that failed, a slot that could not be looked at).
    var errors: [String] = []
    /// One line per thing found or done, for people.
    var found: [String] = []
    var slots = 0
    var fsck = false

    var foundAnything: Bool { !found.isEmpty || !errors.isEmpty }

    var fields: [String: JSONValue] {
        ["long_allocated_released": .int(Int64(counts.longAllocatedReleased)), "long_allocated_seen": .int(Int64(counts.longAllocatedSeen)),
         "corrupted_recovered": .int(Int64(counts.corruptedRecovered)), "corrupted_isolated": .int(Int64(counts.corruptedIsolated)),
         "orphaned_locks_cleaned": .int(Int64(counts.orphanedLocksCleaned)), "errors": .array(errors.map { .string($0) }),
         "slots": .int(Int64(slots)), "fsck": .bool(fsck)]
    }

    /// One message for chat (empty when nothing was found).
    var text: String {
        guard foundAnything else { return "" }
        return (["Workspaces: auto-recover found \(found.count + errors.count) problem\(found.count + errors.count == 1 ? "" : "s"):"]
                + found.map { "- " + $0 } + errors.map { "- not repaired: " + $0 }).joined(separator: "\n")
    }
}

/// Looks at every slot and applies the conservative strategy (`WorkspaceSlots.autoRecover`):
/// what the core decides, done with real git on disk (`SlotCheckout`) and stored through
/// `WorkspaceStore` (docs/workspaces.md, "Anomalies and auto-recover"). Used by `vigil
/// workspace auto-recover`, by the runner's periodic pass (that command, as its child) and by
/// `vigil doctor` (`survey` only, or `--fix`).
struct WorkspaceCheck {
    let stateDir: StateDirectory
    let store: WorkspaceStore
    let queue: MissionQueue
    let journal: Journal
    var git = GitSettings()

    /// What the pass would find, without changing anything (doctor). Slots a worker holds are skipped.
    func survey(fsck: Bool) throws -> [(slot: WorkspaceSlot, survey: SlotSurvey)] {
        // Slots first, then missions: a slot allocated when read is to a mission that is still
        // running, or that ended (and released it) — never one claimed after "running" was read.
        // The release itself checks again in its transaction (`releaseIfOrphaned`).
        let slots = try store.slots()
        let running = Set(try queue.running().map(\.id))
        var repos: [String: WorkspaceRepo] = [:]
        for r in try store.repos() { repos[r.name] = r }
        var out: [(WorkspaceSlot, SlotSurvey)] = []
        for s in slots {
            var v = SlotSurvey(record: s.record, missionRunning: s.record.mission.map(running.contains) ?? false)
            if s.record.phase == .available, let repo = repos[s.repo] {
                // Looked at only while nobody works in it (a worker holds the lock while git runs).
                guard let lock = try? FileLock.tryLock(s.lockPath(in: stateDir)) else { continue }
                let checkout = SlotCheckout(path: s.path(in: stateDir), url: repo.url, branch: repo.branch, settings: git)
                v.damage = checkout.inspect(fsck: fsck)
                v.staleLocks = v.damage == nil ? checkout.staleLocks().count : 0
                lock.release()
            }
            out.append((s, v))
        }
        return out
    }

    /// One pass: survey, then each slot's step. Repairs run here (inline, under the slot's lock).
    func run(options: AutoRecoverOptions, fsck: Bool, by: String) throws -> AutoRecoverReport {
        var report = AutoRecoverReport()
        report.fsck = fsck
        let now = Clock.wall().timeIntervalSince1970
        let worker = SlotWorker(stateDir: stateDir, store: store, journal: journal, git: git)
        let surveyed = try survey(fsck: fsck)
        report.slots = surveyed.count
        for (s, v) in surveyed {
            let (step, c) = WorkspaceSlots.autoRecover(v, options: options, now: now)
            let name = "slot \(s.id) (\(s.repo))"
            var counts = c
            switch step {
            case .none:
                if c.longAllocatedSeen > 0, let m = s.record.mission {
                    report.found.append("\(name) allocated to mission \(m) for \(hours(now - (s.record.allocatedAt ?? now))) h (left alone; --force-release-long cancels it)")
                }
            case .cancelMission(let m):
                let outcome = try queue.requestCancel(id: m)
                MissionRunner.poke(stateDir, journal: journal)
                report.found.append("\(name): mission \(m) held it for \(hours(now - (s.record.allocatedAt ?? now))) h: cancel asked (\(outcome)); the slot is cleaned when it ends")
            case .removeLocks:
                guard let repo = try store.repo(s.repo), let lock = try? FileLock.tryLock(s.lockPath(in: stateDir)) else { continue }
                let checkout = SlotCheckout(path: s.path(in: stateDir), url: repo.url, branch: repo.branch, settings: git)
                let files = checkout.staleLocks()
                let n = checkout.removeStaleLocks()
                lock.release()
                journal.append(.workspaceLocksRemoved, ["slot": .int(s.id), "repo": .string(s.repo), "files": .array(files.map { .string($0) })])
                report.found.append("\(name): \(n) stale git lock file\(n == 1 ? "" : "s") removed (\(files.joined(separator: ", ")))")
            case .event(let e):
                // An orphaned allocation is released only if its mission is still not running.
                let applied: WorkspaceSlot?
                if case .orphaned = e {
                    applied = try store.releaseIfOrphaned(s.id) != nil ? try store.slot(s.id) : nil
                } else {
                    applied = try store.apply(e, to: s.id)?.after
                }
                guard let after = applied else { continue } // moved on meanwhile: nothing to do
                switch e {
                case .orphaned:
                    journal.append(.workspaceSlotOrphaned, ["slot": .int(s.id), "repo": .string(s.repo), "mission": s.record.mission.map { .int($0) } ?? .null, "by": .string(by)])
                    report.found.append("\(name) was allocated to mission \(s.record.mission.map { "\($0)" } ?? "?"), which does not run: cleaned and released")
                case .isolate(let reason, _):
                    journal.append(.workspaceSlotIsolated, ["slot": .int(s.id), "repo": .string(s.repo), "reason": .string(reason), "by": .string(by)])
                    report.found.append("\(name) is damaged (\(reason)): isolated (--no-recover-corrupted)")
                default:
                    journal.append(.workspaceSlotRecover, ["slot": .int(s.id), "repo": .string(s.repo), "reason": .string(s.record.reason ?? v.damage ?? ""), "force": false, "by": .string(by)])
                }
                if after.record.phase == .cleaning || after.record.phase == .cloning {
                    let outcome = try worker.prepare(s.id, generation: after.record.generation, lockWait: git.timeout * 2)
                    let why = v.damage ?? s.record.reason ?? "in error"
                    switch (e, outcome) {
                    case (.orphaned, .error(let reason)):
                        report.errors.append("\(name): cleaning after mission \(s.record.mission ?? 0) failed: \(reason)")
                    case (.orphaned, _):
                        break
                    case (_, .available):
                        report.found.append("\(name) was damaged (\(why)): repaired")
                    case (_, .error(let reason)):
                        counts.corruptedRecovered = 0
                        counts.corruptedIsolated = 1
                        report.errors.append("\(name) was damaged (\(why)) and could not be repaired: \(reason) (isolated; vigil workspace recover \(s.id) [--force])")
                    case (_, .busy), (_, .stale):
                        break // a worker has it: the runner's next pass sees how it ended
                    }
                }
            }
            report.counts.longAllocatedReleased += counts.longAllocatedReleased
            report.counts.longAllocatedSeen += counts.longAllocatedSeen
            report.counts.corruptedRecovered += counts.corruptedRecovered
            report.counts.corruptedIsolated += counts.corruptedIsolated
            report.counts.orphanedLocksCleaned += counts.orphanedLocksCleaned
        }
        var fields = report.fields
        fields["by"] = .string(by)
        journal.append(.workspaceAutoRecovered, fields)
        return report
    }

    private func hours(_ seconds: Double) -> String { DecimalText.fixed(seconds / 3600, places: 1) }
}
