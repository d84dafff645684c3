import Foundation
import VigilCore
import VigilSystem

/// The one way tests, benchmarks and tools find the built executables and the repository.
public enum Binaries {
    /// The directory of the running executable: `.build/<config>` for a test bundle and for
    /// `vigil-bench` alike, where SwiftPM puts `vigil` and `vigil-bench`.
    public static let directory: String = (Executable.path as NSString).deletingLastPathComponent

    /// The `vigil` product built beside this process.
    public static let vigil: String = directory + "/vigil"

    /// `vigil-bench` built beside this process.
    public static let vigilBench: String = directory + "/vigil-bench"

    /// The repository: the nearest directory above the executable holding `scripts/setup-synapse`,
    /// else the one this file was compiled from, else the working directory.
    public static let repoRoot: String = {
        func isRepo(_ p: String) -> Bool { FileManager.default.isExecutableFile(atPath: p + "/scripts/setup-synapse") }
        var p = directory
        while p.count > 1 {
            if isRepo(p) { return p }
            p = (p as NSString).deletingLastPathComponent
        }
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        if isRepo(url.path) { return url.path }
        return FileManager.default.currentDirectoryPath
    }()
}

/// What a run of one of the binaries to its end gave: exit code, stdout, stderr.
public struct RunResult: Sendable {
    public var code: Int32
    public var out: String
    public var err: String
    public init(code: Int32, out: String, err: String) {
        self.code = code
        self.out = out
        self.err = err
    }
    /// stdout as JSON (`--json` commands), nil when it is not.
    public var json: JSONValue? { JSONValue.parse(Data(out.utf8)) }
}
