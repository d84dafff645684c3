import CVigil
import FoundationEssentials
import Glibc

/// Starts processes with `posix_spawn` (never `Foundation.Process`, never a shell): argv as
/// given, default signal dispositions, empty signal mask, stdin from /dev/null, stdout and
/// stderr appended to a file, every other descriptor closed.
public enum Spawner {
    public struct Options: Sendable {
        /// Own session (and so own process group): detached from our terminal and signals.
        public var newSession: Bool = true
        /// Own process group only (ignored with `newSession`).
        public var newProcessGroup: Bool = false
        /// Output file (created 0600, appended to; never through a symlink, and a regular file
        /// unless `outputMayBeFIFO`); nil inherits ours.
        public var outputPath: String?
        /// Lets `outputPath` name a FIFO (tests that await a child's output); never for a path
        /// in a state directory (docs/operator-guide.md, "Security of the state directory").
        public var outputMayBeFIFO: Bool = false
        /// A descriptor of ours to become the child's stdout and stderr (a pipe's write end);
        /// used when `outputPath` is nil.
        public var outputDescriptor: Int32?
        public var workingDirectory: String?
        /// Extra or replaced environment variables.
        public var environment: [String: String] = [:]
        /// Whether the child starts from our environment (then `environment` is applied on
        /// top) or from `environment` alone.
        public var inheritEnvironment = true
        public init() {}
    }

    public struct SpawnError: Error, CustomStringConvertible {
        public var path: String
        public var errno: Int32
        public var description: String { "cannot start \(path): \(String(cString: strerror(errno)))" }
    }

    /// Spawns `argv` (argv[0] is the executable path; it is not looked up in PATH unless it has
    /// no slash) and returns the child's identity.
    public static func spawn(_ argv: [String], _ options: Options = Options()) throws -> ProcessIdentity {
        precondition(!argv.isEmpty)
        let path = resolve(argv[0])
        var outFD: Int32 = -1
        if let out = options.outputPath {
            if options.outputMayBeFIFO {
                outFD = try sys("open", out) { open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, PrivateFile.mode) }
            } else {
                outFD = try PrivateFile.open(out, O_WRONLY | O_CREAT | O_APPEND)
            }
        }
        defer { if outFD >= 0 { close(outFD) } }
        let childOut = outFD >= 0 ? outFD : (options.outputDescriptor ?? -1)

        var env = options.inheritEnvironment ? ProcessInfo.processInfo.environment : [:]
        for (k, v) in options.environment { env[k] = v }
        let envStrings = env.map { "\($0.key)=\($0.value)" }

        var pid: pid_t = 0
        let rc = withCStrings(argv) { cargv in
            withCStrings(envStrings) { cenv in
                if let cwd = options.workingDirectory {
                    return cvigil_spawn(&pid, path, cargv, cenv, childOut, cwd, options.newSession ? 1 : 0, options.newProcessGroup ? 1 : 0)
                }
                return cvigil_spawn(&pid, path, cargv, cenv, childOut, nil, options.newSession ? 1 : 0, options.newProcessGroup ? 1 : 0)
            }
        }
        guard rc == 0 else { throw SpawnError(path: path, errno: rc) }
        // The child cannot be reaped before we read its identity: it is our child.
        guard let stat = ProcStat.read(pid: pid) else { throw SpawnError(path: path, errno: ESRCH) }
        return ProcessIdentity(pid: pid, startTicks: stat.startTicks)
    }

    /// Finds an executable in PATH when `name` has no slash.
    public static func resolve(_ name: String) -> String {
        if name.contains("/") { return name }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return name
    }

    /// Reaps our own child `pid` if it has exited; never `waitpid(-1)`.
    @discardableResult
    public static func reap(_ pid: Int32) -> Int32? {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { return status }
            if r == -1 && lastErrno() == EINTR { continue }
            return nil
        }
    }

    /// Waits for our own child `pid` to exit and returns its wait status.
    public static func wait(_ pid: Int32) -> Int32? {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, 0)
            if r == pid { return status }
            if r == -1 && lastErrno() == EINTR { continue }
            return nil
        }
    }
}

/// Exit code (0–255) or, for a killed process, 128 + signal, like a shell reports it.
public func exitCode(fromWaitStatus status: Int32) -> Int32 {
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
}

/// The signal that ended a process, if any.
public func terminatingSignal(fromWaitStatus status: Int32) -> Int32? {
    let sig = status & 0x7f
    return sig != 0 && sig != 0x7f ? sig : nil
}

func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

extension Spawner {
    /// Blocks until our child `pid` has exited, leaving it a zombie (`waitid(WNOWAIT)`: its PID,
    /// and so its process group, stay pinned until `wait`).
    public static func waitWithoutReaping(_ pid: Int32) {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 {
            if lastErrno() != EINTR { return }
        }
    }

    /// Whether our child `pid` has exited (a zombie now), without reaping it.
    public static func hasExited(_ pid: Int32) -> Bool {
        var info = siginfo_t()
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info._sifields._sigchld.si_pid != 0
    }
}

extension ThisProcess {
    /// Replaces this process image with the program at `path` (same PID), `environment` added
    /// to ours first. Returns only when `execv` failed: why.
    public static func exec(path: String, arguments: [String], environment: [String: String]) -> SystemError {
        for (k, v) in environment { setenv(k, v, 1) }
        _ = withCStrings([path] + arguments) { execv(path, $0) }
        return SystemError("execv", errno: lastErrno(), subject: path)
    }
}
