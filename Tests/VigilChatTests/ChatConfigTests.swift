import Foundation
import Testing
@testable import VigilChat
import VigilCore

@Suite struct ChatConfigTests {
    func decode(_ json: String) throws -> ChatConfig {
        try JSONDecoder().decode(ChatConfig.self, from: Data(json.utf8))
    }

    @Test func defaultsToConsole() throws {
        let c = try decode("{}")
        #expect(c.adapters == ["console"])
        #expect(c == ChatConfig.console)
    }

    @Test func fullExample() throws {
        let c = try decode("""
        {"adapters": ["console", "webhook", "matrix"], "max_attempts": 4, "backoff_initial": "200ms", "backoff_max": 30,
         "circuit_failures": 2, "circuit_cooloff": "2s",
         "webhook": {"url": "http://127.0.0.1:9/hook", "headers": {"Authorization": "Bearer s3cret"}, "username": "vigil"},
         "matrix": {"homeserver": "http://127.0.0.1:8008/", "user": "@vigil:test", "password": "pw", "room": "#ops:test",
                    "allow": ["@alice:test"], "sync_timeout": "2s"}}
        """)
        #expect(c.adapters == ["console", "webhook", "matrix"])
        #expect(c.maxAttempts == 4)
        #expect(c.backoffInitial == .milliseconds(200))
        #expect(c.backoffMax == .seconds(30))
        #expect(c.circuitFailures == 2)
        #expect(c.webhook?.headers["Authorization"] == "Bearer s3cret")
        #expect(c.matrix?.homeserver == "http://127.0.0.1:8008")
        #expect(c.matrix?.deviceID == "VIGIL")
        #expect(c.matrix?.syncTimeout == .seconds(2))
    }

    @Test func mentionDefaultsToTheAllowListAndMustBeUserIDs() throws {
        func matrix(_ extra: String) throws -> ChatConfig.Matrix? {
            try decode("""
            {"matrix": {"homeserver": "http://127.0.0.1:8008", "access_token": "t", "room": "!r:test", "allow": ["@alice:test", "@bob:test"]\(extra)}}
            """).matrix
        }
        #expect(try matrix("")?.operators == ["@alice:test", "@bob:test"])
        #expect(try matrix(#", "mention": ["@carol:test"]"#)?.operators == ["@carol:test"])
        #expect(try matrix(#", "mention": []"#)?.operators == [])
        for bad in ["carol:test", "@carol", "@:test", "@carol:", "@car ol:test"] {
            #expect(throws: DecodingError.self, "\(bad)") { try matrix(", \"mention\": [\"@ok:test\", \"\(bad)\"]") }
        }
        #expect(ChatConfig.Matrix.isUserID("@alice:matrix.example.org:8448"))
    }

    @Test func commandMaxAgeIsADuration() throws {
        #expect(try decode("{}").commandMaxAge == .seconds(600))
        #expect(try decode(#"{"command_max_age": "2s"}"#).commandMaxAge == .seconds(2))
        #expect(try decode(#"{"command_max_age": 90}"#).commandMaxAge == .seconds(90))
        #expect(throws: DecodingError.self) { try decode(#"{"command_max_age": "soon"}"#) }
        #expect(throws: DecodingError.self) { try decode(#"{"command_max_age": 0}"#) }
    }

    @Test func sectionsImplyAdapters() throws {
        let c = try decode(#"{"webhook": {"url": "http://127.0.0.1:9/x"}}"#)
        #expect(c.adapters == ["console", "webhook"])
        #expect(try decode(#"{"adapter": "webhook", "webhook": {"url": "http://127.0.0.1:9/x"}}"#).adapters == ["webhook"])
    }

    @Test func secretsFromEnvironment() throws {
        setenv("VIGIL_TEST_MATRIX_TOKEN", "tok-from-env", 1)
        defer { unsetenv("VIGIL_TEST_MATRIX_TOKEN") }
        let c = try decode(#"{"matrix": {"homeserver": "http://127.0.0.1:1", "access_token_env": "VIGIL_TEST_MATRIX_TOKEN", "room": "!r:x"}}"#)
        #expect(c.matrix?.accessToken == "tok-from-env")
    }

    @Test func mistakesAreExplained() {
        #expect(throws: DecodingError.self) { try decode(#"{"adapters": ["carrier-pigeon"]}"#) }
        #expect(throws: DecodingError.self) { try decode(#"{"adapters": ["webhook"]}"#) }
        #expect(throws: DecodingError.self) { try decode(#"{"matrix": {"homeserver": "http://x", "room": "!r:x"}}"#) }
        #expect(throws: DecodingError.self) { try decode(#"{"backoff_initial": "soon"}"#) }
        #expect(throws: DecodingError.self) { try decode(#"{"max_attempts": 0}"#) }
    }

    @Test func loadFromFile() throws {
        let state = try TempState()
        #expect(try ChatConfig.load(configFile: state.dir.config) == .console)
        try Data(#"{"tick": "1s", "chat": {"adapters": ["console"], "max_attempts": 3}}"#.utf8).write(to: URL(fileURLWithPath: state.dir.config))
        #expect(try ChatConfig.load(configFile: state.dir.config).maxAttempts == 3)
        try Data(#"{"chat": {"adapters": 5}}"#.utf8).write(to: URL(fileURLWithPath: state.dir.config))
        #expect(throws: ChatConfigError.self) { try ChatConfig.load(configFile: state.dir.config) }
    }

    @Test func secretsAreNotPrinted() throws {
        let c = try decode(#"{"matrix": {"homeserver": "http://127.0.0.1:1", "access_token": "SECRET-TOKEN", "password": "SECRET-PW", "user": "u", "room": "!r:x"}, "webhook": {"url": "http://127.0.0.1:1/SECRET-PATH", "headers": {"X": "SECRET-H"}}}"#)
        let shown = "\(c) \(String(reflecting: c))"
        #expect(!shown.contains("SECRET"))
    }
}
