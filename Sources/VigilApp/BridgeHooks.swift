import VigilCore

/// The bridge's chat side: outbox delivery and chat commands. Filled in when chat is wired.
final class BridgeHooks {
    static func make(bridge: Bridge) throws -> BridgeHooks? { nil }
    func pump(now: BootInstant) {}
    var nextWake: BootInstant? { nil }
    var wakeDescriptors: [Int32] { [] }
    func shutdown(deadline: BootInstant) {}
    func notify(key: String, text: String) {}
}
