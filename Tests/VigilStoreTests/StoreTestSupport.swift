import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore

/// A fresh directory for one test, removed (with everything in it) when the value goes away.
final class TempDir {
    let path: String

    init(_ label: String = "vigil-store-test") throws {
        let base = (NSTemporaryDirectory() as NSString).standardizingPath
        var template = Array("\(base)/\(label).XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = try #require(made.map { String(cString: $0) }, "mkdtemp failed")
    }

    func file(_ name: String) -> String { path + "/" + name }

    func names(_ sub: String? = nil) -> [String] {
        let p = sub.map { file($0) } ?? path
        return ((try? FileManager.default.contentsOfDirectory(atPath: p)) ?? []).sorted()
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func bytes(_ path: String) -> Data? { try? Data(contentsOf: URL(fileURLWithPath: path)) }

func put(_ data: Data, at path: String) throws { try data.write(to: URL(fileURLWithPath: path)) }

/// Appends raw bytes the way a crashed writer might have left them.
func appendRaw(_ data: Data, to path: String) throws {
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    try #require(fd >= 0)
    defer { close(fd) }
    let n = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    try #require(n == data.count)
}
