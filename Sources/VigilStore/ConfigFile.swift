import FoundationEssentials
import VigilSystem

/// `vigil.json`, read through `StateSlot`: a FIFO, device, directory, symlink or a file over
/// `StateSlot.sizeLimit` there is refused with a sentence (the configuration is the operator's,
/// so it is not quarantined behind their back), never a blocked `open`. See
/// docs/operator-guide.md, "Bad input".
public enum ConfigFile {
    /// The file's bytes, or nil when there is none.
    public static func read(_ path: String) throws(ConfigFileError) -> Data? {
        switch StateSlot.read(path) {
        case .absent: return nil
        case .bytes(let b): return Data(b)
        case .unfit(let why):
            throw ConfigFileError(message: "\(path) is \(why): Vigil reads its configuration only from a regular file; remove it or put the configuration there as a plain file (see docs/operator-guide.md, \"Bad input\")")
        }
    }
}

public struct ConfigFileError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}
