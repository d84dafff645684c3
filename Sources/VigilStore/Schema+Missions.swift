extension Schema {
    /// Missions and their locks (migration 1). Owned by `MissionQueue`; see docs/missions.md.
    ///
    /// - `state` holds `pending`, `running`, `done`, `failed` or `cancelled`; `waiting` is derived
    ///   (a pending mission behind a held or earlier-claimed lock key), never stored.
    /// - `attempts` counts starts; the shim identity of the current attempt is `shim_pid`,
    ///   `shim_start` (start ticks) and `shim_boot` (kernel boot id).
    /// - Rows are never deleted, so `id` (the rowid, max + 1) is never reused and a mission
    ///   directory is never shared. No `AUTOINCREMENT`: it would add a third page
    ///   (`sqlite_sequence`) to every enqueue's commit. Anything that prunes missions later
    ///   must keep the newest row (or add AUTOINCREMENT in a new migration).
    /// - One row in `mission_locks` per held key, written in the claim transaction and deleted in
    ///   the transaction that ends the attempt.
    static let missionsV1: [String] = [
        """
        CREATE TABLE missions (
            id INTEGER PRIMARY KEY,
            argv TEXT NOT NULL,
            cwd TEXT NOT NULL,
            lock_key TEXT,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            exit_code INTEGER,
            signal INTEGER,
            reason TEXT,
            shim_pid INTEGER,
            shim_start INTEGER,
            shim_boot TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        )
        """,
        "CREATE INDEX missions_pending ON missions(id) WHERE state = 'pending'",
        "CREATE INDEX missions_running ON missions(id) WHERE state = 'running'",
        """
        CREATE TABLE mission_locks (
            key TEXT PRIMARY KEY,
            mission_id INTEGER NOT NULL UNIQUE REFERENCES missions(id)
        )
        """,
    ]

    /// Migration 5: `let_daemons_go` (0 or 1), set by `vigil mission add --let-daemons-go`: at
    /// the mission's end its shim leaves the mission's processes outside its session alone, and
    /// nothing kills them later (docs/missions.md, "Every process of a mission").
    static let missionsV2: [String] = [
        "ALTER TABLE missions ADD COLUMN let_daemons_go INTEGER NOT NULL DEFAULT 0",
    ]

    /// Migration 7: `--timeout` and `--silence-limit` (nanoseconds; NULL: the runner's default
    /// from vigil.json, `mission-timeout` / `mission-silence-limit`), and `stop_cause`: why the
    /// runner is ending the running attempt (`timeout`, `silence`), set before its SIGTERM so the
    /// reason survives a runner restart (docs/missions.md, "Timeouts and silence").
    static let missionsV3: [String] = [
        "ALTER TABLE missions ADD COLUMN timeout_ns INTEGER",
        "ALTER TABLE missions ADD COLUMN silence_ns INTEGER",
        "ALTER TABLE missions ADD COLUMN stop_cause TEXT",
        // `--at-most-once`: an attempt that may have started its command is never started again.
        "ALTER TABLE missions ADD COLUMN at_most_once INTEGER NOT NULL DEFAULT 0",
        // `--retries N` / `--retry-backoff D`: failed attempts run again (`retried` so far since
        // `attempt_base`, the attempts when an operator last retried it), not before `retry_at`
        // (wall-clock seconds); `may_have_run`: ended "interrupted" at most once, never again.
        "ALTER TABLE missions ADD COLUMN retries INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE missions ADD COLUMN retry_backoff_ns INTEGER",
        "ALTER TABLE missions ADD COLUMN retried INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE missions ADD COLUMN retry_at REAL",
        "ALTER TABLE missions ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE missions ADD COLUMN may_have_run INTEGER NOT NULL DEFAULT 0",
        // Who queued it ("chat @alice:example.org", "vigil mission add (uid 1000)"), for its notices.
        "ALTER TABLE missions ADD COLUMN queued_by TEXT",
        // The breaker per lock key (docs/missions.md, "A breaker per key").
        """
        CREATE TABLE key_breakers (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL DEFAULT 0,
            paused_at REAL,
            trial INTEGER NOT NULL DEFAULT 0
        )
        """,
    ]
}
