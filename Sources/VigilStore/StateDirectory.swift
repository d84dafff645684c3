import Foundation
import VigilSystem

/// The layout of a state directory. One place for every name, so the bridge, the runner, the
/// CLI and the tests agree. See docs/operator-guide.md, "The state directory".
public struct StateDirectory: Sendable {
    public let path: String

    public init(_ path: String) {
        let abs = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        self.path = (abs as NSString).standardizingPath
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public var config: String { file("vigil.json") }
    public var journal: String { file("journal.jsonl") }
    public var database: String { file("vigil.db") }
    public var quarantine: String { file("quarantine") }
    public var missions: String { file("missions") }
    public var chatLog: String { file("chat.log") }
    public var wrapperLock: String { file("wrapper.lock") }
    /// `vigil stop` in effect: the watchdog does not resurrect the bridge.
    public var stopMarker: String { file("stop") }
    /// `vigil heal reset` asked for: the runner closes the circuit and removes it.
    public var healReset: String { file("heal.reset") }
    public var healState: String { file("heal.json") }
    /// The kept copy of the last program that ran a healthy pair, and its record (what it is a
    /// copy of, whether a rollback to it was announced). See docs/operator-guide.md, "Rollback
    /// of a broken update"; scripts/vigil-run names the same `program/good`.
    public var programDir: String { file("program") }
    public var keptProgram: String { file("program/good") }
    public var keptProgramRecord: String { file("program/good.json") }

    public func lock(_ role: Role) -> String { file("\(role.rawValue).lock") }

    /// Creates a directory inside this state directory (and those between), never the state
    /// directory itself: gone, it stays gone (`AtomicFile.makeDirectory(_:below:)`).
    public func makeDirectory(_ sub: String) throws(SystemError) {
        try AtomicFile.makeDirectory(sub, below: path)
    }
    /// Identity, version stamp and heartbeat of a running process ("PID file").
    public func pidFile(_ role: Role) -> String { file("\(role.rawValue).json") }
    public func restartMarker(_ role: Role) -> String { file("\(role.rawValue).restart") }
    public func log(_ role: Role) -> String { file("\(role.rawValue).log") }

    public enum Role: String, Sendable, CaseIterable {
        case bridge
        case runner
    }

    /// Checks who may change the directory (`verify()`, before anything is created or written),
    /// creates it (durably, 0700) unless `create` is false, and checks that it is writable;
    /// cleans temp files of dead writers. A process started for one directory (the runner's
    /// bridges) passes `create: false`: gone, it stays gone.
    public func prepare(create: Bool = true) throws {
        try verify()
        do {
            if create { try AtomicFile.makeDirectory(path) }
            else if !FileSystem.exists(path) { throw StateDirectoryError(path: path, reason: "it was removed") }
        } catch let e as StateDirectoryError {
            throw e
        } catch {
            throw StateDirectoryError(path: path, reason: "cannot create it: \(error)")
        }
        guard FileSystem.isAccessible(path, [.write, .execute]) else {
            throw StateDirectoryError(path: path, reason: "it is not writable by this user")
        }
        AtomicFile.sweepTemps(in: path)
    }
}

public struct StateDirectoryError: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    /// The exit code: 2 for a directory refused for its owner or permissions (the wrapper does
    /// not relaunch then), 1 otherwise.
    public var code: Int32

    public init(path: String, reason: String, code: Int32 = 1) {
        self.path = path
        self.reason = reason
        self.code = code
    }

    public var description: String { "state directory \(path): \(reason)" }
}
