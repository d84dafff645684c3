import Foundation
import Glibc
import VigilCore
import VigilSystem

/// Git repositories for the workspace tests and `vigil-bench workspace` (docs/workspaces.md,
/// "Tests (planned)"): bare repositories made through a scratch working clone, commits pushed
/// to them, and a real `git daemon` to serve them over git://.
public enum GitFixture {
    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    static let identity = ["-c", "user.name=Vigil Test", "-c", "user.email=vigil@test.invalid",
                           "-c", "core.hooksPath=/dev/null", "-c", "init.defaultBranch=main"]

    /// Runs `git ARGS` (in `directory` when given) and returns its output, or throws with it.
    @discardableResult
    public static func git(_ args: [String], in directory: String? = nil, timeout: TimeSpan = .seconds(120)) throws -> String {
        let argv = ["git"] + identity + (directory.map { ["-C", $0] } ?? []) + args
        let out = try CommandRun.run(argv, environment: ["GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"], timeout: timeout)
        guard out.succeeded else {
            throw Failure(message: "git \(args.joined(separator: " ")) failed (\(out.timedOut ? "timed out" : "exit \(out.exitCode ?? -1)")): \(out.output.suffix(600))")
        }
        return out.output
    }

    /// Makes a bare repository at `path` whose `branch` (also its HEAD) has one commit of
    /// `files` small files (`d<k>/f<n>.txt`, 100 to a directory) plus a `.gitignore` that
    /// ignores `build/` and `*.log`. Returns the commit id.
    @discardableResult
    public static func makeBareRepo(at path: String, files: Int, branch: String = "main") throws -> String {
        try git(["init", "--quiet", "--bare", "--initial-branch=" + branch, path])
        let scratch = try TempDirectory.make(prefix: "vigil-git-scratch")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let work = scratch + "/work"
        try git(["init", "--quiet", "--initial-branch=" + branch, work])
        try Data("build/\n*.log\n".utf8).write(to: URL(fileURLWithPath: work + "/.gitignore"))
        for n in 0..<files {
            let dir = work + "/d\(n / 100)"
            if n % 100 == 0 { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
            try Data("file \(n)\nline two of \(n)\n".utf8).write(to: URL(fileURLWithPath: dir + "/f\(n).txt"))
        }
        try git(["add", "-A"], in: work)
        try git(["commit", "--quiet", "-m", "\(files) files"], in: work)
        try git(["push", "--quiet", path, "HEAD:refs/heads/" + branch], in: work)
        return try head(of: path, branch: branch)
    }

    /// Pushes a new commit to `bare`'s `branch` that writes `content` to `file`; returns its id.
    @discardableResult
    public static func pushCommit(to bare: String, branch: String = "main", file: String = "pushed.txt", content: String) throws -> String {
        let scratch = try TempDirectory.make(prefix: "vigil-git-push")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let work = scratch + "/work"
        try git(["clone", "--quiet", "--branch", branch, bare, work])
        let target = work + "/" + file
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(content.utf8).write(to: URL(fileURLWithPath: target))
        try git(["add", "-A"], in: work)
        try git(["commit", "--quiet", "-m", "change \(file)"], in: work)
        try git(["push", "--quiet", "origin", "HEAD:refs/heads/" + branch], in: work)
        return try head(of: bare, branch: branch)
    }

    /// The commit `branch` points to in the repository at `path`.
    public static func head(of path: String, branch: String) throws -> String {
        try git(["rev-parse", "refs/heads/" + branch], in: path).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
    public static func freePort() throws -> UInt16 {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw Failure(message: "socket failed") }
        defer { close(s) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw Failure(message: "bind to 127.0.0.1:0 failed") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        return UInt16(bigEndian: addr.sin_port)
    }

    /// Whether something accepts a TCP connection on 127.0.0.1:`port` now.
    public static func accepts(port: UInt16) -> Bool {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { return false }
        defer { close(s) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }
}

/// A real `git daemon` on 127.0.0.1 serving every repository under `basePath`
/// (`git://127.0.0.1:PORT/NAME.git`), as our child in its own session. `stop()` kills it and
/// whatever it forked (its process group, pinned by the unreaped daemon) and reaps it;
/// `start()` again listens on the same port, so URLs stay valid across a stop. Not Sendable:
/// one test owns it.
public final class GitDaemon {
    public let basePath: String
    public let port: UInt16
    private var child: ProcessIdentity?

    public init(basePath: String, port: UInt16? = nil) throws {
        self.basePath = basePath
        self.port = try port ?? GitFixture.freePort()
        try start()
    }

    deinit { stop() }

    /// The URL of the repository at `basePath/NAME.git` (`repo` is NAME or NAME.git).
    public func url(for repo: String) -> String {
        "git://127.0.0.1:\(port)/" + (repo.hasSuffix(".git") ? repo : repo + ".git")
    }

    public var isRunning: Bool { child?.isAlive ?? false }
    public var pid: Int32? { child?.pid }

    /// Starts the daemon (no-op when running) and returns once it accepts connections.
    public func start(readyTimeout: TimeSpan = .seconds(20)) throws {
        if child != nil { return }
        let daemon = FileSystem.isAccessible("/usr/lib/git-core/git-daemon", .execute) ? ["/usr/lib/git-core/git-daemon"] : ["git", "daemon"]
        var options = Spawner.Options()
        options.outputPath = "/dev/null"
        options.outputMayBeFIFO = true
        let id = try Spawner.spawn(daemon + ["--listen=127.0.0.1", "--port=\(port)", "--reuseaddr", "--export-all",
                                              "--informative-errors", "--base-path=" + basePath, basePath], options)
        child = id
        let ready = waitUntil(timeout: readyTimeout, every: .milliseconds(10)) {
            GitFixture.accepts(port: port) || Spawner.hasExited(id.pid)
        }
        if !ready || Spawner.hasExited(id.pid) {
            stop()
            throw GitFixture.Failure(message: "git daemon on port \(port) did not start")
        }
    }

    /// Kills the daemon and its forked servers, and reaps it. Idempotent.
    public func stop() {
        guard let id = child else { return }
        child = nil
        // Our unreaped child, leader of its own session and group: the group id is its own.
        ProcessGroup(id: id.pid).signal(.kill)
        _ = Spawner.wait(id.pid)
    }
}
