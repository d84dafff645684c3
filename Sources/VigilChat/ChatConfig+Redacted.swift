import FoundationEssentials
/// Printing a configuration never shows its secrets (URLs of webhooks, tokens, passwords,
/// header values): `description`, `debugDescription` and mirrors (`dump`) are redacted.
extension ChatConfig: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        var parts = ["adapters: \(adapters.joined(separator: ","))", "max_attempts: \(maxAttempts)",
                     "backoff: \(backoffInitial)…\(backoffMax)", "circuit: \(circuitFailures) failures, cooloff \(circuitCooloff)",
                     "command_max_age: \(commandMaxAge)"]
        if let webhook { parts.append("webhook: \(webhook)") }
        if let matrix { parts.append("matrix: \(matrix)") }
        return "ChatConfig(" + parts.joined(separator: "; ") + ")"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["summary": description]) }
}

extension ChatConfig.Webhook: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        let target = URL(string: url).map(redactedURL) ?? "(invalid URL)"
        return "\(target) headers: [\(headers.keys.sorted().joined(separator: ", "))]"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["summary": description]) }
}

extension ChatConfig.Matrix: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        let auth = accessToken != nil ? "access token" : "password login"
        return "\(homeserver) user: \(user ?? "-") room: \(room) (\(auth)) allow: \(allow.joined(separator: ","))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["summary": description]) }
}
