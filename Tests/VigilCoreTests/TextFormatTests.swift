import Testing
import VigilCore

/// The text helpers that stand in for Foundation's `String(format:)`, `trimmingCharacters`
/// and `padding` (docs/architecture.md, "Foundation: Essentials only").
@Suite("Text for people: DecimalText, trimming, padding")
struct TextFormatTests {
    @Test("fixed: like %.Nf, half to even, no minus on a rounded zero, non-finite named")
    func fixed() {
        #expect(DecimalText.fixed(3, places: 3) == "3.000")
        #expect(DecimalText.fixed(2.25, places: 1) == "2.2")
        #expect(DecimalText.fixed(2.35, places: 1) == "2.4")
        #expect(DecimalText.fixed(1234.5678, places: 2) == "1234.57")
        #expect(DecimalText.fixed(-1.25, places: 1) == "-1.2")
        #expect(DecimalText.fixed(-0.01, places: 1) == "0.0")
        #expect(DecimalText.fixed(12.6, places: 0) == "13")
        #expect(DecimalText.fixed(0.05, places: 2) == "0.05")
        #expect(DecimalText.fixed(.nan, places: 1) == "nan")
        #expect(DecimalText.fixed(-.infinity, places: 1) == "-inf")
        #expect(DecimalText.fixed(1e30, places: 1) == "\(1e30)")
    }

    @Test("compact: whole numbers without a point, others as Swift prints them")
    func compact() {
        #expect(DecimalText.compact(5) == "5")
        #expect(DecimalText.compact(2.5) == "2.5")
        #expect(DecimalText.compact(-3) == "-3")
    }

    @Test("trimming white space (with or without newlines), trimming chosen characters, padding")
    func trimmingAndPadding() {
        #expect(" \t 5s \n".trimmingWhitespace() == "5s")
        #expect(" 5s \n".trimmingWhitespace(keepingNewlines: true) == "5s \n")
        #expect("   ".trimmingWhitespace() == "")
        #expect("".trimmingWhitespace() == "")
        #expect("##12#".trimming({ $0 == "#" }) == "12")
        #expect("ab".padded(toLength: 4) == "ab  ")
        #expect("abcdef".padded(toLength: 3) == "abc")
        #expect("abc".padded(toLength: 3) == "abc")
    }
}
