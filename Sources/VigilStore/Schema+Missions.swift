extension Schema {
    /// Missions, their locks and attempts. Owned by MissionQueue.
    static let missionsV1: [String] = [
        "CREATE TABLE IF NOT EXISTS placeholder_missions (id INTEGER PRIMARY KEY)",
    ]
}
