import Foundation
import Testing
import VigilStore

/// The journal's vocabulary is `JournalEvent`: one spelling, and the operator guide's table lists
/// exactly its cases (docs/operator-guide.md, "Reading the journal").
@Suite struct JournalEventTests {
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    @Test func everyNameIsKebabCase() {
        for e in JournalEvent.allCases {
            let name = e.rawValue
            #expect(name.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }, "\(name)")
            #expect(!name.hasPrefix("-") && !name.hasSuffix("-") && !name.contains("--"), "\(name)")
        }
        #expect(Set(JournalEvent.allCases.map(\.rawValue)).count == JournalEvent.allCases.count)
    }

    /// The names in the first column of the events table (each row names one or more events, in
    /// backticks), in the order they appear.
    static func documentedEvents() throws -> [String] {
        let guide = try String(contentsOf: repository.appendingPathComponent("docs/operator-guide.md"), encoding: .utf8)
        let lines = guide.components(separatedBy: "\n")
        let header = try #require(lines.firstIndex(of: "| event | meaning |"), "the events table of docs/operator-guide.md")
        var names: [String] = []
        for line in lines[(header + 2)...] {
            guard line.hasPrefix("|") else { break }
            let first = line.split(separator: "|", omittingEmptySubsequences: false)[1]
            let parts = first.split(separator: "`", omittingEmptySubsequences: false)
            for (i, part) in parts.enumerated() where i % 2 == 1 { names.append(String(part)) }
        }
        return names
    }

    /// No script or doc spells an event a second way (`chat_redeliver` for `chat-redeliver`):
    /// the scripts take the names from `vigil journal --events` and check the ones they use.
    @Test func noSecondSpellingInScriptsOrDocs() throws {
        let second = Dictionary(uniqueKeysWithValues: JournalEvent.allCases.compactMap { e -> (String, String)? in
            e.rawValue.contains("-") ? (e.rawValue.replacingOccurrences(of: "-", with: "_"), e.rawValue) : nil
        })
        let fm = FileManager.default
        var files: [String] = []
        for dir in ["scripts", "scripts/chaoslib", "docs"] {
            let url = JournalEventTests.repository.appendingPathComponent(dir)
            for name in try fm.contentsOfDirectory(atPath: url.path).sorted() {
                var isDir: ObjCBool = false
                let path = url.appendingPathComponent(name).path
                if fm.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue, !name.hasSuffix(".pyc") { files.append(path) }
            }
        }
        #expect(files.count > 5)
        for path in files {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            for (old, name) in second {
                for quote in ["\"", "'", "`"] where text.contains(quote + old + quote) {
                    Issue.record("\(path) spells \(name) as \(old)")
                }
            }
        }
    }

    @Test func theOperatorGuideListsExactlyTheEvents() throws {
        let documented = try JournalEventTests.documentedEvents()
        let cases = JournalEvent.allCases.map(\.rawValue)
        #expect(Set(cases).subtracting(documented).sorted() == [], "events the table of docs/operator-guide.md leaves out")
        #expect(Set(documented).subtracting(cases).sorted() == [], "names in that table that are no JournalEvent")
        #expect(documented.count == Set(documented).count, "each event listed once")
    }
}
