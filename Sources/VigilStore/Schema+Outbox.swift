extension Schema {
    /// The chat tables (migration 2). Owned by `Outbox` and `ChatInbox`.
    ///
    /// - `outbox`: every message meant for a person, one row per (idempotency key, adapter).
    ///   `next_attempt` is a `CLOCK_BOOTTIME` instant in nanoseconds, valid only within the
    ///   boot named by `boot_id` (a row from an earlier boot is due at once).
    ///   `claimed_by` names the process that is sending it (`pid:start_ticks:instance`).
    /// - `chat_inbox`: commands that arrived (from `vigil say` or a chat server), waiting for
    ///   the bridge; `origin_id` de-duplicates (e.g. a Matrix event id).
    /// - `chat_state`: small persistent values of the adapters (Matrix since-token, login).
    static let outboxV1: [String] = [
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL,
            adapter TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt INTEGER NOT NULL DEFAULT 0,
            boot_id TEXT NOT NULL DEFAULT '',
            last_error TEXT,
            claimed_by TEXT,
            remote_id TEXT,
            created_wall REAL NOT NULL,
            updated_wall REAL NOT NULL,
            delivered_wall REAL,
            UNIQUE (key, adapter)
        )
        """,
        "CREATE INDEX outbox_queue ON outbox (adapter, state, id)",
        "CREATE INDEX outbox_state ON outbox (state)",
        """
        CREATE TABLE chat_inbox (
            id INTEGER PRIMARY KEY,
            adapter TEXT NOT NULL,
            sender TEXT NOT NULL,
            body TEXT NOT NULL,
            origin_id TEXT,
            state TEXT NOT NULL DEFAULT 'new'
                CHECK (state IN ('new', 'handling', 'done', 'ignored', 'interrupted')),
            reply_key TEXT,
            created_wall REAL NOT NULL,
            handled_wall REAL,
            UNIQUE (adapter, origin_id)
        )
        """,
        "CREATE INDEX chat_inbox_state ON chat_inbox (state, id)",
        """
        CREATE TABLE chat_state (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_wall REAL NOT NULL
        )
        """,
    ]

    /// Migration 3: two deliverers (bridge and runner) share the outbox and the inbox.
    /// - `outbox.lease_until`: a sending row's claim runs out at this `CLOCK_BOOTTIME` instant
    ///   (nanoseconds, valid within `boot_id`); after it, or when the claimer is gone, another
    ///   deliverer may take the row over (`OutboxLifecycle`).
    /// - `outbox.stuck`: 1 once the row was reported stuck (still retrying after `max_attempts`).
    /// - `chat_inbox.handler`: who is handling a `handling` command (`pid:start_ticks:instance`),
    ///   so a starting bridge marks interrupted only the commands of a handler that is gone.
    static let outboxV2: [String] = [
        "ALTER TABLE outbox ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE outbox ADD COLUMN stuck INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE chat_inbox ADD COLUMN handler TEXT",
    ]

    /// Migration 4: `chat_inbox` learns when a command was said and a state for commands too
    /// old to run (docs/chat.md, "Commands from chat").
    ///
    /// - `origin_wall`: when the command was said (wall seconds; a Matrix event's
    ///   `origin_server_ts`); NULL for `vigil say`, whose `created_wall` is that time.
    /// - `expired`: answered "too old, not run" instead of being run.
    ///
    /// SQLite cannot change a CHECK constraint in place, so the table is rebuilt (new table, copy,
    /// drop, rename) inside the migration's transaction.
    static let inboxAgeV1: [String] = [
        """
        CREATE TABLE chat_inbox_v4 (
            id INTEGER PRIMARY KEY,
            adapter TEXT NOT NULL,
            sender TEXT NOT NULL,
            body TEXT NOT NULL,
            origin_id TEXT,
            state TEXT NOT NULL DEFAULT 'new'
                CHECK (state IN ('new', 'handling', 'done', 'ignored', 'interrupted', 'expired')),
            reply_key TEXT,
            created_wall REAL NOT NULL,
            handled_wall REAL,
            handler TEXT,
            origin_wall REAL,
            UNIQUE (adapter, origin_id)
        )
        """,
        """
        INSERT INTO chat_inbox_v4 (id, adapter, sender, body, origin_id, state, reply_key, created_wall, handled_wall, handler)
            SELECT id, adapter, sender, body, origin_id, state, reply_key, created_wall, handled_wall, handler FROM chat_inbox
        """,
        "DROP TABLE chat_inbox",
        "ALTER TABLE chat_inbox_v4 RENAME TO chat_inbox",
        "CREATE INDEX chat_inbox_state ON chat_inbox (state, id)",
    ]
}

extension Schema {
    /// Migration 9: messages that relate to others, and commands that know where they came from
    /// (docs/chat.md, "Replies, threads, edits").
    ///
    /// - `outbox.html`: the message as HTML (Matrix `formatted_body`); NULL for plain only.
    /// - `outbox.priority`: `OutboxPriority` (0 alert, 1 reply, 2 notice); rows from before are
    ///   notices.
    /// - `outbox.meta`: `OutboxMeta` as JSON (reply, thread, edit, reaction, mentions, room);
    ///   NULL when there is none.
    /// - `chat_inbox.meta`: `InboxMeta` as JSON (thread, message type, edit, encrypted).
    /// - `missions.chat_ref`: for a mission queued from chat, the command's adapter, event,
    ///   thread and sender (JSON), so its notices answer that message.
    static let chatV3: [String] = [
        "ALTER TABLE outbox ADD COLUMN html TEXT",
        "ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 2",
        "ALTER TABLE outbox ADD COLUMN meta TEXT",
        "CREATE INDEX outbox_priority_queue ON outbox (adapter, state, priority, id)",
        "ALTER TABLE chat_inbox ADD COLUMN meta TEXT",
        "ALTER TABLE missions ADD COLUMN chat_ref TEXT",
    ]
}
