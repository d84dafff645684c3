import Foundation
import Testing
import VigilCore
import VigilSystem

/// A port that was free a moment ago on 127.0.0.1 (bound to port 0, read, closed).
func freePort() throws -> UInt16 {
    let l = try TCPListener(ListenAddress(octets: [127, 0, 0, 1], port: 0))
    return l.address.port
}

/// One HTTP exchange with a server on 127.0.0.1 (HTTP/1.0, the server closes): status, head
/// and body; nil when nothing came back.
func httpGet(port: UInt16, _ target: String, raw: String? = nil, timeout: Double = 10) -> (status: Int, head: String, body: String)? {
    let request = raw ?? "GET \(target) HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n"
    guard let bytes = TCPClient.exchange(ListenAddress(octets: [127, 0, 0, 1], port: port), request: Array(request.utf8), timeout: .seconds(timeout)) else { return nil }
    let text = String(decoding: bytes, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { return nil }
    let head = String(text[..<split.lowerBound])
    let parts = head.split(separator: " ", maxSplits: 2)
    guard parts.count >= 2, let code = Int(parts[1]) else { return nil }
    return (code, head, String(text[split.upperBound...]))
}

/// A strict reader of the Prometheus text format 0.0.4 as Vigil writes it: every line is a
/// `# HELP`, a `# TYPE` or a sample; a family's HELP and TYPE come before its samples, once;
/// names and label names are valid; label values are quoted with `\\`, `\"`, `\n` escapes;
/// values are numbers (or +Inf/-Inf/NaN). Records an issue per broken line.
struct Exposed {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }
    var types: [String: String] = [:]
    var helps: [String: String] = [:]
    var samples: [Sample] = []

    init(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(text.hasSuffix("\n"), "the exposition ends with a line feed", sourceLocation: sourceLocation)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            let l = String(line)
            if l.hasPrefix("# HELP ") || l.hasPrefix("# TYPE ") {
                let rest = l.dropFirst(7).split(separator: " ", maxSplits: 1).map(String.init)
                guard rest.count == 2, Exposed.isName(rest[0]) else { Issue.record("bad comment line: \(l)", sourceLocation: sourceLocation); continue }
                if l.hasPrefix("# HELP ") {
                    #expect(helps[rest[0]] == nil, "HELP twice for \(rest[0])", sourceLocation: sourceLocation)
                    helps[rest[0]] = rest[1]
                } else {
                    #expect(["counter", "gauge", "histogram", "summary", "untyped"].contains(rest[1]), "type of \(rest[0])", sourceLocation: sourceLocation)
                    #expect(types[rest[0]] == nil, "TYPE twice for \(rest[0])", sourceLocation: sourceLocation)
                    #expect(!samples.contains { Exposed.family(of: $0.name, types) == rest[0] }, "TYPE after samples of \(rest[0])", sourceLocation: sourceLocation)
                    types[rest[0]] = rest[1]
                }
                continue
            }
            guard let s = Exposed.parseSample(l) else { Issue.record("bad sample line: \(l.debugDescription)", sourceLocation: sourceLocation); continue }
            #expect(Exposed.family(of: s.name, types) != nil, "sample \(s.name) before its TYPE", sourceLocation: sourceLocation)
            samples.append(s)
        }
    }

    /// The family a sample belongs to (`x_bucket`, `x_sum`, `x_count` of a histogram `x`).
    static func family(of name: String, _ types: [String: String]) -> String? {
        if types[name] != nil { return name }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if types[base] == "histogram" { return base }
        }
        return nil
    }

    static func isName(_ s: String) -> Bool {
        guard let f = s.first, f.isASCII, f.isLetter || f == "_" || f == ":" else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }
    }

    static func parseSample(_ line: String) -> Sample? {
        var i = line.startIndex
        while i < line.endIndex, line[i] != "{", line[i] != " " { i = line.index(after: i) }
        let name = String(line[..<i])
        guard isName(name), i < line.endIndex else { return nil }
        var labels: [String: String] = [:]
        if line[i] == "{" {
            i = line.index(after: i)
            while line[i] != "}" {
                var j = i
                while j < line.endIndex, line[j] != "=" { j = line.index(after: j) }
                guard j < line.endIndex else { return nil }
                let key = String(line[i..<j])
                guard isName(key), !key.contains(":"), line.index(after: j) < line.endIndex, line[line.index(after: j)] == "\"" else { return nil }
                var k = line.index(j, offsetBy: 2)
                var value = ""
                while true {
                    guard k < line.endIndex else { return nil }
                    let c = line[k]
                    if c == "\"" { break }
                    if c == "\\" {
                        k = line.index(after: k)
                        guard k < line.endIndex else { return nil }
                        switch line[k] {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: return nil
                        }
                    } else {
                        value.append(c)
                    }
                    k = line.index(after: k)
                }
                guard labels.updateValue(value, forKey: key) == nil else { return nil }
                i = line.index(after: k)
                guard i < line.endIndex else { return nil }
                if line[i] == "," { i = line.index(after: i) } else if line[i] != "}" { return nil }
            }
            i = line.index(after: i)
        }
        guard i < line.endIndex, line[i] == " " else { return nil }
        let rest = line[line.index(after: i)...].split(separator: " ")
        guard rest.count == 1 || rest.count == 2 else { return nil }
        let v: Double
        switch rest[0] {
        case "+Inf": v = .infinity
        case "-Inf": v = -.infinity
        case "NaN": v = .nan
        default:
            guard let d = Double(rest[0]) else { return nil }
            v = d
        }
        return Sample(name: name, labels: labels, value: v)
    }

    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    func sum(_ name: String, where match: ([String: String]) -> Bool = { _ in true }) -> Double {
        samples.filter { $0.name == name && match($0.labels) }.reduce(0) { $0 + $1.value }
    }

    /// Checks what the format asks of families: counters end in `_total`; a histogram's
    /// buckets are cumulative, end with `le="+Inf"`, and that bucket equals `_count`.
    func checkConventions(sourceLocation: SourceLocation = #_sourceLocation) {
        for (name, type) in types {
            #expect(name.hasPrefix("vigil_"), "\(name) is a vigil_ name", sourceLocation: sourceLocation)
            #expect(helps[name] != nil, "HELP for \(name)", sourceLocation: sourceLocation)
            if type == "counter" { #expect(name.hasSuffix("_total"), "counter \(name) ends in _total", sourceLocation: sourceLocation) }
            if type == "histogram" {
                let buckets = samples.filter { $0.name == name + "_bucket" }
                #expect(buckets.last?.labels["le"] == "+Inf", "\(name) ends with +Inf", sourceLocation: sourceLocation)
                let values = buckets.map(\.value)
                #expect(values == values.sorted(), "\(name) buckets are cumulative: \(values)", sourceLocation: sourceLocation)
                #expect(buckets.last?.value == value(name + "_count"), "\(name) +Inf bucket == _count", sourceLocation: sourceLocation)
                #expect(value(name + "_sum") != nil, "\(name)_sum", sourceLocation: sourceLocation)
            }
        }
    }
}
