import FoundationEssentials
import VigilSystem

/// Who may change a state directory, checked in one place (docs/operator-guide.md, "Security
/// of the state directory"). Vigil runs what `vigil.json` names (`version-command`,
/// `agent-command`) and the kept program under `program/`: a state directory another user can
/// write into would let that user run commands as Vigil's user (root, often).
///
/// The rules:
/// - the state directory is owned by the user Vigil runs as (effective uid) and writable by
///   nobody else (no group/other write bit);
/// - every directory above it is owned by root or by that user, and is writable by nobody else
///   unless it has the sticky bit (`/tmp`): otherwise another user could rename the state
///   directory away and put their own in its place;
/// - `vigil.json` is a regular file (not a symlink), owned by that user, writable by nobody else.
extension StateDirectory {
    /// Refuses (exit 2) a state directory another user could write into; nothing to check when
    /// it does not exist yet (it is then created 0700). Cheap: one `realpath` and an `lstat` per
    /// path component.
    public func verify() throws(StateDirectoryError) {
        let st: FileStatus
        do { st = try FileStatus.of(path) } catch {
            if error.isNoEntry { return try verifyAncestors(of: path) }
            throw StateDirectoryError(path: path, reason: "cannot look at it: \(error.reason)", code: 2)
        }
        guard st.kind == .directory else {
            throw StateDirectoryError(path: path, reason: "it is not a directory; give --state-dir a directory (it is created if missing)", code: 2)
        }
        let real = StateDirectory.realPath(path) ?? path
        let me = ThisProcess.effectiveUserID
        if st.owner != me {
            throw StateDirectoryError(path: path, reason: """
                it is owned by \(StateDirectory.user(st.owner)), not by \(StateDirectory.user(me)) who runs Vigil: refused, \
                since its owner could make Vigil run their commands. Use a directory of your own (it is created 0700 when \
                missing), or, if this one is meant for Vigil, `chown \(StateDirectory.name(me)) \(real) && chmod 700 \(real)` \
                after checking what is in it. See docs/operator-guide.md, "Security of the state directory"
                """, code: 2)
        }
        if st.mode & 0o022 != 0 {
            throw StateDirectoryError(path: path, reason: """
                it is writable by \(StateDirectory.writers(st.mode)) (mode \(StateDirectory.octal(st.mode))): refused, \
                since anyone who can write into it could make Vigil run their commands. Fix: `chmod 700 \(real)` after \
                checking what is in it (vigil.json, program/). See docs/operator-guide.md, "Security of the state directory"
                """, code: 2)
        }
        try verifyAncestors(of: real)
        // A symlinked state directory: the link's own directory must be safe too (whoever can
        // write there can point the link elsewhere).
        if real != path { try verifyAncestors(of: path) }
    }

    /// `verify()`, then `vigil.json`: absent, or a regular file owned by Vigil's user that
    /// nobody else can write. Called at every load of the configuration.
    public func verifyConfig() throws(StateDirectoryError) {
        try verify()
        let st: FileStatus
        do { st = try FileStatus.of(config, followSymlinks: false) } catch {
            if error.isNoEntry { return }
            throw StateDirectoryError(path: path, reason: "cannot look at \(config): \(error.reason)", code: 2)
        }
        let fix = "See docs/operator-guide.md, \"Security of the state directory\""
        guard st.kind == .regular else {
            throw StateDirectoryError(path: path, reason: """
                \(config) is \(PrivateFile.describe(st.mode)), not a regular file: refused. Replace it with a file of \
                your own (`rm \(config)`, then write it again). \(fix)
                """, code: 2)
        }
        let me = ThisProcess.effectiveUserID
        if st.owner != me {
            throw StateDirectoryError(path: path, reason: """
                \(config) is owned by \(StateDirectory.user(st.owner)), not by \(StateDirectory.user(me)) who runs Vigil: \
                refused, since it names commands Vigil runs. Check it, then `chown \(StateDirectory.name(me)) \(config) && \
                chmod 600 \(config)`. \(fix)
                """, code: 2)
        }
        if st.mode & 0o022 != 0 {
            throw StateDirectoryError(path: path, reason: """
                \(config) is writable by \(StateDirectory.writers(st.mode)) (mode \(StateDirectory.octal(st.mode))): \
                refused, since it names commands Vigil runs. Check it, then `chmod 600 \(config)`. \(fix)
                """, code: 2)
        }
    }

    /// Every directory above `dir` that exists (symlinks resolved): owned by root or Vigil's
    /// user; writable by others only with the sticky bit.
    private func verifyAncestors(of dir: String) throws(StateDirectoryError) {
        var existing = Path.parent(dir)
        while StateDirectory.realPath(existing) == nil && existing != "/" && !existing.isEmpty {
            existing = Path.parent(existing)
        }
        let real = StateDirectory.realPath(existing) ?? "/"
        var walked = ["/"]
        var current = ""
        for c in Path.components(real) {
            current += "/" + c
            walked.append(current)
        }
        let me = ThisProcess.effectiveUserID
        for ancestor in walked {
            guard let st = FileStatus.at(ancestor, followSymlinks: false) else { return }
            let sticky = st.mode & 0o1000 != 0 // S_ISVTX
            if (st.owner != 0 && st.owner != me) || (st.mode & 0o022 != 0 && !sticky) {
                throw StateDirectoryError(path: path, reason: """
                    the directory \(ancestor) above it is owned by \(StateDirectory.user(st.owner)) with mode \
                    \(StateDirectory.octal(st.mode)): refused, since another user could replace the state directory \
                    with one of their own. Put the state directory under directories only root or \(StateDirectory.user(me)) \
                    can change (e.g. /var/lib/vigil). See docs/operator-guide.md, "Security of the state directory"
                    """, code: 2)
            }
        }
    }

    // MARK: - Tightening at start

    /// Called by the bridge and the runner at start, before they take their lock: moves
    /// anything that is not a regular file or directory (a symlink, FIFO, socket, device) out of
    /// the slots Vigil writes into `quarantine/`, and removes group/other permission bits from
    /// what Vigil's user owns (a state directory made by an older Vigil: 0755, files 0644).
    /// Everything done is journaled. Mission scratch directories keep their contents as the
    /// mission made them.
    public func secure(journal: Journal) {
        let files = StateFiles(dir: self, journal: journal)
        // The journal's own slot first, so the entries below have somewhere to go.
        quarantineIfUnsafe(journal.path, files: files)
        var tightened: [String] = []
        tighten(path, &tightened)
        for top in entries(path) {
            let p = file(top)
            guard quarantineIfUnsafe(p, files: files) else { continue }
            tighten(p, &tightened)
            guard ["chat", "program", "quarantine", "missions"].contains(top), isDirectory(p) else { continue }
            for name in entries(p) {
                let q = p + "/" + name
                guard top == "quarantine" || quarantineIfUnsafe(q, files: files) else { continue }
                tighten(q, &tightened)
                guard top == "missions", isDirectory(q) else { continue }
                for leaf in entries(q) {
                    let r = q + "/" + leaf
                    guard quarantineIfUnsafe(r, files: files) else { continue }
                    tighten(r, &tightened) // the scratch directory itself, not what the mission put in it
                }
            }
        }
        if !tightened.isEmpty {
            journal.append(.stateDirTightened, [
                "count": .int(Int64(tightened.count)),
                "paths": .array(tightened.prefix(20).map { .string($0) }),
                "note": .string("group/other permissions removed (docs/operator-guide.md, \"Security of the state directory\")"),
            ])
        }
    }

    /// Quarantines a symlink, FIFO, socket or device at `p`; true when `p` is (now) a regular
    /// file, a directory or absent.
    @discardableResult
    private func quarantineIfUnsafe(_ p: String, files: StateFiles) -> Bool {
        guard let st = FileStatus.at(p, followSymlinks: false) else { return true }
        if st.kind == .regular || st.kind == .directory { return true }
        files.quarantine(p, reason: "\(PrivateFile.describe(st.mode)) in the state directory (never opened or followed)")
        return false
    }

    private func tighten(_ p: String, _ done: inout [String]) {
        guard let st = FileStatus.at(p, followSymlinks: false), st.owner == ThisProcess.effectiveUserID, st.mode & PrivateFile.groupOtherBits != 0 else { return }
        guard st.kind == .regular || st.kind == .directory else { return }
        if (try? FileSystem.setPermissions(p, st.mode & 0o700)) != nil {
            done.append(p.hasPrefix(path + "/") ? String(p.dropFirst(path.count + 1)) : ".")
        }
    }

    private func entries(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    }

    private func isDirectory(_ p: String) -> Bool {
        FileStatus.at(p, followSymlinks: false)?.kind == .directory
    }

    // MARK: - Words

    static func realPath(_ p: String) -> String? {
        FileSystem.realPath(p)
    }

    /// "uid 1001 (alice)".
    static func user(_ uid: UInt32) -> String {
        if let name = FileSystem.userName(uid) { return "uid \(uid) (\(name))" }
        return "uid \(uid)"
    }

    /// The user name for a command line (`chown NAME`), or the number.
    static func name(_ uid: UInt32) -> String {
        if let name = FileSystem.userName(uid) { return name }
        return "\(uid)"
    }

    static func writers(_ mode: UInt32) -> String {
        switch (mode & 0o020 != 0, mode & 0o002 != 0) {
        case (true, true): return "its group and others"
        case (true, false): return "its group"
        default: return "others"
        }
    }

    static func octal(_ mode: UInt32) -> String { "0" + String(mode & 0o7777, radix: 8) }
}
