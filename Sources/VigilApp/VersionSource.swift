import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// Where "the current version" comes from (docs/operator-guide.md, "Configuration"): a file's
/// contents, a command's output, or by default the identity of the executable on disk.
///
/// For the probe (`current()`), a version command runs in the background and never blocks a
/// tick: its last answer is used, it is re-run every `refresh`, and one that runs longer than
/// `timeout` is killed and journaled.
public final class VersionSource {
    public enum Kind: Equatable {
        case executable(String)
        case file(String)
        case command([String])
    }

    public let kind: Kind
    let timeout: TimeSpan
    let refresh: TimeSpan
    private var cached: String?
    private var running: (identity: ProcessIdentity, started: BootInstant, output: String)?
    private var lastRun: BootInstant?
    /// Set when the last attempt failed (shown in status and journaled by the runner).
    public private(set) var problem: String?

    /// Where a version command's output is collected: a temp-file name in the state directory,
    /// so a writer killed meanwhile leaves nothing that the start-up sweep does not remove.
    let scratchDir: String

    public init(tunables: Tunables, scratchDir: String = FileManager.default.temporaryDirectory.path, executable: String = Executable.path,
                timeout: TimeSpan = .seconds(5), refresh: TimeSpan = .seconds(5)) {
        self.scratchDir = scratchDir
        if let f = tunables.versionFile { kind = .file(f) }
        else if let c = tunables.versionCommand { kind = .command(c.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)) }
        else { kind = .executable(executable) }
        self.timeout = timeout
        self.refresh = refresh
    }

    /// The version of the program on disk now, as cheaply as possible; nil when unknown.
    public func current(now: BootInstant = Clock.boot()) -> String? {
        switch kind {
        case .executable(let path):
            let v = executableIdentity.identity(path)
            problem = v == nil ? "the executable \(path) is missing" : nil
            return v
        case .file(let path):
            return readVersionFile(path)
        case .command(let argv):
            pollCommand(argv, now: now)
            return cached
        }
    }

    /// The version a runner hands to a bridge it spawns (`VersionSource.handedStampVariable`):
    /// its last version command answer, so the bridge need not wait for the command before
    /// its first heartbeat (docs/architecture.md, "Bridge start"). Nil for the other kinds
    /// (the bridge's own stat or read is as cheap) and while the command has not answered.
    public var stampForSpawn: String? {
        if case .command = kind, problem == nil { return cached }
        return nil
    }

    /// The environment variable carrying `stampForSpawn` to a spawned bridge.
    public static let handedStampVariable = "VIGIL_VERSION_STAMP"

    /// The version this process stamps at start: the running image for the default kind;
    /// otherwise the file or the command's output now (a command is waited for, bounded),
    /// unless the runner that spawned us handed its answer (`handed`, command kind only: a
    /// stale one costs at most one tier-1 re-exec, which runs the command itself).
    public func stamp(handed: String? = nil) -> String {
        switch kind {
        case .executable: return Executable.runningIdentity
        case .file(let path): return readVersionFile(path) ?? "unknown"
        case .command(let argv):
            if let handed, handed.hasPrefix("cmd:") { return handed }
            pollCommand(argv, now: Clock.boot())
            // Wait on the command's pidfd (bounded by the timeout), then collect its output.
            if let r = running, let pidfd = r.identity.openPidFD() {
                _ = pidfd.waitForExit(timeoutMilliseconds: timeout.pollMilliseconds)
            }
            pollCommand(argv, now: Clock.boot())
            cancel()
            return cached ?? "unknown"
        }
    }

    private var executableIdentity = Executable.IdentityCache()
    private var fileCheck = FileChangeCheck(followSymlinks: true)

    /// The version file's contents, re-read only when the file changed (a stat per probe;
    /// `FileChangeCheck`: a rewrite within the timestamp granularity is still seen).
    private func readVersionFile(_ path: String) -> String? {
        if fileCheck.isUnchanged(path), let cached { return cached }
        cached = readVersionFileNow(path)
        if cached == nil { fileCheck.forget() }
        return cached
    }

    private func readVersionFileNow(_ path: String) -> String? {
        // An operator's path (a link is fine), read without blocking (docs/operator-guide.md, "Bad input").
        let data: [UInt8]
        switch StateSlot.read(path, followSymlinks: true) {
        case .bytes(let b): data = b
        case .absent:
            problem = "cannot read the version file \(path)"
            return nil
        case .unfit(let why):
            problem = "cannot read the version file \(path): it is \(why)"
            return nil
        }
        problem = nil
        let text = String(decoding: data.prefix(4096), as: UTF8.self).trimmingWhitespace()
        return text.isEmpty ? "empty" : "file:" + text
    }

    private func pollCommand(_ argv: [String], now: BootInstant) {
        if let r = running {
            if let status = Spawner.reap(r.identity.pid) {
                let out = (try? String(contentsOfFile: r.output, encoding: .utf8)) ?? ""
                FileSystem.unlink(r.output)
                running = nil
                let code = exitCode(fromWaitStatus: status)
                let text = out.trimmingWhitespace()
                if code == 0 && !text.isEmpty {
                    cached = "cmd:" + String(text.prefix(256))
                    problem = nil
                } else {
                    problem = "the version command \(argv.joined(separator: " ")) failed (exit \(code))"
                }
            } else if now - r.started > timeout {
                killGroup(r.identity)
                _ = Spawner.wait(r.identity.pid)
                FileSystem.unlink(r.output)
                running = nil
                problem = "the version command \(argv.joined(separator: " ")) hung for more than \(timeout); killed"
            }
            return
        }
        if let last = lastRun, now - last < refresh, cached != nil || problem != nil { return }
        lastRun = now
        let output = "\(scratchDir)/.version.tmp.\(ThisProcess.pid).\(UInt32.random(in: 0...UInt32.max))"
        var opts = Spawner.Options()
        opts.newSession = false
        opts.newProcessGroup = true
        opts.outputPath = output
        do {
            let id = try Spawner.spawn(argv, opts)
            running = (id, now, output)
        } catch {
            problem = "the version command \(argv.joined(separator: " ")) cannot start: \(error)"
        }
    }

    /// The command runs as the leader of its own process group and is our child, not reaped
    /// yet: its PID (even as a zombie) pins the group id, so the group signal cannot reach
    /// anyone else. End the leader through its verified identity, then the rest of the group.
    private func killGroup(_ id: ProcessIdentity) {
        id.perform(.kill(wait: .zero))
        ProcessGroup(id: id.pid).signal(.kill)
    }

    /// Kills a version command still running (on exit).
    public func cancel() {
        if let r = running {
            killGroup(r.identity)
            _ = Spawner.wait(r.identity.pid)
            FileSystem.unlink(r.output)
            running = nil
        }
    }
}
