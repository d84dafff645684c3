import FoundationEssentials
import VigilStore
import VigilSystem

/// One subcommand of `vigil`.
public struct Command: Sendable {
    public var name: String
    /// One line for the command list.
    public var summary: String
    /// The full `--help` text (usage first).
    public var help: String
    public var run: @Sendable (Invocation) throws -> Void

    public init(name: String, summary: String, help: String, run: @escaping @Sendable (Invocation) throws -> Void) {
        self.name = name
        self.summary = summary
        self.help = help
        self.run = run
    }
}

/// What a command gets: its arguments (after the command name, `--state-dir` removed) and the
/// state directory.
public struct Invocation: Sendable {
    public var arguments: [String]
    public var stateDir: StateDirectory
    /// The full argv as given, for processes that re-exec themselves.
    public var fullArguments: [String]
}

public enum CLI {
    /// Every command, in the order `vigil --help` lists them.
    static var commands: [Command] {
        [
            BridgeCommand.command, RunnerCommand.command, StatusCommand.command, ProbeCommand.command, MetricsCommand.command, JournalCommand.command,
            MissionCommand.command, OutboxCommand.command, SayCommand.command, RestartCommand.command,
            HealCommand.command, StopCommand.command, DoctorCommand.command,
            WorkspaceCommand.command, ShimCommand.command, CheckpointCommand.command, BackupCommand.backup, BackupCommand.restore,
        ]
    }

    static let usage = """
    usage: vigil [--state-dir DIR] COMMAND [OPTIONS]

    Keeps a chat-driven agent system alive and losing nothing: a bridge (chat) and a runner
    (missions + watchdog) share one state directory (--state-dir, $VIGIL_STATE_DIR, or ./.vigil).

    """

    /// Runs `vigil` with `argv` (without the program name) and returns the exit code.
    public static func main(_ argv: [String]) -> Int32 {
        main(argv, program: "vigil", usage: usage, commands: commands, access: access)
    }

    /// The same for another program made of `Command`s (`vigil-bench`): same parsing of
    /// `--state-dir`, same checks, same exit codes.
    package static func main(_ argv: [String], program: String, usage: String, commands: [Command],
                             access: (String, [String]) -> StateAccess) -> Int32 {
        // A closed pipe is an error a write sees (`Console`), not a signal that kills a
        // command after its commit (docs/operator-guide.md, "Bad input").
        Console.ignoreSIGPIPE()
        do {
            var args = argv
            let stateDir = try extractStateDir(&args)
            guard let name = args.first, !name.hasPrefix("-") || name == "--help" || name == "-h" else {
                if args.isEmpty {
                    printErr(usage + commandList(commands))
                    return 2
                }
                throw UsageError("unknown option \(args[0]); options go after the command name")
            }
            if name == "--help" || name == "-h" || name == "help" {
                Console.out.write(usage + commandList(commands))
                return 0
            }
            if name == "--version" || name == "version" {
                printOut("\(program) \(VigilVersion.string)")
                return 0
            }
            guard let command = commands.first(where: { $0.name == name }) else {
                throw UsageError("unknown command \(name.debugDescription)")
            }
            let rest = Array(args.dropFirst())
            if rest.first == "--help" || rest.first == "-h" || (rest.contains("--help") && !rest.contains("--")) {
                printOut(command.help)
                return 0
            }
            try checkUsable(stateDir)
            try checkStateDirectory(stateDir, command: name, access: access(name, rest))
            try command.run(Invocation(arguments: rest, stateDir: stateDir, fullArguments: argv))
            return 0
        } catch let e as ExitCode {
            return e.code
        } catch let e as UsageError {
            printErr("\(program): \(e.message)\nRun `\(program) --help` (or `\(program) COMMAND --help`) for usage.\n")
            return 2
        } catch let e as CommandError {
            printErr("\(program): \(e.message)\n")
            return e.code
        } catch let e as StateDirectoryError {
            printErr("\(program): \(e)\n")
            return e.code
        } catch {
            printErr("\(program): \(error)\n")
            return 1
        }
    }

    /// What a command does with the state directory, for `checkStateDirectory`.
    package enum StateAccess: Equatable {
        /// Writes (or runs what the directory names): refused in an unsafe directory.
        case writes
        /// Only reads: runs in an unsafe directory with a warning on stderr.
        case reads
        /// Does not use it (`vigil-bench`'s benchmarks make their own directories).
        case none
    }

    /// One place that says which commands only read (docs/operator-guide.md, "Security of the
    /// state directory"); anything not listed writes.
    static func access(_ command: String, _ args: [String]) -> StateAccess {
        switch command {
        case "status", "journal", "probe", "metrics": return .reads
        case "outbox": return args.contains { $0 == "--retry" || $0.hasPrefix("--retry=") } ? .writes : .reads
        case "mission": return ["list", "ls", "show"].contains(args.first ?? "") ? .reads : .writes
        case "doctor": return args.contains("--fix") ? .writes : .reads
        case "workspace": return ["list", "ls"].contains(args.first ?? "") ? .reads : .writes
        default: return .writes
        }
    }

    /// Every process entry point passes here (bridge, runner, shim, every command): a state
    /// directory another user can write into (or a vigil.json they own or can write) is refused
    /// with exit 2 before anything is read or written, or, for a command that only reads, named
    /// in a warning.
    static func checkStateDirectory(_ dir: StateDirectory, command: String, access: StateAccess) throws {
        guard access != .none else { return }
        do {
            try dir.verifyConfig()
        } catch {
            guard access == .reads else { throw error }
            printErr("vigil: warning: \(error)\n(\(command) only reads, so it goes on; every command that writes refuses this directory)\n")
        }
    }

    static func commandList(_ commands: [Command]) -> String {
        let width = commands.map(\.name.count).max() ?? 8
        return "commands:\n" + commands.filter { !$0.summary.isEmpty }.map {
            "  \($0.name.padded(toLength: width + 2))\($0.summary)"
        }.joined(separator: "\n") + "\n"
    }

    /// Refuses, for every command, a state directory no command could work in: `/` (Vigil
    /// creates, quarantines and removes files in its state directory) and a path that exists
    /// but is not a directory (a command would read nothing there and look healthy). Exit 2.
    /// See docs/operator-guide.md, "Bad input".
    static func checkUsable(_ dir: StateDirectory) throws {
        if dir.path == "/" {
            throw CommandError("the state directory cannot be / (Vigil creates, moves aside and removes files in it): give it a directory of its own with --state-dir or $VIGIL_STATE_DIR, e.g. /var/lib/vigil", code: 2)
        }
        if let st = FileStatus.at(dir.path), st.kind != .directory {
            throw CommandError("the state directory \(dir.path) exists but is not a directory: pass the directory Vigil keeps its state in (or a path that does not exist yet) with --state-dir or $VIGIL_STATE_DIR", code: 2)
        }
    }

    /// Removes `--state-dir DIR` / `--state-dir=DIR` (before any `--`) and resolves the
    /// directory: flag, then $VIGIL_STATE_DIR, then ./.vigil.
    static func extractStateDir(_ args: inout [String]) throws -> StateDirectory {
        var found: String? = nil
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { break }
            if a == "--state-dir" {
                guard i + 1 < args.count else { throw UsageError("--state-dir needs a directory") }
                found = args[i + 1]
                args.removeSubrange(i...(i + 1))
                continue
            }
            if a.hasPrefix("--state-dir=") {
                found = String(a.dropFirst("--state-dir=".count))
                args.remove(at: i)
                continue
            }
            i += 1
        }
        let path = found ?? ProcessInfo.processInfo.environment["VIGIL_STATE_DIR"] ?? "./.vigil"
        guard !path.isEmpty else { throw UsageError("--state-dir is empty") }
        return StateDirectory(path)
    }
}

/// Writes to standard error without buffering.
/// False when nobody is listening (`Console`: never a crash).
@discardableResult
public func printErr(_ text: String) -> Bool {
    Console.err.write(text)
}

/// Writes a line to standard output unbuffered (output may go to a pipe read live). False when
/// nobody is listening: stdout closed or its reader gone (`Console`: never a crash).
@discardableResult
public func printOut(_ text: String) -> Bool {
    Console.out.write(text + "\n")
}

public enum VigilVersion {
    public static let string = "0.1.0"
}
