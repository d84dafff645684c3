import FoundationEssentials
import VigilCore
import VigilSystem

/// The `metrics` object of vigil.json (docs/operator-guide.md, "Probes and metrics"):
///
///     "metrics": {"listen": "127.0.0.1:9464"}
///
/// `listen` is an IPv4 address (or `localhost`) and port; a non-loopback address is refused
/// unless `"allow_remote": true` says it is meant (the metrics name the state directory's
/// health to whoever can connect; there is no authentication).
public struct MetricsConfig: Equatable, Sendable {
    public var listen: ListenAddress
    public var allowRemote: Bool

    static let keys: Set<String> = ["listen", "allow_remote"]

    /// Checks and reads the object; every problem is one sentence naming the file.
    static func parse(_ value: JSONValue, file: String) throws -> MetricsConfig {
        guard case .object(let o) = value else {
            throw CommandError("\(file): \"metrics\" must be an object, e.g. {\"listen\": \"127.0.0.1:9464\"}", code: 2)
        }
        if let unknown = o.keys.sorted().first(where: { !keys.contains($0) }) {
            throw CommandError("\(file): unknown key \(unknown.debugDescription) in \"metrics\" (known: \(keys.sorted().joined(separator: ", ")))", code: 2)
        }
        guard let text = o["listen"]?.stringValue else {
            throw CommandError("\(file): \"metrics\" needs \"listen\": \"HOST:PORT\" (a string, e.g. \"127.0.0.1:9464\")", code: 2)
        }
        var allow = false
        if let a = o["allow_remote"] {
            guard case .bool(let b) = a else { throw CommandError("\(file): \"metrics\".\"allow_remote\" must be true or false", code: 2) }
            allow = b
        }
        let address: ListenAddress
        switch ListenAddress.parse(text) {
        case .success(let a): address = a
        case .failure(let e): throw CommandError("\(file): \"metrics\".\"listen\" \(e.description)", code: 2)
        }
        if !address.isLoopback && !allow {
            throw CommandError("\(file): \"metrics\".\"listen\" is \(address), which is not a loopback address: the metrics have no authentication, so Vigil serves them on 127.0.0.1 only unless \"allow_remote\": true is given as well", code: 2)
        }
        return MetricsConfig(listen: address, allowRemote: allow)
    }
}
