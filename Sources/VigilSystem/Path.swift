/// Path names as text, the one place for them: the last component, the parent, the
/// components, and an absolute path made standard (what Foundation's NSString path methods
/// did; the product links FoundationEssentials only, docs/architecture.md, "Foundation:
/// Essentials only"). Trailing slashes do not count: `/a/b/` is `/a/b`.
public enum Path {
    /// `b` for `/a/b` and `/a/b/`; `/` for `/`; `a` for `a`; empty for empty.
    public static func lastComponent(_ path: String) -> String {
        let p = withoutTrailingSlashes(path)
        if p == "/" || p.isEmpty { return p }
        guard let slash = p.lastIndex(of: "/") else { return p }
        return String(p[p.index(after: slash)...])
    }

    /// The directory holding the last component: `/a` for `/a/b`, `/` for `/a` and `/`,
    /// empty for a bare name.
    public static func parent(_ path: String) -> String {
        let p = withoutTrailingSlashes(path)
        if p == "/" { return p }
        guard let slash = p.lastIndex(of: "/") else { return "" }
        let head = withoutTrailingSlashes(String(p[..<slash]))
        return head.isEmpty ? "/" : head
    }

    /// The names between the slashes, without the root: `["a", "b"]` for `/a//b/`.
    public static func components(_ path: String) -> [String] {
        path.split(separator: "/").map(String.init)
    }

    /// An absolute path with `.`, `..`, repeated slashes and symlinks resolved as far as the
    /// path exists (the rest is resolved by name): `/tmp/x/../y` is `/tmp/y`, and a symlink
    /// in the existing part is replaced by its target.
    public static func standardized(_ path: String) -> String {
        if let real = FileSystem.realPath(path) { return real }
        let up = parent(path)
        guard up != path, !up.isEmpty else { return path }
        let base = standardized(up)
        switch lastComponent(path) {
        case "", ".": return base
        case "..": return parent(base)
        case let name: return base == "/" ? "/" + name : base + "/" + name
        }
    }

    private static func withoutTrailingSlashes(_ path: String) -> String {
        var p = Substring(path)
        while p.count > 1, p.hasSuffix("/") { p.removeLast() }
        return String(p)
    }
}
