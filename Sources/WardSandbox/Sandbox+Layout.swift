import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// A place that ward trusts and no tool may change: the ledger (and its side files), the
/// policies, the socket's directory. A `secret` one (the directory of a published token)
/// must not be readable by any tool either.
public struct ProtectedPath: Sendable {
    /// What it is, for the refusal: "the ledger", "the policy directory".
    public let what: String
    public let path: String
    public let secret: Bool

    public init(_ what: String, _ path: String, secret: Bool = false) {
        self.what = what
        self.path = path
        self.secret = secret
    }

    /// The policy directory and every policy file in it (a file may be a symlink to
    /// elsewhere: its target counts too).
    public static func policies(_ directory: String) -> [ProtectedPath] {
        var paths = [ProtectedPath("the policy directory", directory)]
        guard let dir = opendir(directory) else { return paths }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasSuffix(".toml") { paths.append(ProtectedPath("the policy file", directory + "/" + name)) }
        }
        return paths
    }
}

extension Sandbox {
    /// Refuses a layout in which a tool could change what ward trusts: one `shell` call in a
    /// workspace that holds the ledger could delete its rows, and one that can write the
    /// policies could add a tool that may write `/`. Every protected path, symlinks and
    /// relative paths resolved, is checked against every tool's write roots (and, for a
    /// secret one, its read roots). Throws a `policyDenied` error naming each tool, root and
    /// path; ward then refuses to start.
    public static func checkLayout(policies: PolicySet, workspace: String, protecting protected: [ProtectedPath]) throws(SandboxError) {
        let ws = resolved(workspace)
        let targets = protected.map { ($0, resolved($0.path)) }
        var problems: [String] = []
        // A proxied MCP server's sandbox is held to the same rule as a tool's.
        let sandboxes = policies.tools.keys.sorted().map { ("tool \($0)", policies.tools[$0]!) }
            + policies.servers.keys.sorted().map { ("server \($0)", policies.servers[$0]!.sandbox) }
        for (name, policy) in sandboxes {
            let roots = policy.write.map { ($0, "write") } + policy.read.map { ($0, "read") }
            for (root, access) in roots {
                let body = root.hasPrefix("?") ? String(root.dropFirst()) : root
                let path = resolved((try? Template.expand(body, values: [Template.workspace: ws])) ?? body)
                var held: [(what: String, real: String)] = []
                for (target, real) in targets where (access == "write" || target.secret) && isWithin(real, path) {
                    // A policy file inside the policy directory already named, or the ledger's
                    // `-wal` after the ledger, says nothing new.
                    if !held.contains(where: { isWithin(real, $0.real) || $0.what == target.what }) { held.append((target.what, real)) }
                }
                guard !held.isEmpty else { continue }
                problems.append("\(name) (\(policy.file)) may \(access) \(path), which holds "
                                + held.map { "\($0.what) \($0.real)" }.joined(separator: ", "))
            }
        }
        guard !problems.isEmpty else { return }
        throw SandboxError(.policyDenied, "refusing to start: a tool or server could change what ward trusts:\n  " + problems.joined(separator: "\n  ")
                           + "\nkeep the ledger, the policies and the socket outside every tool's and server's write roots (e.g. --ledger, --policies or --socket elsewhere)")
    }

    /// `path` absolute, with `.`, `..` and symlinks resolved as far as it exists (a ledger's
    /// `-wal` or a socket directory may not exist yet: their parents are resolved).
    static func resolved(_ path: String) -> String {
        var absolute = path
        if !path.hasPrefix("/"), let cwd = getcwd(nil, 0) {
            absolute = String(cString: cwd) + "/" + path
            free(cwd)
        }
        var missing: [Substring] = []
        var existing = absolute
        while true {
            if let real = realpath(existing, nil) {
                defer { free(real) }
                let base = String(cString: real)
                var result = base == "/" ? "" : base
                for part in missing.reversed() {
                    if part == "." || part.isEmpty { continue }
                    if part == ".." {
                        result = String(result[..<(result.lastIndex(of: "/") ?? result.startIndex)])
                    } else {
                        result += "/" + part
                    }
                }
                return result.isEmpty ? "/" : result
            }
            guard let slash = existing.lastIndex(of: "/") else { return absolute }
            missing.append(existing[existing.index(after: slash)...])
            existing = slash == existing.startIndex ? "/" : String(existing[..<slash])
        }
    }

    /// Whether `path` is `root` or lies below it (both resolved).
    static func isWithin(_ path: String, _ root: String) -> Bool {
        path == root || root == "/" || path.hasPrefix(root + "/")
    }
}
