import FoundationEssentials
import VigilCore
import VigilSystem

/// The breaker per lock key (docs/missions.md, "A breaker per key"): `KeyBreaker` (VigilCore)
/// decides, the `key_breakers` table keeps it (migration 7), `MissionQueue` asks it at every
/// claim and tells it every finished mission on a key, in the same transaction.
public struct KeyBreakerPolicy: Sendable, Equatable {
    /// Failed missions in a row on a key that pause it; 0: no breaker.
    public var limit: Int
    /// After this, one trial mission may run (half-open).
    public var coolOff: TimeSpan

    public static let defaultLimit = 5
    public static let defaultCoolOff = TimeSpan.seconds(600)

    public init(limit: Int = KeyBreakerPolicy.defaultLimit, coolOff: TimeSpan = KeyBreakerPolicy.defaultCoolOff) {
        self.limit = max(0, limit)
        self.coolOff = coolOff
    }
}

extension MissionQueue {
    /// The breaker of `key` as stored (a closed one with no failures has no row).
    func breakerLocked(_ key: String) throws -> KeyBreaker {
        guard let r = try db.query("SELECT failures, paused_at, trial FROM key_breakers WHERE key = ?", [.text(key)]).first else { return KeyBreaker() }
        var b = KeyBreaker()
        b.failuresInARow = Int(r[0].int ?? 0)
        b.pausedAt = r[1].double
        b.trial = (r[2].int ?? 0) != 0
        return b
    }

    func storeBreakerLocked(_ key: String, _ b: KeyBreaker) throws {
        if b == KeyBreaker() {
            try db.execute("DELETE FROM key_breakers WHERE key = ?", [.text(key)])
        } else {
            try db.execute("INSERT OR REPLACE INTO key_breakers(key, failures, paused_at, trial) VALUES (?, ?, ?, ?)",
                           [.text(key), .int(Int64(b.failuresInARow)), b.pausedAt.map { .double($0) } ?? .null, .int(b.trial ? 1 : 0)])
        }
    }

    /// Keys paused now (their missions wait), with how many failed in a row and since when.
    public func pausedKeys() throws -> [(key: String, failures: Int, since: Date)] {
        let now = Clock.wall().timeIntervalSince1970
        return try db.query("SELECT key, failures, paused_at, trial FROM key_breakers WHERE paused_at IS NOT NULL ORDER BY key").compactMap { r in
            guard let k = r[0].text, let at = r[2].double else { return nil }
            var b = KeyBreaker()
            b.pausedAt = at
            b.trial = (r[3].int ?? 0) != 0
            guard b.isPaused(now: now, coolOff: breakerPolicy.coolOff) else { return nil }
            return (k, Int(r[1].int ?? 0), Date(timeIntervalSince1970: at))
        }
    }

    /// When the earliest paused key (not in its trial already) may let a trial mission run
    /// (wall-clock seconds), for the runner's wake.
    public func nextBreakerTrial() throws -> Double? {
        guard breakerPolicy.limit > 0,
              let at = try db.query("SELECT min(paused_at) FROM key_breakers WHERE paused_at IS NOT NULL AND trial = 0").first?[0].double else { return nil }
        return at + breakerPolicy.coolOff.seconds
    }

    /// `vigil mission resume-key KEY`: closes the key's breaker. Whether it was paused.
    @discardableResult
    public func resumeKey(_ key: String) throws -> Bool {
        try db.write {
            var b = try breakerLocked(key)
            let told = b.resume()
            try storeBreakerLocked(key, b)
            return told == .closed
        }
    }
}
