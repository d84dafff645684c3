import VigilCore

/// What one run found and did.
public struct DoctorReport: Sendable {
    public var stateDir: String
    public var fixMode: Bool
    public var findings: [DoctorFinding]

    public var fixedCount: Int { findings.filter(\.fixed).count }
    /// Findings a person must handle: after `--fix`, everything still needing attention;
    /// without it, what `--fix` cannot repair.
    public var needsPersonCount: Int { findings.filter(needsPerson).count }
    /// Without `--fix`: what `--fix` would repair (some only with an extra flag).
    public var fixableCount: Int { fixMode ? 0 : findings.filter { $0.needsAttention && $0.repair != nil }.count }
    public var remainingCount: Int { findings.filter(\.needsAttention).count }
    /// 0 when nothing needs attention, 1 when findings remain.
    public var exitCode: Int32 { remainingCount > 0 ? 1 : 0 }

    func needsPerson(_ f: DoctorFinding) -> Bool {
        f.needsAttention && (fixMode || f.repair == nil)
    }

    /// `vigil doctor --json`.
    public var json: JSONValue {
        .object([
            "state_dir": .string(stateDir),
            "fix": .bool(fixMode),
            "ok": .bool(remainingCount == 0),
            "fixed": .int(Int64(fixedCount)),
            "needs_person": .int(Int64(needsPersonCount)),
            "fixable": .int(Int64(fixableCount)),
            "remaining": .int(Int64(remainingCount)),
            "findings": .array(findings.map { f in
                .object([
                    "check": .string(f.check),
                    "subject": f.subject.map { .string($0) } ?? .null,
                    "severity": .string(f.severity.rawValue),
                    "what": .string(f.what),
                    "why": .string(f.why),
                    "action": .string(f.action),
                    "fixable": .bool(f.repair != nil),
                    "requires": f.repair?.requiredFlag.map { .string($0) } ?? .null,
                    "fixed": .bool(f.fixed),
                    "resolved": .bool(f.resolved),
                    "needs_person": .bool(needsPerson(f)),
                    "note": f.note.map { .string($0) } ?? .null,
                ])
            }),
        ])
    }

    /// The list for people.
    public var text: String {
        var lines = ["vigil doctor: \(stateDir)"]
        if findings.isEmpty {
            lines.append("No problems found.")
            return lines.joined(separator: "\n")
        }
        for f in findings {
            let label = f.fixed ? "FIXED" : f.severity.rawValue.uppercased()
            lines.append("")
            lines.append("\(label.padding(toLength: 9, withPad: " ", startingAt: 0))\(f.what)")
            lines.append("         why: \(f.why)")
            if !f.fixed { lines.append("         do:  \(f.action)") }
            if let note = f.note {
                lines.append("         fix: \(note)")
            } else if f.needsAttention, let r = f.repair {
                lines.append("         fix: `vigil doctor --fix\(r.requiredFlag.map { " " + $0 } ?? "")` repairs this")
            } else if f.needsAttention {
                lines.append("         fix: needs a person")
            }
        }
        lines.append("")
        var summary = "\(findings.count) finding\(findings.count == 1 ? "" : "s"): "
        var parts: [String] = []
        if fixMode { parts.append("\(fixedCount) fixed") }
        if !fixMode && fixableCount > 0 { parts.append("\(fixableCount) --fix can repair") }
        parts.append("\(needsPersonCount) need\(needsPersonCount == 1 ? "s" : "") a person")
        let info = findings.filter { $0.severity == .info && !$0.fixed }.count
        if info > 0 { parts.append("\(info) for information") }
        summary += parts.joined(separator: ", ") + "."
        lines.append(summary)
        return lines.joined(separator: "\n")
    }
}
