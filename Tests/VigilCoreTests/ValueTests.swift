import Foundation
import Testing
import VigilCore

@Suite("TimeSpan")
struct TimeSpanTests {
    @Test("Parses seconds with decimals and suffixes", arguments: [
        ("0.2", 200_000_000), ("200ms", 200_000_000), ("2s", 2_000_000_000), ("5m", 300_000_000_000),
        ("1h", 3_600_000_000_000), ("1.5", 1_500_000_000), ("1.5s", 1_500_000_000), ("250us", 250_000),
        ("10", 10_000_000_000), (" 3s ", 3_000_000_000), ("2S", 2_000_000_000), ("1MS", 1_000_000),
        (".5", 500_000_000), ("0", 0), ("0ms", 0), ("-1s", -1_000_000_000), ("+2", 2_000_000_000),
        ("0.0001", 100_000), ("1ms", 1_000_000), ("0.1", 100_000_000), ("600", 600_000_000_000),
    ] as [(String, Int64)])
    func parses(text: String, nanoseconds: Int64) {
        #expect(TimeSpan.parse(text) == TimeSpan(nanoseconds: nanoseconds))
    }

    @Test("Rejects anything else", arguments: [
        "", " ", "s", "ms", "abc", "1x", "1 s", "1e3", "inf", "nan", "infinity", "1.2.3", "--1", "5 m", "1d",
        "1ss", "1sm", "½", "٣", "1_000", "0x10", "1e9", "999999999999", "1000000000", "Infinity s",
    ])
    func rejects(text: String) {
        #expect(TimeSpan.parse(text) == nil)
    }

    @Test("Human form", arguments: [
        (TimeSpan.milliseconds(250), "250ms"), (.seconds(1.5), "1.5s"), (.seconds(600), "10m"),
        (.seconds(3600), "1h"), (.zero, "0s"), (.seconds(90), "90s"), (.seconds(7200), "2h"),
        (.milliseconds(0.5), "0.5ms"), (.seconds(-2), "-2s"),
    ])
    func description(span: TimeSpan, text: String) {
        #expect(span.description == text)
    }

    @Test("Arithmetic and conversions")
    func arithmetic() throws {
        #expect(TimeSpan.seconds(1) + .milliseconds(500) == .seconds(1.5))
        #expect(TimeSpan.seconds(1) - .seconds(3) == .seconds(-2))
        #expect(TimeSpan.seconds(2) * 1.5 == .seconds(3))
        #expect(TimeSpan.seconds(0.3).nanoseconds == 300_000_000)
        #expect(TimeSpan.milliseconds(1).milliseconds == 1)
        #expect(TimeSpan.seconds(1) < .seconds(1) + oneNanosecond)
        let json = try JSONEncoder().encode(TimeSpan.milliseconds(20))
        #expect(String(decoding: json, as: UTF8.self) == "20000000")
        #expect(try JSONDecoder().decode(TimeSpan.self, from: json) == .milliseconds(20))
    }

    @Test("Boot instants: differences and offsets")
    func bootInstant() throws {
        let a = BootInstant(nanoseconds: 10)
        #expect((a + .seconds(1)) - a == .seconds(1))
        #expect((a - .seconds(1)) < a)
        #expect(BootInstant(seconds: 2).nanoseconds == 2_000_000_000)
        #expect(try JSONDecoder().decode(BootInstant.self, from: JSONEncoder().encode(a)) == a)
    }
}

@Suite("ByteSize")
struct ByteSizeTests {
    @Test("Parses sizes", arguments: [
        ("512MB", 512_000_000), ("1.5GB", 1_500_000_000), ("800k", 819_200), ("1048576", 1_048_576),
        ("1kib", 1024), ("2MiB", 2_097_152), ("1GiB", 1_073_741_824), ("1kb", 1000), ("3m", 3_145_728),
        ("1g", 1_073_741_824), ("10b", 10), ("10B", 10), (" 7 ", 7), ("0.5k", 512),
    ] as [(String, UInt64)])
    func parses(text: String, bytes: UInt64) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test("Rejects garbage, zero, negatives and sizes that do not fit in 64 bits", arguments: [
        "", "mb", "abc", "-1MB", "0", "0MB", "1 MB", "1e6", "1tb", "inf", "nan", "1.2.3k",
        "100000000000gb", "18446744073709551616", "99999999999999999999999999999999", "20000000000g",
    ])
    func rejects(text: String) {
        // The last few used to trap (`UInt64(Double)` out of range) and take the runner down
        // on a typo in --rss-limit.
        #expect(ByteSize.parse(text) == nil)
    }

    @Test("The largest sizes that fit are accepted")
    func largest() {
        #expect(ByteSize.parse("16gib") == 16 << 30)
        #expect(ByteSize.parse("17179869183g") == (17_179_869_183 as UInt64) << 30) // 2^64 − 1 GiB
    }

    @Test("Human form")
    func format() {
        #expect(ByteSize.format(512) == "512 B")
        #expect(ByteSize.format(2048) == "2.0 KiB")
        #expect(ByteSize.format(3 << 20) == "3.0 MiB")
        #expect(ByteSize.format(5 << 30) == "5.0 GiB")
    }
}

@Suite("CRC32")
struct CRC32Tests {
    @Test("Known values (IEEE 802.3, as zlib)", arguments: [
        ("", 0x0000_0000), ("a", 0xE8B7_BE43), ("abc", 0x3524_41C2), ("123456789", 0xCBF4_3926),
        ("The quick brown fox jumps over the lazy dog", 0x414F_A339),
    ] as [(String, UInt32)])
    func known(text: String, crc: UInt32) {
        #expect(CRC32.checksum(Array(text.utf8)) == crc)
        #expect(CRC32.checksum(Data(text.utf8)) == crc)
        #expect(CRC32.hex(Array(text.utf8)) == String(format: "%08x", crc))
    }

    @Test("Hex is always eight digits")
    func padding() throws {
        // Find inputs whose CRC has leading zero nibbles.
        var found = 0
        for i in 0..<100_000 {
            let bytes = Array("x\(i)".utf8)
            let v = CRC32.checksum(bytes)
            if v < 0x0100_0000 {
                #expect(CRC32.hex(bytes) == String(format: "%08x", v))
                found += 1
                if found > 3 { break }
            }
        }
        #expect(found > 0)
    }

    @Test("Any single flipped bit changes it")
    func flips() {
        let data = Array("vigil-state 1 bridge 12 deadbeef".utf8)
        let base = CRC32.checksum(data)
        for i in data.indices {
            for bit in 0..<8 {
                var d = data
                d[i] ^= UInt8(1 << bit)
                #expect(CRC32.checksum(d) != base)
            }
        }
    }
}

@Suite("JSONValue")
struct JSONValueTests {
    @Test("Round trips through its compact, sorted encoding")
    func roundTrip() throws {
        let v: JSONValue = [
            "s": "text with \"quotes\", / slashes and \n newline and ünïcödé 🚀",
            "i": 42, "neg": -7, "big": .int(Int64.max), "small": .int(Int64.min),
            "d": 1.25, "t": true, "f": false, "n": nil,
            "a": [1, "two", [3], ["four": 4]], "o": ["nested": ["deeper": []]], "empty": [:],
        ]
        let data = v.encoded()
        #expect(JSONValue.parse(data) == v)
        let text = v.jsonString
        #expect(!text.contains("\n"), "one line: the journal depends on it")
        #expect(text.contains("/ slashes"), "slashes are not escaped")
        #expect(text.hasPrefix(#"{"a":"#), "keys are sorted")
        #expect(JSONValue.parse(Data(text.utf8)) == v)
    }

    @Test("Decodes each JSON type to its case", arguments: [
        ("true", JSONValue.bool(true)), ("false", .bool(false)), ("0", .int(0)), ("-3", .int(-3)),
        ("2.5", .double(2.5)), ("1e3", .double(1000)), ("\"1\"", .string("1")), ("\"true\"", .string("true")),
        ("null", .null), ("[]", .array([])), ("{}", .object([:])), ("[null,1]", .array([.null, .int(1)])),
        ("18446744073709551615", .double(1.8446744073709551615e19)),
    ])
    func decodes(text: String, value: JSONValue) {
        let parsed = JSONValue.parse(Data(text.utf8))
        // 1e3 may come back as an integer; what matters is the number.
        if case .double(let d) = value, let p = parsed {
            #expect(p.doubleValue == d)
        } else {
            #expect(parsed == value)
        }
    }

    @Test("Garbage is nil, not a crash", arguments: ["", "{", "nul", "[1,", "{\"a\":}", "\u{0}", "'x'"])
    func garbage(text: String) {
        #expect(JSONValue.parse(Data(text.utf8)) == nil)
    }

    @Test("Accessors")
    func accessors() {
        let v: JSONValue = ["s": "x", "i": 3, "d": 2.0, "h": 2.5, "b": true, "n": nil]
        #expect(v["s"]?.stringValue == "x")
        #expect(v["i"]?.intValue == 3)
        #expect(v["i"]?.doubleValue == 3)
        #expect(v["d"]?.intValue == 2)
        #expect(v["h"]?.doubleValue == 2.5)
        #expect(v["b"]?.boolValue == true)
        #expect(v["n"] == .null)
        #expect(v["missing"] == nil)
        #expect(v["s"]?.intValue == nil && v["i"]?.stringValue == nil && v["b"]?.intValue == nil)
        #expect(JSONValue.string("x")["key"] == nil)
        #expect(JSONValue.double(.nan).intValue == nil)
        #expect(JSONValue.double(.infinity).intValue == nil)
        #expect(JSONValue.double(1e300).intValue == nil)
    }

    @Test("Non-finite doubles encode as 0 instead of failing")
    func nonFinite() {
        #expect(JSONValue.array([.double(.nan), .double(.infinity)]).jsonString == "[0,0]")
    }
}
