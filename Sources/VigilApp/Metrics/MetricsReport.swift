import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// What `vigil metrics` prints and the runner's `/metrics` serves: the journal totals
/// (`MetricsTotals`) and gauges read now from the small state files (`PairHealth`,
/// `chat/status.json`) and the database (read only). The names and labels are listed in
/// docs/operator-guide.md, "Probes and metrics".
enum MetricsReport {
    static func render(_ dir: StateDirectory, tunables: Tunables, totals: MetricsTotals) -> String {
        var x = Exposition()
        totals.write(to: &x)
        let pair = PairHealth.read(dir, tunables: tunables, versionWhenRunnerDown: false)

        x.family("vigil_bridge_up", .gauge, "1 when the bridge runs and its heartbeat is fresh (verdict healthy, drifted or bloated).")
        x.sample("vigil_bridge_up", [], pair.bridgeUp ? 1 : 0)
        x.family("vigil_bridge_verdict", .gauge, "The bridge's verdict now: 1 for the current one, 0 for the others.")
        for v in Verdict.allCases { x.sample("vigil_bridge_verdict", ["verdict": v.rawValue], pair.probe.verdict == v ? 1 : 0) }
        x.family("vigil_runner_up", .gauge, "1 when the runner runs and its heartbeat is fresh (within its stale bound).")
        x.sample("vigil_runner_up", [], pair.runnerBeating ? 1 : 0)
        x.family("vigil_heal_tier", .gauge, "The heal tier of the incident in progress (0: none; 4: circuit open).")
        x.sample("vigil_heal_tier", [], Double(pair.heal.displayTier))
        x.family("vigil_heal_circuit_state", .gauge, "The heal circuit: 1 for the current state (closed, open, half-open), 0 for the others.")
        for c in [Circuit.closed, .open, .halfOpen] { x.sample("vigil_heal_circuit_state", ["state": c.rawValue], pair.heal.circuit == c ? 1 : 0) }
        x.family("vigil_heal_failed_respawns", .gauge, "Failed respawns in a row of the incident in progress.")
        x.sample("vigil_heal_failed_respawns", [], Double(pair.heal.failedRespawns))
        x.family("vigil_probe_cpu_seconds", .gauge, "CPU time of one quiet probe-and-decide of the runner (median of the last 64).")
        if let us = pair.runner?.probeCPUMicros, pair.runnerAlive { x.sample("vigil_probe_cpu_seconds", [], us / 1e6) }

        x.family("vigil_chat_circuit_state", .gauge, "Each chat adapter's delivery circuit (chat/status.json, written by the bridge): 1 for the current state.")
        if let adapters = ChatService.readStatus(dir) {
            for a in adapters.sorted(by: { $0.adapter < $1.adapter }) {
                for s in ["closed", "open", "half-open"] {
                    x.sample("vigil_chat_circuit_state", ["adapter": a.adapter, "state": s], a.circuit.rawValue == s ? 1 : 0)
                }
            }
        }
        x.family("vigil_self_check_ok", .gauge, "The last result of each group of the runner's scheduled self-checks (selfchecks.json): 1 passed, 0 failed; absent before its first run.")
        x.family("vigil_self_check_failures_in_a_row", .gauge, "Failed runs in a row of each self-check group (the safe repair comes after 3).")
        if case .ok(let record) = StateFile.read(dir.selfCheckState, kind: SelfCheckRecord.kind, as: SelfCheckRecord.self) {
            for (group, g) in record.groups.sorted(by: { $0.key < $1.key }) {
                if let ok = g.ok { x.sample("vigil_self_check_ok", ["group": group], ok ? 1 : 0) }
                x.sample("vigil_self_check_failures_in_a_row", ["group": group], Double(g.failuresInARow))
            }
        }
        database(dir, &x)
        return x.text
    }

    /// Missions, outbox and workspace slots, read in one read-only look at the database (never
    /// created or migrated here); `vigil_database_readable` 0 when it cannot be read now.
    private static func database(_ dir: StateDirectory, _ x: inout Exposition) {
        var missions: [MissionState: Int] = [:], outbox: [String: [String: Int]] = [:], slots: [SlotPhase: Int] = [:]
        var readable = true
        if FileSystem.exists(dir.database) {
            do {
                let db = try Database(path: dir.database, busyTimeout: 1, migrate: false)
                let version = try db.scalarInt("PRAGMA user_version") ?? 0
                if version > 0 {
                    missions = try MissionQueue(db: db).counts()
                    outbox = try Outbox(db).countsByAdapter()
                }
                if version >= 8 { slots = try WorkspaceStore(db: db).counts() }
            } catch {
                readable = false
            }
        }
        x.family("vigil_database_readable", .gauge, "1 when the database could be read for this scrape (or does not exist yet).")
        x.sample("vigil_database_readable", [], readable ? 1 : 0)
        guard readable else { return }
        x.family("vigil_missions", .gauge, "Missions by state.")
        for s in MissionState.allCases { x.sample("vigil_missions", ["state": s.rawValue], Double(missions[s] ?? 0)) }
        x.family("vigil_outbox_messages", .gauge, "Outbox messages by chat adapter and state.")
        for (adapter, states) in outbox.sorted(by: { $0.key < $1.key }) {
            for (s, n) in states.sorted(by: { $0.key < $1.key }) { x.sample("vigil_outbox_messages", ["adapter": adapter, "state": s], Double(n)) }
        }
        x.family("vigil_workspace_slots", .gauge, "Workspace slots by state.")
        for p in SlotPhase.allCases { x.sample("vigil_workspace_slots", ["state": p.rawValue], Double(slots[p] ?? 0)) }
    }
}
