import FoundationEssentials
import VigilCore

/// A small argv parser: `--flag value`, `--flag=value`, boolean `--flag`, `--` ends options.
/// Unknown flags are errors (never silently ignored).
public struct Arguments {
    public private(set) var positional: [String] = []
    /// Everything after a literal `--` (mission argv).
    public private(set) var rest: [String]? = nil
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []

    /// - Parameters:
    ///   - valued: names (without `--`) that take a value.
    ///   - booleans: names that take none.
    public init(_ argv: [String], valued: Set<String>, booleans: Set<String> = []) throws {
        var i = 0
        while i < argv.count {
            let a = argv[i]
            if a == "--" {
                rest = Array(argv[(i + 1)...])
                break
            }
            if a.hasPrefix("--") && a.count > 2 {
                var name = String(a.dropFirst(2))
                var value: String? = nil
                if let eq = name.firstIndex(of: "=") {
                    value = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                if valued.contains(name) {
                    if value == nil {
                        guard i + 1 < argv.count else { throw UsageError("--\(name) needs a value") }
                        i += 1
                        value = argv[i]
                    }
                    values[name, default: []].append(value!)
                } else if booleans.contains(name) {
                    guard value == nil else { throw UsageError("--\(name) takes no value") }
                    flags.insert(name)
                } else {
                    throw UsageError("unknown option --\(name)")
                }
            } else if a.hasPrefix("-") && a.count > 1 && Double(a) == nil {
                throw UsageError("unknown option \(a)")
            } else {
                positional.append(a)
            }
            i += 1
        }
    }

    public func value(_ name: String) -> String? { values[name]?.last }
    public func all(_ name: String) -> [String] { values[name] ?? [] }
    public func has(_ name: String) -> Bool { flags.contains(name) }
    public var given: Set<String> { Set(values.keys).union(flags) }

    public func duration(_ name: String) throws -> TimeSpan? {
        guard let v = value(name) else { return nil }
        return try Arguments.duration(v, name: "--\(name)")
    }

    /// Flags and vigil.json alike (`Tunables.set` calls this).
    public static func duration(_ text: String, name: String) throws -> TimeSpan {
        guard let d = TimeSpan.parse(text) else {
            throw UsageError("\(name) \(text.debugDescription): not a duration (use seconds like 0.2, or 200ms, 2s, 5m)")
        }
        guard d.nanoseconds > 0 else { throw UsageError("\(name) must be greater than zero (got \(text))") }
        guard d >= TimeSpan.shortestSetting else {
            throw UsageError("\(name) \(text.debugDescription) is too short: durations are at least 1ms (e.g. 0.001, 1ms, 200ms)")
        }
        return d
    }

    public func int(_ name: String, min: Int = Int.min) throws -> Int? {
        guard let v = value(name) else { return nil }
        guard let n = Int(v) else { throw UsageError("--\(name) \(v.debugDescription): not a whole number") }
        guard n >= min else { throw UsageError("--\(name) must be at least \(min) (got \(n))") }
        return n
    }
}

/// A mistake in how a command was called: printed with a hint, exit code 2.
public struct UsageError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A failure the operator can act on: printed as is, exit code 1 (or `code`).
public struct CommandError: Error, CustomStringConvertible {
    public var message: String
    public var code: Int32
    public init(_ message: String, code: Int32 = 1) {
        self.message = message
        self.code = code
    }
    public var description: String { message }
}

/// How a command ends: the process exit code. Thrown, never `exit()` deep inside.
public struct ExitCode: Error {
    public var code: Int32
    public init(_ code: Int32) { self.code = code }
}
