import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil backup FILE` and `vigil restore FILE` (docs/operator-guide.md, "Backup and restore").
enum BackupCommand {
    static let backup = Command(name: "backup", summary: "copy the database to FILE (online, fsynced, checked)", help: """
    usage: vigil backup [--force] FILE

    Copies vigil.db (missions, outbox, chat inbox) to FILE as one consistent snapshot, with
    SQLite's online backup API: the pair may keep running. The copy is fsynced and passes
    PRAGMA integrity_check before it is renamed to FILE; an existing FILE is replaced only with
    --force. FILE is created 0600: it holds chat tokens and every mission's argv.
    """, run: runBackup)

    static let restore = Command(name: "restore", summary: "replace the database with a backup (the pair stopped)", help: """
    usage: vigil restore FILE

    Replaces vigil.db with the backup FILE: refused while a runner or bridge runs on the state
    directory (stop them first: vigil stop), and refused unless FILE is a Vigil database that
    passes integrity_check. The database as it was is first saved beside it as
    vigil.db.before-restore.<time> (a backup like any other). Files under missions/ are kept:
    at the next start the runner moves aside mission directories no row claims and journals
    them (docs/missions.md). Journaled as db-restored.
    """, run: runRestore)

    static func runBackup(_ inv: Invocation) throws {
        let args = try Arguments(inv.arguments, valued: [], booleans: ["force"])
        guard args.positional.count == 1, args.rest == nil else { throw UsageError("usage: vigil backup [--force] FILE") }
        let target = absolute(args.positional[0])
        guard FileManager.default.fileExists(atPath: inv.stateDir.database) else {
            throw CommandError("no database at \(inv.stateDir.database): nothing to back up")
        }
        if PrivateFile.slotKind(target) != nil && !args.has("force") {
            throw CommandError("\(target) exists; pass --force to replace it")
        }
        if let kind = PrivateFile.slotKind(target), kind != "a regular file" {
            throw CommandError("\(target) is \(kind): refused, never written through")
        }
        let db = try Database(path: inv.stateDir.database, busyTimeout: 10)
        try db.backup(to: target)
        let missions = (try? Database(path: target, busyTimeout: 1, migrate: false).scalarInt("SELECT count(*) FROM missions")) ?? nil
        Journal(path: inv.stateDir.journal, source: "cli").append(.dbBackup, ["file": .string(target), "missions": missions.map { .int($0) } ?? .null])
        printOut("backup written: \(target) (\(missions.map { "\($0) missions" } ?? "?"), \(ByteSize.format(UInt64(fileSize(target)))))")
    }

    static func runRestore(_ inv: Invocation) throws {
        let args = try Arguments(inv.arguments, valued: [])
        guard args.positional.count == 1, args.rest == nil else { throw UsageError("usage: vigil restore FILE") }
        let source = absolute(args.positional[0])
        let dir = inv.stateDir
        for role in [StateDirectory.Role.runner, .bridge] where !FileLock.isFree(dir.lock(role)) {
            throw CommandError("a \(role.rawValue) is running on \(dir.path): stop the pair first (vigil stop), then restore", code: 3)
        }
        guard PrivateFile.slotKind(source) == "a regular file" else {
            throw CommandError("\(source) is \(PrivateFile.slotKind(source) ?? "missing"): give the path of a backup file")
        }
        // The backup must be a sound Vigil database; checked on a copy of our own, so the file
        // itself is never written (opening it read-write could create a WAL beside it).
        let check = try TempDirectory.make(prefix: "vigil-restore")
        defer { try? FileManager.default.removeItem(atPath: check) }
        try AtomicFile.copy(from: source, to: check + "/vigil.db", mode: PrivateFile.mode)
        let missions: Int64
        do {
            let probe = try Database(path: check + "/vigil.db", busyTimeout: 1, migrate: false)
            let problems = try probe.integrityProblems()
            guard problems.isEmpty else { throw CommandError("\(source) does not pass integrity_check: \(problems.prefix(3).joined(separator: "; "))") }
            guard let n = try? probe.scalarInt("SELECT count(*) FROM missions") else {
                throw CommandError("\(source) is not a Vigil database (no missions table)")
            }
            missions = n
        } catch let e as Database.Error {
            throw CommandError("\(source) is not a usable database: \(e)")
        }
        let db = try Database(path: dir.database, busyTimeout: 10)
        let stamp = Clock.iso(Clock.wall()).replacing(":", with: "")
        let before = dir.databaseBeforeRestore(stamp: stamp)
        try db.backup(to: before)
        try db.replaceContents(from: check + "/vigil.db")
        Journal(path: dir.journal, source: "cli").append(.dbRestored, ["file": .string(source), "missions": .int(missions), "previous": .string(before)])
        printOut("restored \(source) (\(missions) missions); the database as it was is in \(before)")
    }

    static func absolute(_ p: String) -> String {
        p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
    }

    static func fileSize(_ p: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: p))?[.size] as? Int) ?? 0
    }
}
