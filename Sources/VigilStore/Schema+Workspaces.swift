extension Schema {
    /// Migration 8: workspace repositories and their slots (docs/workspaces.md). Owned by
    /// `WorkspaceStore`; the claim and the end of a mission change slots in their own
    /// transactions (`MissionQueue`).
    ///
    /// - `workspace_slots.state` is a `SlotPhase`; `generation` goes up at every transition, and
    ///   a worker's report is stored only for the generation it was started for.
    /// - `mission_id` is set exactly when the slot is `allocated` (UNIQUE: one slot per mission).
    /// - `AUTOINCREMENT`: a slot's id names its directory (`workspaces/REPO/ID`), so an id is
    ///   never handed out twice, even after the newest slot was removed.
    /// - `missions.workspace`: the repository a mission needs a slot of; `missions.slot`: the
    ///   slot its current (or last) attempt got.
    static let workspacesV1: [String] = [
        """
        CREATE TABLE workspace_repos (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            branch TEXT NOT NULL,
            created_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE workspace_slots (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            repo TEXT NOT NULL REFERENCES workspace_repos(name),
            state TEXT NOT NULL CHECK (state IN ('cloning', 'available', 'allocated', 'cleaning', 'error')),
            generation INTEGER NOT NULL DEFAULT 0,
            mission_id INTEGER UNIQUE,
            allocated_at REAL,
            error_at REAL,
            reason TEXT,
            isolated_by_person INTEGER NOT NULL DEFAULT 0,
            force_available INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            changed_at REAL NOT NULL,
            CHECK ((state = 'allocated') = (mission_id IS NOT NULL))
        )
        """,
        "CREATE INDEX workspace_slots_free ON workspace_slots(repo, id) WHERE state = 'available'",
        "ALTER TABLE missions ADD COLUMN workspace TEXT",
        "ALTER TABLE missions ADD COLUMN slot INTEGER",
    ]
}
