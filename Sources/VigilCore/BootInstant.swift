/// A point in time on the `CLOCK_BOOTTIME` clock, in nanoseconds since boot.
///
/// Every time that is compared across processes (heartbeats, markers, heal state) is a
/// `BootInstant`: it keeps counting through suspend and never jumps with the wall clock.
/// Reading the clock lives in `VigilSystem.Clock`; this type is pure so the watchdog core
/// can be tested with made-up times.
public struct BootInstant: Comparable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    public init(seconds: Double) { self.nanoseconds = Int64(seconds * 1e9) }

    public static let zero = BootInstant(nanoseconds: 0)

    public var seconds: Double { Double(nanoseconds) / 1e9 }

    public static func < (a: BootInstant, b: BootInstant) -> Bool { a.nanoseconds < b.nanoseconds }
    public static func + (a: BootInstant, b: TimeSpan) -> BootInstant { BootInstant(nanoseconds: a.nanoseconds &+ b.nanoseconds) }
    public static func - (a: BootInstant, b: TimeSpan) -> BootInstant { BootInstant(nanoseconds: a.nanoseconds &- b.nanoseconds) }
    public static func - (a: BootInstant, b: BootInstant) -> TimeSpan { TimeSpan(nanoseconds: a.nanoseconds &- b.nanoseconds) }

    public var description: String { "boot+\(DecimalText.fixed(seconds, places: 3))s" }

    public init(from decoder: any Decoder) throws {
        nanoseconds = try decoder.singleValueContainer().decode(Int64.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(nanoseconds)
    }
}
