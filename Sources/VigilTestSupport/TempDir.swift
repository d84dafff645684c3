import Foundation
import VigilSystem

/// A fresh private directory under /tmp (`TempDirectory`: mkdtemp, 0700), removed with
/// everything in it when the value goes away (unless `keep`).
public final class TempDir: Sendable {
    public let path: String
    /// Leave the directory in place at deinit (its owner removes it, or it is evidence).
    public let keep: Bool

    public init(_ label: String = "vigil-test", keep: Bool = false) throws {
        path = try TempDir.make(label)
        self.keep = keep
    }

    /// Makes `/tmp/<label>-XXXXXX` and returns its path (for owners that remove it themselves).
    public static func make(_ label: String = "vigil-test") throws -> String {
        try TempDirectory.make(prefix: label)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    /// The sorted names in the directory (or in `sub` of it).
    public func names(_ sub: String? = nil) -> [String] {
        let p = sub.map { file($0) } ?? path
        return ((try? FileManager.default.contentsOfDirectory(atPath: p)) ?? []).sorted()
    }

    deinit { if !keep { try? FileManager.default.removeItem(atPath: path) } }
}
