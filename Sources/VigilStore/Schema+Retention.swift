extension Schema {
    /// The retention clock (docs/architecture.md, "Retention clock"):
    /// - `retention_clock`: one row, the clock's value (`elapsed_ns`) and the readings at its
    ///   last advance (boot clock, boot id, wall clock).
    /// - `outbox.delivered_age`, `chat_inbox.handled_age`: the clock's value when the row was
    ///   delivered / handled. NULL for rows from before this migration: the first prune stamps
    ///   them with the clock's value then (they get a full retention from the upgrade).
    static let retentionClockV1: [String] = [
        """
        CREATE TABLE retention_clock (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            elapsed_ns INTEGER NOT NULL,
            boot_ns INTEGER NOT NULL,
            boot_id TEXT NOT NULL,
            wall REAL NOT NULL
        )
        """,
        "ALTER TABLE outbox ADD COLUMN delivered_age INTEGER",
        "ALTER TABLE chat_inbox ADD COLUMN handled_age INTEGER",
    ]
}
