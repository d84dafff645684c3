import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Security of the state directory (docs/operator-guide.md): a directory another user can
/// change is refused before Vigil runs anything it names; nothing is written through a planted
/// symlink; what Vigil creates is 0700/0600. Real processes, and a real second local user.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct SecurityTests {
    /// A second local user, created for one test and removed after it (`userdel -r`).
    struct OtherUser {
        let name: String
        let uid: uid_t
        let gid: gid_t

        /// nil (with a loud skip, or a recorded issue when `VIGIL_REQUIRE_USERADD=1`) where
        /// users cannot be created here.
        static func make(sourceLocation: SourceLocation = #_sourceLocation) -> OtherUser? {
            let name = "vigilsec\(UInt32.random(in: 100_000...999_999))"
            let why: String
            if geteuid() != 0 {
                why = "not root"
            } else if access("/usr/sbin/useradd", X_OK) != 0 {
                why = "no /usr/sbin/useradd"
            } else if run(["/usr/sbin/useradd", "-m", "-s", "/usr/sbin/nologin", name]) != 0 {
                why = "useradd \(name) failed"
            } else if let pw = getpwnam(name) {
                return OtherUser(name: name, uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid)
            } else {
                why = "useradd \(name) made no passwd entry"
            }
            if ProcessInfo.processInfo.environment["VIGIL_REQUIRE_USERADD"] == "1" {
                Issue.record("cannot create a second local user (\(why)), and VIGIL_REQUIRE_USERADD=1", sourceLocation: sourceLocation)
            } else {
                print("*** SKIPPED (\(sourceLocation.fileID):\(sourceLocation.line)): cannot create a second local user: \(why)")
            }
            return nil
        }

        func remove() {
            #expect(OtherUser.run(["/usr/sbin/userdel", "-r", name]) == 0, "userdel -r \(name)")
        }

        func own(_ path: String) {
            #expect(chown(path, uid, gid) == 0, "chown \(name) \(path)")
        }

        static func run(_ argv: [String]) -> Int32 {
            var o = Spawner.Options()
            o.newSession = false
            o.outputPath = "/dev/null"
            guard let id = try? Spawner.spawn(argv, o), let status = Spawner.wait(id.pid) else { return -1 }
            return exitCode(fromWaitStatus: status)
        }
    }

    /// A root-only temp directory outside the state directory (targets of planted links, the
    /// "evil" command and its marker); removed by the caller.
    static func aside() -> String {
        try! TempDir.make("vigil-aside")
    }

    /// An executable that touches `marker`: it must never run.
    static func evilScript(in dir: String) throws -> (script: String, marker: String) {
        let script = dir + "/evil.sh", marker = dir + "/evil-ran"
        try "#!/bin/sh\ntouch \(marker)\necho 1.0\n".write(toFile: script, atomically: true, encoding: .utf8)
        #expect(chmod(script, 0o755) == 0)
        return (script, marker)
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// The reproduction of issue 9 §1: another user's 0777 directory with a vigil.json naming
    /// their command. The wrapper refuses (exit 2) before it opens anything there, the runner
    /// refuses too, and the command never runs.
    @Test func anotherUsersWorldWritableDirectoryIsRefused() throws {
        guard let user = OtherUser.make() else { return }
        defer { user.remove() }
        let h = Harness()
        let side = SecurityTests.aside()
        defer { h.finish(); try? FileManager.default.removeItem(atPath: side) }
        let evil = try SecurityTests.evilScript(in: side)
        h.write("vigil.json", #"{"version-command": "\#(evil.script)"}"#)
        user.own(h.dir + "/vigil.json")
        user.own(h.dir)
        #expect(chmod(h.dir, 0o777) == 0)

        let wrapper = try h.startWrapper()
        #expect(try h.waitExit(wrapper) == 2, "the wrapper refuses an unsafe state dir with exit 2 (and relaunches nothing)")
        let wrapperLog = (try? String(contentsOfFile: h.dir + "/wrapper.out", encoding: .utf8)) ?? ""
        #expect(wrapperLog.contains("owned by uid \(user.uid)"), "wrapper log: \(wrapperLog)")
        #expect(!SecurityTests.exists(h.dir + "/wrapper.lock"), "the wrapper took no lock in it")

        let runner = try h.startRunner()
        #expect(try h.waitExit(runner) == 2, "the runner refuses it with exit 2")
        let runnerLog = (try? String(contentsOfFile: h.dir + "/runner.out", encoding: .utf8)) ?? ""
        #expect(runnerLog.contains("owned by uid \(user.uid) (\(user.name))") && runnerLog.contains("Security of the state directory"),
                "runner log: \(runnerLog)")
        for name in ["journal.jsonl", "runner.lock", "vigil.db", "runner.json"] {
            #expect(!SecurityTests.exists(h.dir + "/" + name), "\(name) was created in a refused directory")
        }

        // Commands that write refuse it; `status` only reads, and warns.
        let restart = try h.vigil(["restart", "runner"])
        #expect(restart.code == 2 && !SecurityTests.exists(h.dir + "/runner.restart"), "restart: \(restart.code) \(restart.err)")
        let status = try h.vigil(["status"])
        #expect(status.code == 0 && status.err.contains("warning"), "status: \(status.code) \(status.err)")

        #expect(!SecurityTests.exists(evil.marker), "the other user's version command ran")
    }

    /// A vigil.json the other user owns, in root's own 0700 directory: refused, not run.
    @Test func anotherUsersConfigIsRefused() throws {
        guard let user = OtherUser.make() else { return }
        defer { user.remove() }
        let h = Harness()
        let side = SecurityTests.aside()
        defer { h.finish(); try? FileManager.default.removeItem(atPath: side) }
        let evil = try SecurityTests.evilScript(in: side)
        h.write("vigil.json", #"{"version-command": "\#(evil.script)"}"#)
        user.own(h.dir + "/vigil.json")

        let wrapper = try h.startWrapper()
        #expect(try h.waitExit(wrapper) == 2, "the runner refuses the config with exit 2 and the wrapper does not relaunch it")
        let log = (try? String(contentsOfFile: h.dir + "/wrapper.out", encoding: .utf8)) ?? ""
        #expect(log.contains("vigil.json is owned by uid \(user.uid)"), "wrapper log: \(log)")
        #expect(log.contains("not relaunching"), "wrapper log: \(log)")
        #expect(!SecurityTests.exists(evil.marker), "the other user's version command ran")

        // Writable by others (owned by root): refused as well.
        #expect(chown(h.dir + "/vigil.json", 0, 0) == 0 && chmod(h.dir + "/vigil.json", 0o666) == 0)
        let runner = try h.startRunner()
        #expect(try h.waitExit(runner) == 2)
        #expect(!SecurityTests.exists(evil.marker))
    }

    /// Symlinks planted in the slots Vigil appends to or locks point outside the directory:
    /// the pair runs healthy, the links are quarantined (journaled), and no target is touched.
    @Test func plantedSymlinksAreNeverWrittenThrough() throws {
        let h = Harness()
        let side = SecurityTests.aside()
        defer { h.finish(); try? FileManager.default.removeItem(atPath: side) }
        let secret = side + "/root-only", chat = side + "/chat-target", lockTarget = side + "/made-by-vigil"
        try "secret\n".write(toFile: secret, atomically: true, encoding: .utf8)
        #expect(chmod(secret, 0o600) == 0)
        try "mine\n".write(toFile: chat, atomically: true, encoding: .utf8)
        #expect(symlink(secret, h.dir + "/journal.jsonl") == 0)
        #expect(symlink(lockTarget, h.dir + "/bridge.lock") == 0)
        #expect(symlink(chat, h.dir + "/chat.log") == 0)
        #expect(mkfifo(h.dir + "/runner.lock", 0o600) == 0)

        try h.startRunner()
        try h.waitHealthy()
        // The start announcement reaches the console: chat.log is a file of ours now.
        try h.waitUntil("chat.log written") {
            (try? String(contentsOfFile: h.dir + "/chat.log", encoding: .utf8))?.contains("Vigil started") == true
        }
        #expect(PrivateFile.slotKind(h.dir + "/chat.log") == "a regular file")
        #expect(PrivateFile.slotKind(h.dir + "/journal.jsonl") == "a regular file")
        let quarantined = Set(h.events("quarantined").compactMap { $0["file"]?.stringValue })
        #expect(quarantined.isSuperset(of: ["journal.jsonl", "bridge.lock", "chat.log", "runner.lock"]), "journaled: \(quarantined)")
        #expect(try String(contentsOfFile: secret, encoding: .utf8) == "secret\n")
        #expect(try String(contentsOfFile: chat, encoding: .utf8) == "mine\n")
        #expect(!SecurityTests.exists(lockTarget), "a lock file was created at the link's target")
    }

    /// The wrapper takes its lock only on a regular file: a symlink there is refused (exit 2).
    @Test func wrapperLockSymlinkIsRefused() throws {
        let h = Harness()
        let side = SecurityTests.aside()
        defer { h.finish(); try? FileManager.default.removeItem(atPath: side) }
        let target = side + "/made-by-wrapper"
        #expect(symlink(target, h.dir + "/wrapper.lock") == 0)
        let wrapper = try h.startWrapper()
        #expect(try h.waitExit(wrapper) == 2)
        let log = (try? String(contentsOfFile: h.dir + "/wrapper.out", encoding: .utf8)) ?? ""
        #expect(log.contains("wrapper.lock is not a regular file"), "wrapper log: \(log)")
        #expect(!SecurityTests.exists(target), "the wrapper created its lock at the link's target")
        #expect(!SecurityTests.exists(h.dir + "/runner.lock"), "a runner started")
    }

    /// A state directory made by scripts/vigil-run, after a healthy pair ran a mission: the
    /// directory and every directory in it 0700, every file 0600 (the kept program 0700).
    @Test func freshStateDirectoryIsPrivate() throws {
        let h = Harness(uncreated: true)
        defer { h.finish() }
        try h.startWrapper()
        try h.waitHealthy()
        let add = try h.vigil(["mission", "add", "--", "/bin/sh", "-c", "echo out; echo err >&2"])
        #expect(add.code == 0, "mission add: \(add.err)")
        try h.waitUntil("mission done") {
            let list = try h.vigil(["mission", "list", "--json"])
            guard case .array(let items)? = JSONValue.parse(Data(list.out.utf8)) else { return false }
            return items.first?["state"]?.stringValue == "done"
        }
        try h.waitUntil("chat.log and the database's WAL exist") {
            SecurityTests.exists(h.dir + "/chat.log") && SecurityTests.exists(h.dir + "/vigil.db-wal")
                && SecurityTests.exists(h.dir + "/bridge.log")
        }
        var loose: [String] = []
        var seen = 0
        func walk(_ p: String) {
            var st = stat()
            guard lstat(p, &st) == 0 else { return } // removed meanwhile (a temp file)
            seen += 1
            let perm = st.st_mode & 0o7777
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                if perm != 0o700 { loose.append("\(p) dir \(String(perm, radix: 8))") }
                for name in (try? FileManager.default.contentsOfDirectory(atPath: p)) ?? [] { walk(p + "/" + name) }
            case S_IFREG:
                let ok = perm == 0o600 || (p.hasSuffix("/program/good") && perm == 0o700)
                if !ok { loose.append("\(p) \(String(perm, radix: 8))") }
            default:
                loose.append("\(p) is \(PrivateFile.slotKind(p) ?? "?")")
            }
        }
        walk(h.dir)
        #expect(seen > 10, "walked \(seen) entries")
        #expect(loose.isEmpty, "not private: \(loose)")
        let stopped = try h.vigil(["stop"])
        #expect(stopped.code == 0)
    }

    /// A state directory from an older Vigil (0755, files 0644) is tightened at start, journaled.
    @Test func looseModesOfAnOlderVigilAreTightened() throws {
        let h = Harness()
        defer { h.finish() }
        #expect(chmod(h.dir, 0o755) == 0)
        h.write("heal.reset.old", "x")
        #expect(chmod(h.dir + "/heal.reset.old", 0o644) == 0)
        try h.startRunner()
        try h.waitHealthy()
        var st = stat()
        #expect(stat(h.dir, &st) == 0 && st.st_mode & 0o777 == 0o700)
        #expect(stat(h.dir + "/heal.reset.old", &st) == 0 && st.st_mode & 0o777 == 0o600)
        let paths = h.events("state-dir-tightened").flatMap { (e: [String: JSONValue]) -> [JSONValue] in
            if case .array(let a)? = e["paths"] { return a }
            return [] }.compactMap(\.stringValue)
        #expect(paths.contains(".") && paths.contains("heal.reset.old"), "journaled: \(paths)")
    }
}
