import Foundation
import Testing
@testable import VigilChat
import VigilCore
import VigilSystem
import VigilTestSupport

/// One Synapse for the whole Matrix suite: installed (if missing) by `scripts/setup-synapse`,
/// started on a free 127.0.0.1 port, stopped and removed at the end. When it cannot be had,
/// `skipReason` says why and every Matrix test is cancelled with that reason (printed loudly),
/// never silently passed.
final class SynapseFixture: Sendable {
    let server: SynapseServer?
    let skipReason: String?
    let bot: SynapseServer.User?
    let botPassword: String

    static let repoRoot = Binaries.repoRoot

    init() {
        var server: SynapseServer?
        var reason: String?
        var bot: SynapseServer.User?
        let pw = "bot-pw-" + String(UInt32.random(in: 0...UInt32.max))
        do {
            let venv = try SynapseServer.install(repoRoot: SynapseFixture.repoRoot, timeout: .seconds(600))
            let s = try SynapseServer.start(venv: venv)
            server = s
            bot = try s.register("vigil", password: pw)
        } catch {
            reason = "Synapse unavailable, Matrix tests NOT run: \(error)"
            server?.destroy()
            server = nil
            FileHandle.standardError.write(Data("\n*** \(reason!)\n\n".utf8))
        }
        self.server = server
        self.skipReason = reason
        self.bot = bot
        self.botPassword = pw
    }

    @TaskLocal static var current: SynapseFixture?

    /// The running server, or cancels the calling test with the reason.
    static func require() throws -> (SynapseFixture, SynapseServer) {
        guard let fx = current else { try Test.cancel("Synapse fixture missing (suite trait not applied)") }
        guard let s = fx.server else {
            let reason = fx.skipReason ?? "Synapse unavailable"
            // CI can insist: VIGIL_REQUIRE_SYNAPSE=1 turns the skip into a failure.
            if ProcessInfo.processInfo.environment["VIGIL_REQUIRE_SYNAPSE"] == "1" {
                Issue.record(Comment(rawValue: reason + " (VIGIL_REQUIRE_SYNAPSE=1)"))
                throw SynapseServer.Failure(message: reason)
            }
            try Test.cancel(Comment(rawValue: reason))
        }
        return (fx, s)
    }
}

/// Suite trait: one Synapse around the whole suite.
struct WithSynapse: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let fx = SynapseFixture()
        defer { fx.server?.destroy() }
        try await SynapseFixture.$current.withValue(fx) { try await function() }
    }
}

extension Trait where Self == WithSynapse {
    static var withSynapse: WithSynapse { WithSynapse() }
}
