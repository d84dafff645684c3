import Foundation
import Glibc
import Testing
@testable import VigilStore
import VigilTestSupport

@Suite("Database")
struct DatabaseTests {
    struct Boom: Error {}

    @Test("Opens in WAL mode with synchronous=FULL, migrated, and sound")
    func pragmas() throws {
        let dir = try TempDir()
        let path = dir.file("vigil.db")
        do {
            let db = try Database(path: path)
            #expect(try db.scalarString("PRAGMA journal_mode")?.lowercased() == "wal")
            #expect(try db.scalarInt("PRAGMA synchronous") == 2, "2 is FULL")
            #expect(try db.scalarInt("PRAGMA foreign_keys") == 1)
            #expect(try db.scalarInt("PRAGMA user_version") == Int64(Schema.currentVersion))
            #expect(try db.integrityProblems() == [])
            #expect(try db.scalarInt("PRAGMA busy_timeout") == 5000)
        }
        // Reopening (a second process, a restart) migrates nothing and sets FULL again.
        let again = try Database(path: path, busyTimeout: 0.25)
        #expect(try again.scalarInt("PRAGMA synchronous") == 2)
        #expect(try again.scalarInt("PRAGMA busy_timeout") == 250)
        #expect(try again.scalarInt("PRAGMA user_version") == Int64(Schema.currentVersion))
    }

    @Test("Migration 4 keeps the chat inbox's rows and columns and adds origin_wall and the expired state")
    func inboxMigration() throws {
        let dir = try TempDir()
        let path = dir.file("vigil.db")
        do {
            // A database as version 2 left it, with a handled and a waiting command.
            let old = try Database(path: path, migrate: false)
            try old.write {
                for sql in Schema.missionsV1 + Schema.outboxV1 { try old.execute(sql) }
                try old.execute("PRAGMA user_version = 2")
                try old.execute("INSERT INTO chat_inbox (adapter, sender, body, origin_id, state, created_wall) VALUES ('matrix', '@a:x', '/status', '$e1', 'done', 10)")
                try old.execute("INSERT INTO chat_inbox (adapter, sender, body, state, created_wall) VALUES ('console', 'console', '/missions', 'new', 20)")
            }
        }
        let db = try Database(path: path)
        #expect(try db.scalarInt("PRAGMA user_version") == Int64(Schema.currentVersion))
        let rows = try db.query("SELECT id, origin_id, state, created_wall, origin_wall, handler FROM chat_inbox ORDER BY id")
        #expect(rows.count == 2)
        #expect(rows.map { $0[2].text } == ["done", "new"])
        #expect(rows.first?[1].text == "$e1")
        #expect(rows.allSatisfy { $0[4].isNull && $0[5].isNull })
        try db.write { try db.execute("UPDATE chat_inbox SET state = 'expired', origin_wall = 5 WHERE id = 2") }
        // The unique origin id still holds (adds stay idempotent).
        #expect(throws: Database.Error.self) {
            try db.write { try db.execute("INSERT INTO chat_inbox (adapter, sender, body, origin_id, created_wall) VALUES ('matrix', '@a:x', '/x', '$e1', 1)") }
        }
        #expect(try db.integrityProblems() == [])
    }

    @Test("write commits; a throw inside rolls everything back and the connection stays usable")
    func rollback() throws {
        let dir = try TempDir()
        let db = try Database(path: dir.file("vigil.db"))
        try db.write { try db.execute("CREATE TABLE t (v INTEGER NOT NULL)") }
        let id = try db.write { () throws -> Int64 in
            try db.execute("INSERT INTO t (v) VALUES (?)", [.int(1)])
            return db.lastInsertRowID
        }
        #expect(id == 1 && db.changes == 1)
        #expect(throws: Boom.self) {
            try db.write {
                try db.execute("INSERT INTO t (v) VALUES (?)", [.int(2)])
                try db.execute("INSERT INTO t (v) VALUES (?)", [.int(3)])
                throw Boom()
            }
        }
        #expect(try db.scalarInt("SELECT count(*) FROM t") == 1)
        // A failing statement inside also rolls back, and says which statement failed.
        let e = try #require(throws: Database.Error.self) {
            try db.write {
                try db.execute("INSERT INTO t (v) VALUES (?)", [.int(4)])
                try db.execute("INSERT INTO t (v) VALUES (?)", [.null])
            }
        }
        #expect(e.sql == "INSERT INTO t (v) VALUES (?)")
        #expect(e.message.contains("NOT NULL"))
        #expect(try db.scalarInt("SELECT count(*) FROM t") == 1)
        try db.write { try db.execute("INSERT INTO t (v) VALUES (5)") }
        #expect(try db.query("SELECT v FROM t ORDER BY v") == [[.int(1)], [.int(5)]])
        #expect(try db.read { try db.scalarInt("SELECT sum(v) FROM t") } == 6)
    }

    @Test("Another connection holding BEGIN IMMEDIATE past the busy timeout: isBusy and a clear description")
    func busy() throws {
        let dir = try TempDir()
        let path = dir.file("vigil.db")
        let holder = try Database(path: path)
        let waiter = try Database(path: path, busyTimeout: 0.05)
        try holder.write { try holder.execute("CREATE TABLE t (v INTEGER)") }
        try holder.execute("BEGIN IMMEDIATE")
        try holder.execute("INSERT INTO t VALUES (1)")
        let e = try #require(throws: Database.Error.self) {
            try waiter.write { try waiter.execute("INSERT INTO t VALUES (2)") }
        }
        #expect(e.isBusy)
        #expect(!e.isFull && !e.isCorrupt)
        #expect(e.description.hasPrefix("the database is locked by another process (busy timeout expired)"))
        // Readers are not blocked by a writer in WAL mode, and see the last commit.
        #expect(try waiter.scalarInt("SELECT count(*) FROM t") == 0)
        try holder.execute("COMMIT")
        try waiter.write { try waiter.execute("INSERT INTO t VALUES (2)") }
        #expect(try holder.scalarInt("SELECT count(*) FROM t") == 2)
    }

    @Test("Values of every type round-trip")
    func values() throws {
        let dir = try TempDir()
        let db = try Database(path: dir.file("vigil.db"))
        try db.execute("CREATE TABLE v (x)")
        let values: [Database.Value] = [
            .int(0), .int(Int64.max), .int(Int64.min), .double(2.5), .double(-0.125), .text(""),
            .text("ünïcödé 🚀 'quote' \"dq\""), .blob(Data([0, 1, 2, 255])), .null,
        ]
        for v in values { try db.execute("INSERT INTO v (x) VALUES (?)", [v]) }
        #expect(try db.query("SELECT x FROM v ORDER BY rowid").map { $0[0] } == values)
        #expect(Database.Value.int(3).double == 3 && Database.Value.text("a").int == nil && Database.Value.null.isNull)
    }

    @Test("Bad SQL names the statement")
    func badSQL() throws {
        let dir = try TempDir()
        let db = try Database(path: dir.file("vigil.db"))
        let e = try #require(throws: Database.Error.self) { try db.query("SELEKT 1") }
        #expect(e.sql == "SELEKT 1")
        #expect(e.description.hasPrefix("database error 1: "))
    }

    @Test("A file that is not a database is reported as corrupt, pointing at doctor")
    func notADatabase() throws {
        let dir = try TempDir()
        let path = dir.file("vigil.db")
        try put(Data(repeating: 0x41, count: 8192), at: path)
        let e = try #require(throws: Database.Error.self) { _ = try Database(path: path) }
        #expect(e.isCorrupt)
        #expect(e.description.hasPrefix("the database is corrupt: "))
        #expect(e.description.contains("vigil doctor"))
    }

    @Test("A database from a newer Vigil is refused with a sentence")
    func newerSchema() throws {
        let dir = try TempDir()
        let path = dir.file("vigil.db")
        do {
            let db = try Database(path: path)
            try db.execute("PRAGMA user_version = 99")
        }
        let e = try #require(throws: Database.Error.self) { _ = try Database(path: path) }
        #expect(e.message.contains("schema version 99, newer than this program knows"))
    }

    @Test("checkpoint empties the WAL")
    func checkpoint() throws {
        let dir = try TempDir()
        let path = dir.file("vigil.db")
        let db = try Database(path: path)
        try db.write { try db.execute("CREATE TABLE t (v)") }
        for i in 0..<20 { try db.write { try db.execute("INSERT INTO t VALUES (?)", [.int(Int64(i))]) } }
        var st = stat()
        #expect(stat(path + "-wal", &st) == 0 && st.st_size > 0)
        db.checkpoint()
        #expect(stat(path + "-wal", &st) == 0 && st.st_size == 0)
        #expect(try db.scalarInt("SELECT count(*) FROM t") == 20)
    }
}
