import VigilCore
import VigilStore
import VigilSystem

/// One probe of the bridge: reads `bridge.json` and /proc, nothing else (and the version file
/// or the executable's inode). Pure classification happens in `VigilCore.classify`.
struct Probe {
    var facts: ProbeFacts
    var verdict: Verdict
    /// The bridge the PID file (or a just-spawned child) names.
    var identity: ProcessIdentity?
    var record: ProcessRecord?

    /// - Parameters:
    ///   - record: the parsed PID file (nil when absent or quarantined).
    ///   - starting: a bridge the runner just spawned that has not written its PID file yet.
    ///   - isBridge: confirms a live identity really is a bridge of this state dir (else: dead).
    static func run(record: ProcessRecord?, starting: ProcessIdentity?, currentVersion: String?,
                    limits: ProbeLimits, now: BootInstant, isBridge: (ProcessIdentity) -> Bool) -> Probe {
        if let starting, record?.identity != starting {
            // Our fresh bridge has not stamped yet: alive without a beat reads as "hung", which
            // the heal machine tolerates for the start grace; gone reads as dead.
            let alive = starting.liveness() == .alive
            let facts = ProbeFacts(process: alive ? .alive(rssBytes: nil) : .gone, lastBeat: nil)
            return Probe(facts: facts, verdict: classify(facts, now: now, limits: limits), identity: starting, record: nil)
        }
        guard let record else {
            let facts = ProbeFacts(process: .noIdentity)
            return Probe(facts: facts, verdict: .missing, identity: nil, record: nil)
        }
        let process: ProbeFacts.Process
        if record.bootID != Clock.bootID || record.identity.liveness() == .gone || !isBridge(record.identity) {
            process = .gone
        } else {
            process = .alive(rssBytes: limits.rssLimit == nil ? nil : record.identity.residentBytes())
        }
        let facts = ProbeFacts(process: process, lastBeat: record.beat, stampedVersion: record.version, currentVersion: currentVersion)
        return Probe(facts: facts, verdict: classify(facts, now: now, limits: limits), identity: record.identity, record: record)
    }
}
