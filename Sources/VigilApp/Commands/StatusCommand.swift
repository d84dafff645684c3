import FoundationEssentials
import VigilCore
import VigilChat
import VigilStore
import VigilSystem

/// `vigil status [--json]`: bridge identity, verdict, heartbeat age, versions; heal tier and
/// circuit; queue counts. Read-only: it never quarantines or writes anything.
enum StatusCommand {
    static let command = Command(
        name: "status",
        summary: "bridge, runner, heal tier and circuit, queue counts",
        help: """
        usage: vigil status [--state-dir DIR] [--json]

        Shows the bridge (pid, verdict, heartbeat age, versions), the runner, the heal tier and
        circuit, queue counts, and chat destinations with a problem ("chat: room not reachable: …",
        "chat: room is encrypted: …"). --json prints one object (fields are only ever added):
        bridge.pid, bridge.verdict, heal.tier, heal.circuit, runner.pid, chat.matrix.problem, …
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: [], booleans: ["json"])
            guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0])") }
            let status = try gather(inv.stateDir)
            if args.has("json") { printOut(status.jsonString) } else { printOut(human(status)) }
        })

    static func readQuietly<T: Decodable & Sendable>(_ path: String, kind: String, _ t: T.Type) -> (T?, String?) {
        switch StateFile.read(path, kind: kind, as: t) {
        case .absent: return (nil, nil)
        case .ok(let v): return (v, nil)
        case .corrupt(let r): return (nil, r)
        }
    }

    static func gather(_ dir: StateDirectory) throws -> JSONValue {
        guard FileManager.default.fileExists(atPath: dir.path) else {
            throw CommandError("no state directory at \(dir.path): nothing has run here (start with scripts/vigil-run, or pass --state-dir)")
        }
        let config = (try? Configuration.load(stateDir: dir, arguments: try Arguments([], valued: []))) ?? Configuration(tunables: Tunables(), chat: nil, agentCommand: nil)
        let t = config.tunables
        let pair = PairHealth.read(dir, tunables: t, versionWhenRunnerDown: true)
        let now = pair.now
        let (bridge, bridgeProblem, runner, runnerProblem) = (pair.bridge, pair.bridgeProblem, pair.runner, pair.runnerProblem)
        let (runnerAlive, current, probe, heal, healProblem) = (pair.runnerAlive, pair.currentVersion, pair.probe, pair.heal, pair.healProblem)
        // Stopped as the runner sees it: a valid stop marker of this boot (a symlink, FIFO or
        // garbage in the slot stops nothing; the runner quarantines it).
        let stopped = readQuietly(dir.stopMarker, kind: Marker.kind, Marker.self).0.map { $0.bootID == Clock.bootID } ?? false

        func ms(_ s: TimeSpan) -> JSONValue { .double((s.milliseconds).rounded()) }
        var b: [String: JSONValue] = [
            "pid": bridge.map { .int(Int64($0.identity.pid)) } ?? .null,
            "verdict": .string(probe.verdict.rawValue),
            "heartbeat_age_ms": bridge.map { ms(now - $0.beat) } ?? .null,
            "version": bridge.map { .string($0.version) } ?? .null,
            "current_version": current.map { .string($0) } ?? .null,
            "started": bridge.map { .string($0.startedWall) } ?? .null,
        ]
        if let bridgeProblem { b["problem"] = .string("bridge.json is corrupt: \(bridgeProblem)") }
        if let rss = bridge?.identity.residentBytes(), probe.verdict.processAlive { b["rss_bytes"] = .int(Int64(rss)) }
        var r: [String: JSONValue] = [
            "pid": runner.map { .int(Int64($0.identity.pid)) } ?? .null,
            "alive": .bool(runnerAlive),
            "heartbeat_age_ms": runner.map { ms(now - $0.beat) } ?? .null,
            "version": runner.map { .string($0.version) } ?? .null,
            "last_verdict": runner?.lastVerdict.map { .string($0.rawValue) } ?? .null,
            "probe_cpu_us": runner?.probeCPUMicros.map { .double(($0 * 10).rounded() / 10) } ?? .null,
        ]
        if let runnerProblem { r["problem"] = .string("runner.json is corrupt: \(runnerProblem)") }
        // The wrapper that relaunches the runner after exit 42 (docs/operator-guide.md, "The
        // wrapper gone"): null when the runner was not started by one.
        if let w = runner?.wrapper, runnerAlive {
            r["wrapper"] = ["pid": .int(Int64(w.pid)), "alive": .bool(w.isAlive)]
        } else {
            r["wrapper"] = .null
        }
        var h: [String: JSONValue] = [
            "tier": .int(Int64(heal.displayTier)),
            "circuit": .string(heal.circuit.rawValue),
            "failed_respawns": .int(Int64(heal.failedRespawns)),
            "incident_since_ms": heal.incidentSince.map { ms(now - $0) } ?? .null,
            "incident_verdict": heal.incidentVerdict.map { .string($0.rawValue) } ?? .null,
            "circuit_reason": heal.circuit == .closed ? .null : heal.circuitReason.map { .string($0.rawValue) } ?? .null,
        ]
        if heal.circuit == .open, let o = heal.circuitOpenedAt {
            h["half_open_in_ms"] = ms(max(.zero, o + t.circuitCooloff - now))
        }
        if let healProblem { h["problem"] = .string("heal.json is corrupt: \(healProblem)") }
        var out: [String: JSONValue] = [
            "state_dir": .string(dir.path),
            "stopped": .bool(stopped),
            "bridge": .object(b),
            "runner": .object(r),
            "heal": .object(h),
        ]
        out["queues"] = QueueCounts.gather(dir)
        // The bridge's last word on each chat destination (chat/status.json; docs/chat.md,
        // "Room problems"): only adapters with a problem.
        var chat: [String: JSONValue] = [:]
        for a in ChatService.readStatus(dir) ?? [] { if let p = a.problem { chat[a.adapter] = ["problem": .string(p)] } }
        out["chat"] = .object(chat)
        return .object(out)
    }

    static func human(_ s: JSONValue) -> String {
        func str(_ v: JSONValue?) -> String {
            switch v {
            case .string(let x)?: return x
            case .int(let x)?: return "\(x)"
            case .double(let x)?: return x.rounded() == x ? "\(Int64(x))" : DecimalText.fixed(x, places: 1)
            case .bool(let x)?: return x ? "yes" : "no"
            default: return "-"
            }
        }
        let b = s["bridge"], r = s["runner"], h = s["heal"]
        var lines: [String] = []
        lines.append("state dir   \(str(s["state_dir"]))\(s["stopped"]?.boolValue == true ? "  (stopped by `vigil stop`)" : "")")
        lines.append("bridge      \(str(b?["verdict"]))  pid \(str(b?["pid"]))  heartbeat \(str(b?["heartbeat_age_ms"])) ms ago")
        lines.append("            version \(str(b?["version"]))  on disk \(str(b?["current_version"]))")
        if let p = b?["problem"] { lines.append("            \(str(p))") }
        lines.append("runner      \(r?["alive"]?.boolValue == true ? "running" : "not running")  pid \(str(r?["pid"]))  heartbeat \(str(r?["heartbeat_age_ms"])) ms ago  probe \(str(r?["probe_cpu_us"])) µs")
        if r?["alive"]?.boolValue == true {
            if let w = r?["wrapper"], w["alive"]?.boolValue == false {
                lines.append("            wrapper (pid \(str(w["pid"]))) gone: the runner will not restart for a marker or an update until the pair is started again")
            } else if r?["wrapper"] == .null {
                lines.append("            no wrapper: started without scripts/vigil-run, nothing relaunches it after exit 42")
            }
        }
        lines.append("heal        tier \(str(h?["tier"]))  circuit \(str(h?["circuit"]))  failed respawns \(str(h?["failed_respawns"]))")
        if case .object(let chat)? = s["chat"] {
            for (_, v) in chat.sorted(by: { $0.key < $1.key }) {
                if let p = v["problem"]?.stringValue { lines.append("chat: \(p)") }
            }
        }
        if let q = s["queues"], case .object(let o) = q {
            for (k, v) in o.sorted(by: { $0.key < $1.key }) {
                if case .object(let c) = v {
                    lines.append("\(k.padded(toLength: 12))" + c.sorted(by: { $0.key < $1.key }).map { "\($0.key) \(str($0.value))" }.joined(separator: "  "))
                } else {
                    lines.append("\(k.padded(toLength: 12))\(str(v))")
                }
            }
        }
        return lines.joined(separator: "\n")
    }
}

/// Counts of the mission queue, the outbox and the workspace slots, for status (read-only; "unavailable" when the
/// database cannot be read now).
enum QueueCounts {
    static func gather(_ dir: StateDirectory) -> JSONValue {
        guard FileManager.default.fileExists(atPath: dir.database) else { return .object([:]) }
        do {
            let db = try Database(path: dir.database, busyTimeout: 1)
            var out: [String: JSONValue] = [:]
            out["outbox"] = .object(try Outbox(db).counts().mapValues { .int(Int64($0)) })
            if let m = try MissionCounts.gather(db) { out["missions"] = m }
            // Slots by state (docs/workspaces.md), once there are any.
            if (try db.scalarInt("PRAGMA user_version") ?? 0) >= 8 {
                let slots = try WorkspaceStore(db: db).counts()
                if !slots.isEmpty { out["workspaces"] = .object(Dictionary(uniqueKeysWithValues: slots.map { ($0.key.rawValue, .int(Int64($0.value))) })) }
            }
            return .object(out)
        } catch {
            return .object(["unavailable": .string("\(error)")])
        }
    }
}
