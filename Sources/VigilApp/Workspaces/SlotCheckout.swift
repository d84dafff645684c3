import FoundationEssentials
import VigilCore
import VigilSystem

/// Why a slot operation failed, in one line for the operator (the caller journals it), and
/// whether the checkout is beyond repair (delete it and clone anew).
public struct SlotFailure: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    public var reclone: Bool

    public init(reason: String, reclone: Bool) {
        self.reason = reason
        self.reclone = reclone
    }

    public var description: String { reason }
}

/// Everything that runs git on one slot's directory (docs/workspaces.md, "A slot's life",
/// "Releasing a slot", "Anomalies and auto-recover"). Every git command goes through `git`:
/// argv (never a shell), bounded by `settings.timeout`, with hooks and fsmonitor off (a
/// mission works in the slot as the same user and may have planted either; the cleaner must
/// not run them) and the repository named explicitly (`--git-dir`, `--work-tree`), so git
/// never looks further up for another one, nor follows a `core.worktree` a mission set.
/// Nothing is logged here: failures are returned as reasons.
public struct SlotCheckout: Sendable {
    public let path: String
    public let url: String
    public let branch: String
    public let settings: GitSettings

    public init(path: String, url: String, branch: String, settings: GitSettings = GitSettings()) {
        self.path = path
        self.url = url
        self.branch = branch
        self.settings = settings
    }

    var gitDir: String { path + "/.git" }
    var originRef: String { "refs/remotes/origin/" + branch }

    // MARK: - The operations

    /// The remote's default branch (`git ls-remote --symref URL HEAD`), retried like fetch.
    public static func defaultBranch(of url: String, settings: GitSettings) throws(SlotFailure) -> String {
        try refuseOptionLike(url)
        let out = try network("ls-remote", ["ls-remote", "--symref", url, "HEAD"], settings: settings)
        for line in out.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            guard fields.count == 2, fields[1] == "HEAD", fields[0].hasPrefix("ref: refs/heads/") else { continue }
            let name = fields[0].dropFirst("ref: refs/heads/".count).trimmingWhitespace(keepingNewlines: true)
            if !name.isEmpty { return name }
        }
        throw SlotFailure(reason: "ls-remote: \(url) names no default branch (an empty repository, or a server that does not say)", reclone: false)
    }

    /// Removes whatever is at `path` (a symlink itself, never what it points to), then clones
    /// `url` at `branch` into it; retried, each try starting from nothing again (a killed clone
    /// leaves a partial directory).
    ///
    /// Objects are copied, not hard-linked, from a local repository (`--no-hardlinks`): a
    /// hard-linked object file is the same file in the source and in every slot, so a mission
    /// that writes one in place would damage the source and every later clone with it, and a
    /// slot must fail and heal alone (docs/workspaces.md, "Why full clones").
    public func cloneFresh() throws(SlotFailure) {
        try Self.refuseOptionLike(url)
        let parent = Path.parent(path)
        _ = try Self.network("clone", ["clone", "--no-hardlinks", "--branch", branch, "--", url, path], settings: settings) { () throws(SlotFailure) in
            try removeSlotDirectory()
            do {
                try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            } catch {
                throw SlotFailure(reason: "cannot make \(parent): \(Self.firstLine(String(describing: error)))", reclone: true)
            }
        }
        if let why = inspect(fsck: false) {
            throw SlotFailure(reason: "clone made a damaged checkout: \(why)", reclone: true)
        }
    }

    /// Makes the slot clean: at `origin/BRANCH` as just fetched, nothing else in the work tree,
    /// no other local branch, no stash, no operation in progress. Throws `reclone: true` when
    /// the checkout is damaged (see `inspect`, without fsck) or a local step fails; a failed
    /// fetch is `reclone: false` (the network, not the checkout).
    public func clean() throws(SlotFailure) {
        if let why = inspect(fsck: false) { throw SlotFailure(reason: why, reclone: true) }
        try resetConfig()
        _ = removeStaleLocks()
        removeOperationState()
        let before = originTip()
        if before != nil { try resetToOrigin() }
        _ = try Self.network("fetch", slotArguments(["fetch", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*"]), settings: settings)
        // The fetch brought nothing new: the work tree is at origin/BRANCH already.
        if before == nil || originTip() != before { try resetToOrigin() }
        try dropOtherRefs()
        if let why = inspect(fsck: false) { throw SlotFailure(reason: "still damaged after cleaning: \(why)", reclone: true) }
    }

    /// Why the checkout is damaged; nil when sound. The quick checks: the directory and a real
    /// `.git` directory are there, HEAD resolves to a commit that can be read
    /// (`rev-parse --verify HEAD^{commit}`: this reads the commit object, so a pack cut short is
    /// found here already), `remote.origin.url` is `url`. With `fsck`, `git fsck` besides
    /// (a lost blob or tree is found only there).
    public func inspect(fsck: Bool) -> String? {
        guard let slot = FileStatus.at(path, followSymlinks: false) else { return "the slot directory \(path) is missing" }
        guard slot.kind == .directory else { return "\(path) is \(slot.kindPhrase), not a directory" }
        guard let dotGit = FileStatus.at(gitDir, followSymlinks: false) else { return ".git is missing in \(path)" }
        guard dotGit.kind == .directory else { return "\(gitDir) is \(dotGit.kindPhrase), not a directory" }
        switch Self.git(slotArguments(["rev-parse", "--verify", "HEAD^{commit}"]), settings: settings) {
        case .failed(let line): return "HEAD is unreadable: \(line)"
        case .ok: break
        }
        switch Self.git(slotArguments(["config", "--get", "remote.origin.url"]), settings: settings) {
        case .failed: return "origin has no URL (expected \(url))"
        case .ok(let out):
            let origin = out.trimmingWhitespace()
            if origin != url { return "origin is \(Self.clip(origin)), not \(url)" }
        }
        if fsck {
            if case .failed(let line) = Self.git(slotArguments(["fsck", "--no-progress", "--no-dangling"]), settings: settings, firstLine: true) {
                return "git fsck: \(line)"
            }
        }
        return nil
    }

    /// The lock files git leaves behind when it is killed, relative to the slot
    /// (`.git/index.lock`, `.git/refs/heads/x.lock`, …); symlinks are not followed.
    public func staleLocks() -> [String] {
        var found: [String] = []
        for name in ["index.lock", "HEAD.lock", "packed-refs.lock", "config.lock", "shallow.lock"] where FileStatus.at(gitDir + "/" + name, followSymlinks: false) != nil {
            found.append(".git/" + name)
        }
        func walk(_ relative: String, depth: Int) {
            guard depth < 64, let names = try? FileManager.default.contentsOfDirectory(atPath: path + "/" + relative) else { return }
            for name in names.sorted() {
                let child = relative + "/" + name
                guard let st = FileStatus.at(path + "/" + child, followSymlinks: false) else { continue }
                if st.kind == .directory {
                    walk(child, depth: depth + 1)
                } else if name.hasSuffix(".lock") {
                    found.append(child)
                }
            }
        }
        if FileStatus.at(gitDir + "/refs", followSymlinks: false)?.kind == .directory { walk(".git/refs", depth: 0) }
        return found
    }

    /// Removes the stale lock files (the names, never what a symlink points to); how many.
    public func removeStaleLocks() -> Int {
        staleLocks().filter { FileSystem.unlink(path + "/" + $0) }.count
    }

    // MARK: - Steps of clean

    /// `checkout -f -B BRANCH origin/BRANCH`: BRANCH made again at origin's tip (whatever a
    /// mission did to it) and checked out with index and work tree reset to it, which is
    /// `reset --hard origin/BRANCH` on BRANCH (a separate reset would only scan the tree again);
    /// then `clean -ffdx` (ignored files and nested repositories too).
    private func resetToOrigin() throws(SlotFailure) {
        try local("checkout", ["checkout", "-f", "-B", branch, originRef])
        try local("clean", ["clean", "-ffdx"])
    }

    /// The commit `origin/BRANCH` names now, nil when there is none.
    private func originTip() -> String? {
        guard case .ok(let out) = Self.git(slotArguments(["rev-parse", "--verify", "--quiet", originRef + "^{commit}"]), settings: settings) else { return nil }
        return out.trimmingWhitespace()
    }

    /// Deletes every local branch but BRANCH, and the stash: what a mission left for the next.
    private func dropOtherRefs() throws(SlotFailure) {
        guard case .ok(let out) = Self.git(slotArguments(["for-each-ref", "--format=%(refname)", "refs/heads", "refs/stash"]), settings: settings) else {
            throw SlotFailure(reason: "git for-each-ref failed in \(path)", reclone: true)
        }
        for ref in out.split(separator: "\n").map(String.init) where ref != "refs/heads/" + branch {
            try local("update-ref", ["update-ref", "-d", ref])
        }
    }

    /// A merge, rebase, cherry-pick, revert or bisect a mission left half done: its state files
    /// (git's own `--abort` would run more of the operation). Symlinks are removed as links.
    /// The slot's `.git/config` as a clone writes it, and nothing else: a mission works in the
    /// slot and may have added what makes git run commands (`remote.origin.uploadpack`,
    /// `core.sshCommand`, filter drivers, `include.path`, `url.*.insteadOf`); the cleaner's
    /// checkout and fetch must not run them (docs/workspaces.md, "Releasing a slot"). Replaced
    /// atomically (a symlink there is replaced, never followed).
    func resetConfig() throws(SlotFailure) {
        func quoted(_ v: String) -> String { "\"" + v.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\"" }
        let text = """
            [core]
            \trepositoryformatversion = 0
            \tfilemode = true
            \tbare = false
            \tlogallrefupdates = true
            [remote "origin"]
            \turl = \(quoted(url))
            \tfetch = +refs/heads/*:refs/remotes/origin/*
            [branch \(quoted(branch))]
            \tremote = origin
            \tmerge = \(quoted("refs/heads/" + branch))

            """
        do { try AtomicFile.write(Data(text.utf8), to: gitDir + "/config") } catch {
            throw SlotFailure(reason: "cannot rewrite \(gitDir)/config: \(error)", reclone: true)
        }
    }

    private func removeOperationState() {
        for name in ["rebase-merge", "rebase-apply", "sequencer"] {
            let p = gitDir + "/" + name
            if FileStatus.at(p, followSymlinks: false) != nil { try? FileManager.default.removeItem(atPath: p) }
        }
        for name in ["MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "CHERRY_PICK_HEAD", "REVERT_HEAD", "BISECT_LOG", "BISECT_START", "BISECT_TERMS"] {
            FileSystem.unlink(gitDir + "/" + name)
        }
    }

    /// A local step, tried once: its failure means the checkout needs cloning anew.
    private func local(_ name: String, _ args: [String]) throws(SlotFailure) {
        if case .failed(let line) = Self.git(slotArguments(args), settings: settings) {
            throw SlotFailure(reason: "git \(name) failed: \(line)", reclone: true)
        }
    }

    /// Removes whatever is at `path`, without following a symlink there or below.
    private func removeSlotDirectory() throws(SlotFailure) {
        guard FileStatus.at(path, followSymlinks: false) != nil else { return }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw SlotFailure(reason: "cannot remove \(path): \(Self.firstLine(String(describing: error)))", reclone: true)
        }
    }

    /// Arguments naming this slot's repository and work tree explicitly.
    private func slotArguments(_ args: [String]) -> [String] {
        ["-C", path, "--git-dir=" + gitDir, "--work-tree=" + path] + args
    }

    // MARK: - Running git

    enum Run {
        case ok(String)
        /// One line: git's last meaningful line, or that it timed out or could not start.
        case failed(String)
    }

    /// Config given to every git command: hooks and fsmonitor off (not a mission's to run),
    /// and automatic maintenance kept inside the command (a detached gc would outlive the
    /// bound and work in a slot already handed out).
    static let safetyConfig = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                               "-c", "gc.autoDetach=false", "-c", "maintenance.autoDetach=false"]

    static let environment = ["GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"]

    /// Runs `git ARGS` to its end, bounded by the timeout. `firstLine`: the reason is the first
    /// line of the output (fsck lists every problem; the first names the cause).
    static func git(_ args: [String], settings: GitSettings, firstLine: Bool = false) -> Run {
        let argv = [settings.git] + safetyConfig + args
        let command = args.first { !$0.hasPrefix("-") && !$0.contains("/") } ?? "git"
        let outcome: CommandRun.Outcome
        do {
            outcome = try CommandRun.run(argv, environment: environment, timeout: settings.timeout)
        } catch {
            return .failed("cannot start \(settings.git): \(String(describing: error))")
        }
        if outcome.timedOut { return .failed("git \(command) timed out after \(settings.timeout.decimalSeconds)s") }
        if outcome.succeeded { return .ok(outcome.output) }
        let line = firstLine ? Self.firstLine(outcome.output) : lastMeaningfulLine(outcome.output)
        if !line.isEmpty { return .failed(line) }
        if let signal = outcome.signal { return .failed("git \(command) was killed by \(SignalName.of(signal))") }
        return .failed("git \(command) exited with \(outcome.exitCode ?? -1)")
    }

    /// A network operation, tried `settings.attempts` times with the backoff between; `before`
    /// runs before each try (clone: remove the partial directory).
    static func network(_ name: String, _ args: [String], settings: GitSettings,
                        before: () throws(SlotFailure) -> Void = {}) throws(SlotFailure) -> String {
        let attempts = max(1, settings.attempts)
        var last = ""
        for attempt in 1...attempts {
            if attempt > 1 { ThisProcess.pause(settings.pause(before: attempt)) }
            try before()
            switch git(args, settings: settings) {
            case .ok(let out): return out
            case .failed(let line): last = line
            }
        }
        throw SlotFailure(reason: "\(name) failed after \(attempts) attempt\(attempts == 1 ? "" : "s"): \(last)", reclone: false)
    }

    /// A URL that git would read as an option is refused before any git runs.
    static func refuseOptionLike(_ url: String) throws(SlotFailure) {
        if url.hasPrefix("-") || url.isEmpty { throw SlotFailure(reason: "not a repository URL: \(clip(url))", reclone: false) }
    }

    /// The last line that says what went wrong (`fatal:`/`error:` first), trimmed and clipped.
    static func lastMeaningfulLine(_ output: String) -> String {
        let lines = output.split(whereSeparator: { $0 == "\n" || $0 == "\r" })
            .map { $0.trimmingWhitespace(keepingNewlines: true) }.filter { !$0.isEmpty }
        let pick = lines.last { $0.hasPrefix("fatal:") || $0.hasPrefix("error:") } ?? lines.last ?? ""
        return clip(pick)
    }

    static func firstLine(_ output: String) -> String {
        clip(output.split(whereSeparator: { $0 == "\n" || $0 == "\r" })
            .map { $0.trimmingWhitespace(keepingNewlines: true) }.first { !$0.isEmpty } ?? "")
    }

    /// At most 300 characters, on one line.
    static func clip(_ text: String) -> String {
        let one = text.replacing("\n", with: " ").replacing("\r", with: " ")
        return one.count <= 300 ? one : String(one.prefix(299)) + "…"
    }
}
