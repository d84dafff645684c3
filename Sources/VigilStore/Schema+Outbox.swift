extension Schema {
    /// The outbox of messages for people. Owned by Outbox.
    static let outboxV1: [String] = [
        "CREATE TABLE IF NOT EXISTS placeholder_outbox (id INTEGER PRIMARY KEY)",
    ]
}
