import Foundation
import Glibc
import Testing
import VigilCore
import VigilStore
import VigilTestSupport

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
