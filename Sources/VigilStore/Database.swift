import CSQLite
import FoundationEssentials
import VigilSystem

/// A SQLite connection to the state directory's database, set up the one safe way: WAL,
/// `synchronous=FULL` on every connection, a busy timeout, and `BEGIN IMMEDIATE` for every
/// write transaction (docs/durability.md, "Every commit is synchronous", "Write transactions
/// begin immediate"). Statements are prepared and stepped, never `sqlite3_exec` with callbacks.
/// One connection per thread of use.
///
/// - Important: never open, copy or delete the database's files with plain file APIs while a
///   connection is open (docs/durability.md, "No plain file APIs on an open database", "Never
///   delete the WAL").
///
/// Not Sendable: the connection is opened `SQLITE_OPEN_NOMUTEX` and keeps a statement cache,
/// so it belongs to the thread that uses it; the compiler keeps it there (a value that must
/// cross threads is held in a `Mutex` by its owner).
public final class Database {
    public let path: String
    let db: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public var code: Int32
        public var message: String
        public var sql: String?

        /// The database is locked by someone else beyond the busy timeout.
        public var isBusy: Bool { code & 0xff == SQLITE_BUSY || code & 0xff == SQLITE_LOCKED }
        public var isFull: Bool { code & 0xff == SQLITE_FULL }
        public var isCorrupt: Bool { code & 0xff == SQLITE_CORRUPT || code & 0xff == SQLITE_NOTADB }

        public var description: String {
            if isBusy { return "the database is locked by another process (busy timeout expired): \(message)" }
            if isFull { return "the disk holding the database is full: \(message)" }
            if isCorrupt { return "the database is corrupt: \(message) (run `vigil doctor`)" }
            return "database error \(code): \(message)"
        }
    }

    /// Opens (creating if needed) and migrates the database.
    /// - Parameter busyTimeout: how long a statement waits for another writer.
    public init(path: String, busyTimeout: TimeInterval = 5, migrate: Bool = true) throws {
        self.path = path
        if let fs = FileSystem.networkKind(at: Path.parent(path)) {
            throw Error(code: SQLITE_CANTOPEN, message: "the state directory is on a network file system (\(fs)); SQLite's WAL needs a local disk", sql: nil)
        }
        try Database.createPrivately(path)
        var handle: OpaquePointer?
        // NOFOLLOW: a symlink in the database's slot is refused, never written through.
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let handle { sqlite3_close_v2(handle) }
            throw Error(code: rc, message: "\(path): \(msg)", sql: nil)
        }
        db = handle
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, Int32(busyTimeout * 1000))
        do {
            let mode = try scalarString("PRAGMA journal_mode=WAL")
            guard mode?.lowercased() == "wal" else {
                throw Error(code: SQLITE_ERROR, message: "cannot switch \(path) to WAL (got \(mode ?? "nothing"))", sql: nil)
            }
            try execute("PRAGMA synchronous=FULL")
            try execute("PRAGMA foreign_keys=ON")
            if migrate { try Schema.migrate(self) }
        } catch {
            finalizeAll()
            sqlite3_close_v2(db)
            throw error
        }
    }

    /// Creates a missing database file empty with `PrivateFile.mode` before SQLite opens it:
    /// SQLite would create it 0644 (less the umask), and it gives `-wal` and `-shm` the mode of
    /// the database file. The file holds chat tokens and mission argv (docs/operator-guide.md,
    /// "Security of the state directory"). `O_EXCL`: an existing file is never opened here (so
    /// no descriptor of it is closed beside a connection: docs/durability.md, "No plain file APIs on
    /// an open database").
    static func createPrivately(_ path: String) throws {
        do {
            try FileDescriptor.open(path, [.writeOnly, .create, .exclusive, .noFollow]).close()
        } catch {
            if error.isExists { return }
            throw Error(code: SQLITE_CANTOPEN, message: "\(path): cannot create it: \(error.reason)", sql: nil)
        }
        try AtomicFile.fsyncDirectory(Path.parent(path))
    }

    deinit {
        finalizeAll()
        sqlite3_close_v2(db)
    }

    private func finalizeAll() {
        for (_, s) in statements { sqlite3_finalize(s) }
        statements.removeAll()
    }

    // MARK: - Statements

    /// A value bound to a `?` parameter or read from a column.
    public enum Value: Equatable, Sendable {
        case int(Int64)
        case double(Double)
        case text(String)
        case blob(Data)
        case null

        public var int: Int64? { if case .int(let v) = self { return v }; return nil }
        public var text: String? { if case .text(let v) = self { return v }; return nil }
        public var double: Double? {
            switch self {
            case .double(let v): return v
            case .int(let v): return Double(v)
            default: return nil
            }
        }
        public var isNull: Bool { self == .null }
    }

    public typealias Row = [Value]

    func error(_ rc: Int32, _ sql: String?) -> Error {
        Error(code: rc, message: String(cString: sqlite3_errmsg(db)), sql: sql)
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let s = statements[sql] {
            sqlite3_reset(s)
            sqlite3_clear_bindings(s)
            return s
        }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, sql) }
        statements[sql] = stmt
        return stmt
    }

    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    private func bind(_ stmt: OpaquePointer, _ params: [Value]) {
        for (i, p) in params.enumerated() {
            let idx = Int32(i + 1)
            switch p {
            case .int(let v): sqlite3_bind_int64(stmt, idx, v)
            case .double(let v): sqlite3_bind_double(stmt, idx, v)
            case .text(let v): sqlite3_bind_text(stmt, idx, v, -1, Database.transient)
            case .blob(let v): _ = v.withUnsafeBytes { sqlite3_bind_blob(stmt, idx, $0.baseAddress, Int32($0.count), Database.transient) }
            case .null: sqlite3_bind_null(stmt, idx)
            }
        }
    }

    private func column(_ stmt: OpaquePointer, _ i: Int32) -> Value {
        switch sqlite3_column_type(stmt, i) {
        case SQLITE_INTEGER: return .int(sqlite3_column_int64(stmt, i))
        case SQLITE_FLOAT: return .double(sqlite3_column_double(stmt, i))
        case SQLITE_TEXT: return .text(String(cString: sqlite3_column_text(stmt, i)))
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(stmt, i))
            guard n > 0, let p = sqlite3_column_blob(stmt, i) else { return .blob(Data()) }
            return .blob(Data(bytes: p, count: n))
        default: return .null
        }
    }

    /// Runs a statement and returns all rows.
    @discardableResult
    public func query(_ sql: String, _ params: [Value] = []) throws -> [Row] {
        let stmt = try prepared(sql)
        defer { sqlite3_reset(stmt) }
        bind(stmt, params)
        var rows: [Row] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_ROW {
                let n = sqlite3_column_count(stmt)
                rows.append((0..<n).map { column(stmt, $0) })
            } else if rc == SQLITE_DONE {
                return rows
            } else {
                throw error(rc, sql)
            }
        }
    }

    /// Runs a statement that returns no rows (or ignores them).
    public func execute(_ sql: String, _ params: [Value] = []) throws {
        try query(sql, params)
    }

    public func scalarString(_ sql: String, _ params: [Value] = []) throws -> String? {
        try query(sql, params).first?.first?.text
    }

    public func scalarInt(_ sql: String, _ params: [Value] = []) throws -> Int64? {
        try query(sql, params).first?.first?.int
    }

    public var changes: Int { Int(sqlite3_changes(db)) }
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(db) }

    /// A write transaction: `BEGIN IMMEDIATE` … `COMMIT`. The commit has returned (and with
    /// synchronous=FULL is durable) when this returns; only then may the caller acknowledge.
    @discardableResult
    public func write<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// A read transaction (a consistent snapshot).
    public func read<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN")
        defer { try? execute("COMMIT") }
        return try body()
    }

    /// `PRAGMA integrity_check`: empty when the database is sound, otherwise the problems.
    public func integrityProblems() throws -> [String] {
        let rows = try query("PRAGMA integrity_check")
        let msgs = rows.compactMap { $0.first?.text }
        return msgs == ["ok"] ? [] : msgs
    }

    /// Copies the whole database, as one consistent snapshot, into a new file at `path` with
    /// SQLite's online backup API (writers may go on meanwhile: the copy restarts when one
    /// commits during it, and stays the snapshot it finished with). The copy is written to a
    /// temp file in `path`'s directory, fsynced, checked (`integrity_check`), renamed into place
    /// and the directory fsynced: when this returns, the backup is durable and whole.
    public func backup(to path: String) throws {
        let dir = Path.parent(path)
        let temp = "\(dir.isEmpty ? "." : dir)/.\(Path.lastComponent(path)).tmp.\(ThisProcess.pid)"
        FileSystem.unlink(temp)
        try Database.createPrivately(temp)
        do {
            try Database.copy(from: db, toFile: temp)
            let fd = try FileDescriptor.open(temp, [.readOnly, .noFollow])
            try fd.closeAfter { () throws(SystemError) in try fd.sync(subject: temp) }
            // A connection of its own, closed (deinit) when the function returns.
            func problemsOfCopy() throws -> [String] { try Database(path: temp, busyTimeout: 1, migrate: false).integrityProblems() }
            let problems = try problemsOfCopy()
            if !problems.isEmpty { throw Error(code: SQLITE_CORRUPT, message: "the copy does not pass integrity_check: \(problems.prefix(3))", sql: nil) }
            // The check opened it in WAL mode; closing checkpointed and removed the WAL.
            try FileSystem.rename(temp, to: path)
            try AtomicFile.fsyncDirectory(dir.isEmpty ? "." : dir)
        } catch {
            FileSystem.unlink(temp)
            FileSystem.unlink(temp + "-wal")
            FileSystem.unlink(temp + "-shm")
            throw error
        }
    }

    /// Replaces this database's contents with those of the database file at `source`, in one
    /// step of SQLite's backup API (it takes the write lock: other connections wait or see the
    /// old contents or the new, never a mix), then migrates them to this schema (an older
    /// backup). The caller checks `source` first.
    public func replaceContents(from source: String) throws {
        let src = try Database.openRaw(source, SQLITE_OPEN_READONLY)
        defer { sqlite3_close_v2(src) }
        finalizeAll()
        try Database.backupAll(from: src, into: db)
        try Schema.migrate(self)
    }

    /// The online backup of `src` into a new database file `path` (created empty already).
    static func copy(from src: OpaquePointer, toFile path: String) throws {
        let dst = try openRaw(path, SQLITE_OPEN_READWRITE)
        defer { sqlite3_close_v2(dst) }
        try backupAll(from: src, into: dst)
    }

    /// A bare connection (no pragmas, no migration) for the backup API; never through a symlink.
    static func openRaw(_ path: String, _ mode: Int32) throws -> OpaquePointer {
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, mode | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, nil)
        guard rc == SQLITE_OK, let handle else {
            if let handle { sqlite3_close_v2(handle) }
            throw Error(code: rc, message: "\(path): cannot open", sql: nil)
        }
        return handle
    }

    /// Copies every page of `src`'s main database into `dst`'s with SQLite's backup API. A
    /// step that finds a lock held for a moment (BUSY, LOCKED) is tried again, for at most ~10 s.
    static func backupAll(from src: OpaquePointer, into dst: OpaquePointer) throws {
        guard let b = sqlite3_backup_init(dst, "main", src, "main") else {
            throw Error(code: sqlite3_errcode(dst), message: String(cString: sqlite3_errmsg(dst)), sql: "backup")
        }
        var step = SQLITE_OK
        for _ in 0..<1000 {
            step = sqlite3_backup_step(b, -1)
            if step == SQLITE_DONE { break }
            if step != SQLITE_BUSY && step != SQLITE_LOCKED && step != SQLITE_OK { break }
            ThisProcess.pause(.milliseconds(10))
        }
        let done = sqlite3_backup_finish(b)
        guard step == SQLITE_DONE, done == SQLITE_OK else {
            throw Error(code: step == SQLITE_DONE ? done : step, message: String(cString: sqlite3_errmsg(dst)), sql: "backup")
        }
    }

    /// `wal_checkpoint(TRUNCATE)`: keeps the WAL from growing while idle (docs/durability.md, "Clean up leftovers").
    public func checkpoint() {
        _ = try? query("PRAGMA wal_checkpoint(TRUNCATE)")
    }
}
