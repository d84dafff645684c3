import Testing
@testable import VigilChat
import VigilCore

@Suite struct ChatCommandTests {
    @Test func parsesEveryCommand() {
        #expect(ChatCommand.parse("/status") == .status)
        #expect(ChatCommand.parse("!STATUS ") == .status)
        #expect(ChatCommand.parse("/missions") == .missions)
        #expect(ChatCommand.parse("/mission fix the build; rm -rf / && echo $HOME") == .mission("fix the build; rm -rf / && echo $HOME"))
        #expect(ChatCommand.parse("/mission   two\nlines  ") == .mission("two\nlines"))
        #expect(ChatCommand.parse("/cancel 42") == .cancel("42"))
        #expect(ChatCommand.parse("/show 42") == .show(42) && ChatCommand.parse("!show #7") == .show(7))
        #expect(ChatCommand.parse("/show x") == .unknown("/show needs one mission number: /show ID") && ChatCommand.parse("/show 0") == .unknown("/show needs one mission number: /show ID"))
        #expect(ChatCommand.parse("/restart bridge") == .restart("bridge"))
        #expect(ChatCommand.parse("/restart Runner") == .restart("runner"))
        #expect(ChatCommand.parse("/journal") == .journal(nil))
        #expect(ChatCommand.parse("/journal 5") == .journal(5))
        #expect(ChatCommand.parse("/journal 99999") == .journal(200))
        #expect(ChatCommand.parse("/heal reset") == .healReset)
        #expect(ChatCommand.parse("/help") == .help(nil))
        #expect(ChatCommand.parse("/help mission") == .help("mission") && ChatCommand.parse("/help /Cancel") == .help("cancel"))
        #expect(ChatCommand.parse("/help frobnicate") == .unknown("/help takes a command name: /help [COMMAND], e.g. /help mission"))
        #expect(ChatCommand.helpReply("mission").contains("Example: /mission"))
        for (name, text) in ChatCommand.usage { #expect(text.hasPrefix("/" + name) && text.contains("\nExample: /"), "\(name)") }
        #expect(ChatCommand.helpReply(nil) == ChatCommand.helpText)
    }

    @Test func chatterIsNotACommand() {
        #expect(ChatCommand.parse("hello there") == nil)
        #expect(ChatCommand.parse("") == nil)
        #expect(ChatCommand.parse("/") == nil)
        #expect(ChatCommand.parse("   ") == nil)
        #expect(ChatCommand.parse("  /status") == nil, "a message that starts with a space is talk, not a command")
        #expect(ChatCommand.parse("\n/restart bridge") == nil)
    }

    /// What a sender's client shows is what runs (docs/chat.md, "Commands"): an invisible
    /// character in a command's name refuses it with the reason; zero-width joiners in the text
    /// are kept; a no-break space after the name is a space; `/cancel #1` is mission 1.
    @Test func whatTheClientShowsIsWhatRuns() {
        for hidden in ["\u{200B}", "\u{202E}", "\u{2066}", "\u{200D}", "\u{FEFF}", "\u{2060}"] {
            guard case .unknown(let why)? = ChatCommand.parse("/re\(hidden)start bridge") else {
                Issue.record("U+\(String(hidden.unicodeScalars.first!.value, radix: 16)) in the name ran or was ignored"); continue
            }
            #expect(why.contains("invisible or invalid character") && why.contains("not run"), "\(why)")
        }
        #expect(ChatCommand.parse("/mission fix 👩‍💻 and می‌خواهم") == .mission("fix 👩‍💻 and می‌خواهم"), "ZWJ and ZWNJ kept in the text")
        #expect(ChatCommand.parse("/status\u{00A0}") == .status)
        #expect(ChatCommand.parse("/restart\u{00A0}bridge") == .restart("bridge"))
        #expect(ChatCommand.parse("/mission\u{202F}do it") == .mission("do it"))
        #expect(ChatCommand.parse("/cancel #1") == .cancel("1"))
        #expect(ChatCommand.parse("/cancel #") == .unknown("/cancel needs one mission id: /cancel ID"))
        #expect(ChatText.clean("a\u{200B}b\u{200D}c\u{200C}d") == "ab\u{200D}c\u{200C}d", "the zero-width space goes, the joiners stay")
        // Stored in the inbox and parsed again there (by the bridge): still refused, never run.
        for raw in ["/re\u{200B}start bridge", "/re\u{202E}start runner"] {
            let stored = ChatCommand.inboxBody(raw)
            guard case .unknown(let why)? = ChatCommand.parse(stored) else { Issue.record("\(stored.debugDescription) runs"); continue }
            #expect(why.contains("invisible or invalid character"))
        }
        guard case .unknown? = ChatCommand.parse("/" + ChatCommand.inboxBody("re\u{200B}start bridge", nameFirst: true)) else {
            Issue.record("vigil say with a hidden character runs"); return
        }
        #expect(ChatCommand.inboxBody("/mission a\u{200B}b 👩‍💻") == "/mission ab 👩‍💻", "only the name's hidden characters are kept as U+FFFD")
    }

    @Test func malformedCommandsAreUnknownWithAReason() {
        guard case .unknown(let w)? = ChatCommand.parse("/frobnicate now") else { Issue.record("not unknown"); return }
        #expect(w == "/frobnicate")
        #expect(ChatCommand.unknownReply(w).contains("Unknown command /frobnicate"))
        #expect(ChatCommand.unknownReply(w).contains("/mission TEXT"))
        #expect(ChatCommand.parse("/mission") == .unknown("/mission needs the task text: /mission TEXT"))
        #expect(ChatCommand.parse("/cancel a b") == .unknown("/cancel needs one mission id: /cancel ID"))
        #expect(ChatCommand.parse("/cancel ../../etc") == .unknown("/cancel needs one mission id: /cancel ID"))
        #expect(ChatCommand.parse("/restart everything") == .unknown("/restart needs bridge or runner: /restart bridge|runner"))
        #expect(ChatCommand.parse("/journal -3") == .unknown("/journal takes a count: /journal [N]"))
        #expect(ChatCommand.parse("/heal now") == .unknown("/heal needs reset: /heal reset"))
        #expect(ChatCommand.parse("/status extra") == .unknown("/status takes no arguments"))
    }

    @Test func hostileText() {
        // Control characters and terminal escapes vanish; NUL cannot reach an argv element.
        #expect(ChatCommand.parse("/mission a\u{0}b\u{1b}[31mred\u{7}") == .mission("ab[31mred"))
        // Bidi overrides are removed (they disguise what a command says).
        #expect(ChatCommand.parse("/mission safe\u{202E}txt.exe") == .mission("safetxt.exe"))
        // Invalid UTF-8 is repaired, never a crash.
        let bytes: [UInt8] = [0x2F, 0x6D, 0x69, 0x73, 0x73, 0x69, 0x6F, 0x6E, 0x20, 0xFF, 0xFE, 0x41]
        #expect(ChatCommand.parse(ChatText.clean(bytes: bytes)) == .mission("\u{FFFD}\u{FFFD}A"))
        // Very long: refused with a reason, not truncated into something else.
        let long = "/mission " + String(repeating: "x", count: 100_000)
        guard case .unknown(let why)? = ChatCommand.parse(long) else { Issue.record("long mission accepted"); return }
        #expect(why.contains("too long"))
        // A very long command word is unknown and short.
        guard case .unknown(let w)? = ChatCommand.parse("/" + String(repeating: "a", count: 10_000)) else { Issue.record("not unknown"); return }
        #expect(w.count <= 41)
    }

    /// `/journal N`: the newest end is kept within the message size, and the reply says how
    /// many older entries it left out.
    @Test func newestLinesWithinABudget() {
        let lines = (1...100).map { "entry \($0) " + String(repeating: "x", count: 40) }
        let text = ChatText.newest(lines, within: 1000) { "… \($0) older not shown" }
        let shown = text.split(separator: "\n").map(String.init)
        #expect(text.count <= 1000)
        #expect(shown.last == lines.last, "the newest entry is there")
        #expect(shown.first == "… \(100 - (shown.count - 1)) older not shown")
        #expect(Array(shown.dropFirst()) == Array(lines.suffix(shown.count - 1)), "the newest, in order, none skipped")
        #expect(ChatText.newest(["a", "b"], within: 1000) { "\($0)" } == "a\nb", "all fit: no note")
    }

    @Test func sanitising() {
        #expect(ChatText.clean("a\u{1b}]0;title\u{7}b\r\nc") == "a]0;titleb\nc")
        #expect(ChatText.clean("x\ny", keepNewlines: false) == "x y")
        #expect(ChatText.clean(String(repeating: "é", count: 10), maxLength: 4) == "éééé…")
        #expect(ChatText.brief("\u{9b}31m") == "31m")
        #expect(ChatText.defuseMentions("hi @room and @roomy, @Channel!") == "hi @\u{200B}room and @roomy, @\u{200B}Channel!")
        #expect(ChatText.escapeSlack("<!channel> & <https://x|y>") == "&lt;!channel&gt; &amp; &lt;https://x|y&gt;")
    }

    @Test func backoffDoublesAndCaps() {
        let b = Backoff(initial: .seconds(1), max: .seconds(10), jitter: 0.5)
        #expect(b.delay(afterAttempt: 1, random: 1) == .seconds(1))
        #expect(b.delay(afterAttempt: 1, random: 0) == .seconds(0.5))
        #expect(b.delay(afterAttempt: 3, random: 1) == .seconds(4))
        #expect(b.delay(afterAttempt: 9, random: 1) == .seconds(10))
        #expect(b.delay(afterAttempt: 1000, random: 0) == .seconds(5))
    }

    @Test func circuitBreakerClosedOpenHalfOpen() {
        var c = CircuitBreaker(threshold: 2, cooloff: .seconds(1), maxCooloff: .seconds(3))
        let t0 = BootInstant(seconds: 100)
        var allowed = c.allows(now: t0)
        #expect(allowed)
        var change = c.recordFailure(now: t0)
        #expect(change == nil)
        change = c.recordFailure(now: t0)
        #expect(change == .open)
        allowed = c.allows(now: t0 + .seconds(0.5))
        #expect(!allowed)
        allowed = c.allows(now: t0 + .seconds(1))
        #expect(allowed)
        #expect(c.state == .halfOpen)
        change = c.recordFailure(now: t0 + .seconds(1))
        #expect(change == .open)
        #expect(c.openUntil == t0 + .seconds(3)) // cool-off doubled
        allowed = c.allows(now: t0 + .seconds(3))
        #expect(allowed)
        let old = c.recordSuccess()
        #expect(old == .halfOpen)
        #expect(c.state == .closed)
        #expect(c.consecutiveFailures == 0)
    }

    @Test func transactionIDsAreStablePerKey() {
        let a = MatrixSession.transactionID(forKey: "heal:42")
        #expect(a == MatrixSession.transactionID(forKey: "heal:42"))
        #expect(a != MatrixSession.transactionID(forKey: "heal:43"))
        #expect(a.count == 6 + 32)
    }
}
