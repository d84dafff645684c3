import Foundation
import Testing
import VigilApp
import VigilCore
import VigilSystem
import VigilTestSupport

/// A bare repository in a fresh directory, with slots cloned from it.
final class Fixture {
    let dir: TempDir
    let bare: String
    let branch: String
    var settings: GitSettings

    init(files: Int = 20, branch: String = "main") throws {
        dir = try TempDir("vigil-ws")
        bare = dir.file("repo.git")
        self.branch = branch
        try GitFixture.makeBareRepo(at: bare, files: files, branch: branch)
        settings = GitSettings()
        settings.timeout = .seconds(30)
        settings.backoff = [.milliseconds(10)]
    }

    func slot(_ n: Int = 1, url: String? = nil) -> SlotCheckout {
        SlotCheckout(path: dir.file("slots/\(n)"), url: url ?? bare, branch: branch, settings: settings)
    }

    func git(_ slot: SlotCheckout, _ args: [String]) throws -> String {
        try GitFixture.git(args, in: slot.path).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func write(_ slot: SlotCheckout, _ name: String, _ text: String) throws {
        let p = slot.path + "/" + name
        try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: p))
    }

    /// The slot is exactly at the remote's BRANCH: that commit checked out on BRANCH, no
    /// change, no untracked or ignored file, no other local branch.
    func expectPristine(_ slot: SlotCheckout, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let remote = try GitFixture.head(of: bare, branch: branch)
        #expect(try git(slot, ["rev-parse", "HEAD"]) == remote, sourceLocation: sourceLocation)
        #expect(try git(slot, ["symbolic-ref", "HEAD"]) == "refs/heads/" + branch, sourceLocation: sourceLocation)
        #expect(try git(slot, ["status", "--porcelain", "--ignored", "--untracked-files=all"]) == "", sourceLocation: sourceLocation)
        #expect(try git(slot, ["for-each-ref", "--format=%(refname)", "refs/heads", "refs/stash"]) == "refs/heads/" + branch, sourceLocation: sourceLocation)
        #expect(slot.inspect(fsck: true) == nil, sourceLocation: sourceLocation)
    }
}

/// A shell script in `dir` (mode 0700) for a fake git or a hook.
func script(_ path: String, _ body: String) throws {
    try Data(("#!/bin/sh\n" + body + "\n").utf8).write(to: URL(fileURLWithPath: path))
    try FileSystem.setPermissions(path, 0o700)
}

@Suite("Slot checkouts with real git", .serialized, .timeLimit(.minutes(3)))
struct GitCheckoutTests {
    // MARK: - Clone

    @Test("Clone from a path, a file:// URL and a git:// daemon; each slot is sound and at the remote's branch")
    func cloneEveryWay() throws {
        let f = try Fixture()
        let daemon = try GitDaemon(basePath: f.dir.path)
        for (n, url) in [f.bare, "file://" + f.bare, daemon.url(for: "repo")].enumerated() {
            let slot = f.slot(n + 1, url: url)
            try slot.cloneFresh()
            #expect(slot.inspect(fsck: false) == nil)
            try f.expectPristine(slot)
            #expect(try f.git(slot, ["config", "--get", "remote.origin.url"]) == url)
        }
        daemon.stop()
        #expect(!daemon.isRunning)
    }

    @Test("A local clone copies objects: no object file is shared with the source")
    func noHardlinks() throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        let objects = try #require(FileManager.default.enumerator(atPath: slot.path + "/.git/objects"))
        var checked = 0
        for case let name as String in objects {
            guard let st = FileStatus.at(slot.path + "/.git/objects/" + name, followSymlinks: false), st.kind == .regular else { continue }
            #expect(st.linkCount == 1, "\(name) is hard-linked")
            checked += 1
        }
        #expect(checked > 0)
    }

    @Test("The default branch of a remote whose HEAD is trunk, by path and over git://")
    func defaultBranch() throws {
        let f = try Fixture(branch: "trunk")
        #expect(try SlotCheckout.defaultBranch(of: f.bare, settings: f.settings) == "trunk")
        let daemon = try GitDaemon(basePath: f.dir.path)
        #expect(try SlotCheckout.defaultBranch(of: daemon.url(for: "repo"), settings: f.settings) == "trunk")
        let slot = f.slot(url: daemon.url(for: "repo"))
        try slot.cloneFresh()
        try f.expectPristine(slot)
    }

    @Test("cloneFresh replaces a partial directory left by a killed clone, and removes a symlink at the path without touching its target")
    func cloneOverLeftovers() throws {
        let f = try Fixture()
        let slot = f.slot()
        try FileManager.default.createDirectory(atPath: slot.path + "/.git/objects/pack", withIntermediateDirectories: true)
        try f.write(slot, ".git/objects/pack/tmp_pack_abc", "half a pack")
        try f.write(slot, "half-written.txt", "x")
        try slot.cloneFresh()
        try f.expectPristine(slot)

        let keep = f.dir.file("keep")
        try FileManager.default.createDirectory(atPath: keep, withIntermediateDirectories: true)
        try Data("precious".utf8).write(to: URL(fileURLWithPath: keep + "/file"))
        try FileManager.default.removeItem(atPath: slot.path)
        try FileManager.default.createSymbolicLink(atPath: slot.path, withDestinationPath: keep)
        try slot.cloneFresh()
        #expect(FileStatus.at(slot.path, followSymlinks: false)?.kind == .directory)
        #expect(try String(contentsOfFile: keep + "/file", encoding: .utf8) == "precious")
        try f.expectPristine(slot)
    }

    @Test("A clone of a branch the remote does not have fails with git's reason")
    func cloneMissingBranch() throws {
        let f = try Fixture()
        let slot = SlotCheckout(path: f.dir.file("slots/x"), url: f.bare, branch: "nope", settings: f.settings)
        let e = try #require(throws: SlotFailure.self) { try slot.cloneFresh() }
        #expect(e.reason.hasPrefix("clone failed after 3 attempts: "), "\(e.reason)")
        #expect(e.reason.contains("nope") && !e.reason.contains("\n"))
    }

    // MARK: - Clean

    @Test("clean() brings a dirty slot back to exactly origin/BRANCH, and fetches what was pushed")
    func cleanDirty() throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        try f.write(slot, "d0/f1.txt", "modified by the mission")
        try f.write(slot, "new-untracked.txt", "untracked")
        try f.write(slot, "build/out.o", "ignored build output")
        try f.write(slot, "debug.log", "ignored")
        _ = try f.git(slot, ["checkout", "-q", "-b", "mission-branch"])
        try f.write(slot, "committed.txt", "local commit")
        _ = try f.git(slot, ["add", "-A"])
        _ = try f.git(slot, ["commit", "-q", "-m", "local"])
        try f.write(slot, "stashed.txt", "stash me")
        _ = try f.git(slot, ["add", "stashed.txt"])
        _ = try f.git(slot, ["stash", "-q"])
        try f.write(slot, "d0/f2.txt", "modified again")
        let pushed = try GitFixture.pushCommit(to: f.bare, content: "new on the remote")

        try slot.clean()
        try f.expectPristine(slot)
        #expect(try f.git(slot, ["rev-parse", "HEAD"]) == pushed)
        #expect(try String(contentsOfFile: slot.path + "/pushed.txt", encoding: .utf8) == "new on the remote")
        #expect(!FileSystem.exists(slot.path + "/build") && !FileSystem.exists(slot.path + "/committed.txt"))
        try slot.clean()
        try f.expectPristine(slot)
    }

    @Test("clean() runs neither a planted hook nor a planted fsmonitor command")
    func plantedHooks() throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        let marker = f.dir.file("hook-ran")
        for hook in ["post-checkout", "reference-transaction", "post-merge", "pre-auto-gc"] {
            try script(slot.path + "/.git/hooks/" + hook, "echo \(hook) >> '\(marker)'")
        }
        try script(f.dir.file("fsmonitor"), "echo fsmonitor >> '\(marker)'")
        try f.write(slot, "d0/f1.txt", "dirty")
        // The hook is live: git as a mission runs it (no hooksPath override) …
        let plain = try CommandRun.run(["git", "-C", slot.path, "checkout", "-q", "-f", f.branch], timeout: .seconds(30))
        #expect(plain.succeeded)
        try #require(FileSystem.exists(marker), "the planted hook runs for a plain git")
        FileSystem.unlink(marker)
        _ = try f.git(slot, ["config", "core.fsmonitor", f.dir.file("fsmonitor")])
        try f.write(slot, "d0/f1.txt", "dirty")
        // … the cleaner does not.
        try slot.clean()
        #expect(!FileSystem.exists(marker), "\((try? String(contentsOfFile: marker, encoding: .utf8)) ?? "")")
        // The cleaner rewrote .git/config, so the planted fsmonitor is gone (the test's own
        // `git status` would run it).
        #expect(!((try? String(contentsOfFile: slot.path + "/.git/config", encoding: .utf8)) ?? "").contains("fsmonitor"))
        try f.expectPristine(slot)
    }

    @Test("clean() runs nothing a mission put in .git/config (upload-pack, filters, an include) and leaves the config as a clone writes it")
    func plantedConfig() throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        let marker = f.dir.file("config-ran")
        try script(f.dir.file("evil"), "echo ran >> '\(marker)'; cat")
        try script(f.dir.file("evil-pack"), "echo upload-pack >> '\(marker)'; exec git-upload-pack \"$@\"")
        try f.write(slot, ".git/info/attributes", "* filter=evil\n")
        try f.write(slot, ".git/included", "[core]\n\tfsmonitor = \(f.dir.file("evil"))\n")
        for (k, v) in [("filter.evil.smudge", f.dir.file("evil")), ("filter.evil.clean", f.dir.file("evil")),
                       ("remote.origin.uploadpack", f.dir.file("evil-pack")), ("include.path", slot.path + "/.git/included")] {
            _ = try f.git(slot, ["config", k, v])
        }
        try f.write(slot, "d0/f1.txt", "dirty")
        try slot.clean()
        #expect(!FileSystem.exists(marker), "\((try? String(contentsOfFile: marker, encoding: .utf8)) ?? "")")
        let config = try String(contentsOfFile: slot.path + "/.git/config", encoding: .utf8)
        #expect(!config.contains("evil") && !config.contains("include") && config.contains(slot.url), "\(config)")
        FileSystem.unlink(slot.path + "/.git/info/attributes")
        try f.expectPristine(slot)
    }

    @Test("A half-done rebase or merge left by a mission is cleared")
    func operationInProgress() throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        _ = try f.git(slot, ["checkout", "-q", "-b", "side"])
        try f.write(slot, "d0/f1.txt", "side")
        _ = try f.git(slot, ["commit", "-q", "-am", "side"])
        _ = try f.git(slot, ["checkout", "-q", f.branch])
        try f.write(slot, "d0/f1.txt", "main")
        _ = try f.git(slot, ["commit", "-q", "-am", "main"])
        let merge = try CommandRun.run(["git", "-C", slot.path, "merge", "side"], timeout: .seconds(30))
        #expect(!merge.succeeded, "a conflict")
        #expect(FileSystem.exists(slot.path + "/.git/MERGE_HEAD"))
        try slot.clean()
        #expect(!FileSystem.exists(slot.path + "/.git/MERGE_HEAD"))
        try f.expectPristine(slot)
    }

    // MARK: - The network fails

    @Test("Daemon stopped: clean() throws after exactly `attempts` fetches naming fetch; daemon back on the same port: clean() succeeds")
    func fetchFailsThenRecovers() throws {
        let f = try Fixture()
        let daemon = try GitDaemon(basePath: f.dir.path)
        let log = f.dir.file("git-calls")
        let wrapper = f.dir.file("git-wrapper")
        try script(wrapper, "echo \"$*\" >> '\(log)'\nexec git \"$@\"")
        f.settings.git = wrapper
        let slot = f.slot(url: daemon.url(for: "repo"))
        try slot.cloneFresh()
        daemon.stop()
        FileSystem.unlink(log)
        let e = try #require(throws: SlotFailure.self) { try slot.clean() }
        #expect(!e.reclone)
        #expect(e.reason.hasPrefix("fetch failed after 3 attempts: "), "\(e.reason)")
        #expect(e.reason.contains("127.0.0.1") && !e.reason.contains("\n"), "\(e.reason)")
        let calls = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(calls.filter { $0.contains(" fetch ") }.count == 3)
        #expect(slot.inspect(fsck: false) == nil, "a failed fetch leaves the checkout sound")

        try daemon.start()
        let pushed = try GitFixture.pushCommit(to: f.bare, content: "after the outage")
        try slot.clean()
        try f.expectPristine(slot)
        #expect(try f.git(slot, ["rev-parse", "HEAD"]) == pushed)
    }

    @Test("A git that hangs fails with a reason within the bound and leaves nothing running")
    func hangingGit() throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        let pids = f.dir.file("hung-pids")
        let fake = f.dir.file("git-hangs")
        try script(fake, "echo $$ >> '\(pids)'\nsleep 100")
        var settings = f.settings
        settings.git = fake
        settings.timeout = .milliseconds(300)
        settings.attempts = 2
        let t0 = Clock.boot()
        let e = try #require(throws: SlotFailure.self) { try SlotCheckout.defaultBranch(of: f.bare, settings: settings) }
        #expect(Clock.boot() - t0 < .seconds(5))
        #expect(e.reason == "ls-remote failed after 2 attempts: git ls-remote timed out after 0.3s", "\(e.reason)")
        let hung = try String(contentsOfFile: pids, encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
        #expect(hung.count == 2)
        for pid in hung { try waitUntil("hung git \(pid) gone", timeout: 10) { ProcStat.read(pid: pid)?.isZombie ?? true } }
        // A slot whose git hangs on its first command is reported, not waited for.
        let stuck = SlotCheckout(path: slot.path, url: slot.url, branch: slot.branch, settings: settings)
        #expect(stuck.inspect(fsck: false)?.contains("timed out after 0.3s") == true)
    }

    @Test("A fetch from a listener that never answers times out, with a reason naming fetch")
    func silentRemote() throws {
        let f = try Fixture()
        let port = try GitFixture.freePort()
        let listener = try Spawner.spawn(["python3", "-c", """
            import socket, time
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", \(port))); s.listen(16)
            time.sleep(1000)
            """])
        defer {
            listener.signal(.kill)
            _ = Spawner.wait(listener.pid)
        }
        try waitUntil("the silent listener", timeout: 20) { GitFixture.accepts(port: port) }
        let url = "git://127.0.0.1:\(port)/repo.git"
        let cloned = f.slot()
        try cloned.cloneFresh()
        _ = try f.git(cloned, ["remote", "set-url", "origin", url])
        f.settings.timeout = .milliseconds(500)
        f.settings.attempts = 2
        let slot = f.slot(url: url)
        let t0 = Clock.boot()
        let e = try #require(throws: SlotFailure.self) { try slot.clean() }
        #expect(Clock.boot() - t0 < .seconds(6))
        #expect(e.reason == "fetch failed after 2 attempts: git fetch timed out after 0.5s", "\(e.reason)")
        #expect(!e.reclone)
    }

    // MARK: - Damage

    enum Damage: String, CaseIterable, CustomTestStringConvertible {
        case objectsDeleted, packTruncated, headRemoved, slotDeleted, originElsewhere, dotGitRemoved, dotGitSymlink
        var testDescription: String { rawValue }
    }

    static func damage(_ d: Damage, _ slot: SlotCheckout, _ f: Fixture) throws {
        let git = slot.path + "/.git"
        switch d {
        case .objectsDeleted: try FileManager.default.removeItem(atPath: git + "/objects")
        case .packTruncated:
            _ = try f.git(slot, ["repack", "-adq"])
            let packs = try FileManager.default.contentsOfDirectory(atPath: git + "/objects/pack").filter { $0.hasSuffix(".pack") }
            try #require(packs.count == 1)
            let fd = try FileDescriptor.open(git + "/objects/pack/" + packs[0], .writeOnly)
            try fd.closeAfter { () throws(SystemError) in try fd.truncate(to: 200) }
        case .headRemoved: FileSystem.unlink(git + "/HEAD")
        case .slotDeleted: try FileManager.default.removeItem(atPath: slot.path)
        case .originElsewhere: _ = try f.git(slot, ["remote", "set-url", "origin", f.dir.file("elsewhere.git")])
        case .dotGitRemoved: try FileManager.default.removeItem(atPath: git)
        case .dotGitSymlink:
            let other = f.slot(9)
            try other.cloneFresh()
            try FileManager.default.removeItem(atPath: git)
            try FileManager.default.createSymbolicLink(atPath: git, withDestinationPath: other.path + "/.git")
        }
    }

    @Test("Each real corruption is found by the quick checks; clean() refuses with reclone; cloneFresh() heals", arguments: Damage.allCases)
    func corruption(_ d: Damage) throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        try Self.damage(d, slot, f)
        let quick = try #require(slot.inspect(fsck: false), "the quick checks find \(d)")
        #expect(!quick.contains("\n") && quick.count <= 400)
        #expect(slot.inspect(fsck: true) != nil)
        let e = try #require(throws: SlotFailure.self) { try slot.clean() }
        #expect(e.reclone, "\(e.reason)")
        #expect(slot.inspect(fsck: false) != nil, "still damaged: clean() changed nothing it could not")
        try slot.cloneFresh()
        #expect(slot.inspect(fsck: true) == nil)
        try slot.clean()
        try f.expectPristine(slot)
    }

    @Test("A lost loose blob is found by fsck only; clean() on it never leaves a slot the quick checks call damaged")
    func lostBlobFsckOnly() throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        let blob = try f.git(slot, ["rev-parse", "HEAD:d0/f3.txt"])
        let file = slot.path + "/.git/objects/" + blob.prefix(2) + "/" + blob.dropFirst(2)
        try #require(FileSystem.exists(file), "the clone keeps loose objects")
        try FileManager.default.removeItem(atPath: file)
        #expect(slot.inspect(fsck: false) == nil, "the quick checks do not read blobs")
        let found = try #require(slot.inspect(fsck: true))
        #expect(found.hasPrefix("git fsck: "), "\(found)")
        do {
            try slot.clean()
            #expect(slot.inspect(fsck: false) == nil)
        } catch {
            #expect(error.reclone)
        }
        try slot.cloneFresh()
        #expect(slot.inspect(fsck: true) == nil)
    }

    // MARK: - Locks

    @Test("Stale index.lock and refs/heads/x.lock are found, removed, and do not stop clean()")
    func staleLocks() throws {
        let f = try Fixture()
        let slot = f.slot()
        try slot.cloneFresh()
        #expect(slot.staleLocks().isEmpty)
        try f.write(slot, ".git/index.lock", "")
        try f.write(slot, ".git/refs/heads/x.lock", "")
        try f.write(slot, ".git/refs/remotes/origin/deep/y.lock", "")
        #expect(slot.staleLocks() == [".git/index.lock", ".git/refs/heads/x.lock", ".git/refs/remotes/origin/deep/y.lock"])
        #expect(slot.removeStaleLocks() == 3)
        #expect(slot.staleLocks().isEmpty)

        // A lock that is a symlink goes as a link; its target stays.
        let target = f.dir.file("target")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: target))
        try FileManager.default.createSymbolicLink(atPath: slot.path + "/.git/HEAD.lock", withDestinationPath: target)
        try f.write(slot, ".git/index.lock", "")
        try f.write(slot, "d0/f1.txt", "dirty")
        try slot.clean()
        #expect(slot.staleLocks().isEmpty)
        #expect(FileSystem.exists(target))
        try f.expectPristine(slot)
    }
}
