/// Schema versions and migrations (`PRAGMA user_version`). Each migration runs once, in its
/// own write transaction, in order. Add new ones at the end; never edit a shipped one.
public enum Schema {
    /// Each element is one migration: a list of SQL statements.
    static var migrations: [[String]] { [missionsV1, outboxV1, outboxV2, inboxAgeV1, missionsV2, retentionClockV1, missionsV3, workspacesV1, chatV3] }

    public static var currentVersion: Int { migrations.count }

    static func migrate(_ db: Database) throws {
        let have = Int(try db.scalarInt("PRAGMA user_version") ?? 0)
        guard have < migrations.count else {
            if have > migrations.count {
                throw Database.Error(code: 1, message: "the database has schema version \(have), newer than this program knows (\(migrations.count)); run the newer Vigil", sql: nil)
            }
            return
        }
        for version in have..<migrations.count {
            try db.write {
                // Re-check inside the write lock: another process may have migrated meanwhile.
                let now = Int(try db.scalarInt("PRAGMA user_version") ?? 0)
                guard now == version else { return }
                for sql in migrations[version] { try db.execute(sql) }
                try db.execute("PRAGMA user_version = \(version + 1)")
            }
        }
    }
}
