import FoundationEssentials
import VigilCore
import VigilStore

/// Slack/Mattermost-style incoming webhook: `POST url` with `{"text": …}` (and `username` when
/// configured), the configured headers, and `Idempotency-Key: <key>` for receivers that
/// de-duplicate. 2xx is delivered; 408, 425, 429, 5xx and network errors are retried; any
/// other status fails the message at once. The reply's status decides, also when its body is
/// over the 1 MiB cap (its body is not read past it; docs/chat.md, "Reply size caps"). The URL and header values are secrets: errors name
/// only scheme, host and port.
final class WebhookAdapter: ChatAdapter, Sendable {
    let name = "webhook"
    let config: ChatConfig.Webhook
    var lease: TimeSpan { config.timeout + .seconds(5) }
    let url: URL
    private let client = HTTPClient()

    init(_ config: ChatConfig.Webhook) throws {
        guard let url = URL(string: config.url), let scheme = url.scheme?.lowercased(),
              scheme == "http" || scheme == "https", url.host != nil else {
            throw ChatConfigError(message: "chat.webhook.url is not an http(s) URL")
        }
        self.config = config
        self.url = url
    }

    func cancel() { client.cancel() }

    static func payload(_ body: String, username: String?) -> Data {
        var o: [String: JSONValue] = ["text": .string(ChatText.escapeSlack(ChatText.defuseMentions(body)))]
        if let username { o["username"] = .string(username) }
        return JSONValue.object(o).encoded()
    }

    func deliver(_ message: OutboxMessage) -> DeliveryResult {
        var headers = config.headers
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = message.key.count <= 200 ? message.key : String(message.key.prefix(200))
        let outcome = client.perform(HTTPRequest(method: "POST", url: url, headers: headers,
                                                 body: WebhookAdapter.payload(message.body, username: config.username),
                                                 timeout: config.timeout))
        let target = redactedURL(url)
        switch outcome {
        case .cancelled:
            return .cancelled
        case .failure(let why):
            return .retry("webhook \(target): \(why)", after: nil)
        case .tooLarge(let status, let limit):
            return WebhookAdapter.judge(status: status, text: "webhook \(target): HTTP \(status), reply body over \(limit) bytes (not read)")
        case .response(let status, let body):
            if (200..<300).contains(status) { return .delivered(remoteID: nil) }
            let detail = ChatText.brief(String(decoding: body.prefix(300), as: UTF8.self), maxLength: 200)
            return WebhookAdapter.judge(status: status, text: "webhook \(target): HTTP \(status)" + (detail.isEmpty ? "" : ": \(detail)"))
        }
    }

    /// What a status means for the message (`text` describes a status that is not 2xx).
    static func judge(status: Int, text: String) -> DeliveryResult {
        if (200..<300).contains(status) { return .delivered(remoteID: nil) }
        if status == 408 || status == 425 || status == 429 || status >= 500 { return .retry(text, after: nil) }
        return .failed(text)
    }
}
