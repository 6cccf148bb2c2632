#if canImport(Glibc)
import Glibc
#endif

/// The credential that lets the agent, and only the agent, drive ward over its socket.
///
/// Tools may run under ward's own uid (always when ward is unprivileged), so the socket's
/// `SO_PEERCRED` check cannot tell the agent from a tool that connects to it (a tool with
/// `network = "any"` may open Unix sockets, and the socket's path follows from the run ID).
/// The agent proves itself with a secret of the supervisor's life that tools never see:
///
/// - `ward run` puts it in the agent's environment only (`WARD_TOKEN`). Tools' environments
///   are built from ward's own, which never holds it (`Sandbox` drops the name whatever a
///   policy says), and Landlock's ptrace scoping keeps a tool out of `/proc/<agent>/environ`.
/// - `ward serve` writes it to a file of mode 0600 beside the socket (`tokenFile`), inside
///   the checked socket directory, which no tool's read or write roots may cover.
///
/// The first request on a connection must be `session.auth` with the token; anything else is
/// answered with an `unauthorized` error and the connection is closed. It is checked once
/// per connection, never per request.
public enum AgentCredential {
    /// The agent's environment variable that holds the token under `ward run`.
    public static let environmentVariable = "WARD_TOKEN"
    /// The method that opens a connection: `{"token": TOKEN}` → `{"runId": RUN}`.
    public static let method = "session.auth"

    /// A new token: 32 bytes from the kernel's random source, as 64 hex digits.
    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        return String((0..<64).map { _ in "0123456789abcdef".randomElement(using: &rng)! })
    }

    /// Where `ward serve` publishes the token of the socket at `socketPath`: beside it, with
    /// `.sock` replaced by `.token` (`/tmp/ward-0/RUN.sock` → `/tmp/ward-0/RUN.token`), or
    /// `.token` appended.
    public static func tokenFile(forSocket socketPath: String) -> String {
        (socketPath.hasSuffix(".sock") ? String(socketPath.dropLast(5)) : socketPath) + ".token"
    }

    /// The token for the socket at `socketPath`: the token file beside it when there is one
    /// (`ward serve`), else `$WARD_TOKEN` (`ward run`); nil when neither is there.
    public static func find(forSocket socketPath: String) -> String? {
        if let token = read(tokenFile(forSocket: socketPath)) { return token }
        return getenv(environmentVariable).map { String(cString: $0) }
    }

    /// The token in `path` (its first line); nil when it cannot be read. A symlink is not
    /// followed: the file is ward's own, never a link.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 256)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        let token = bytes[0..<n].prefix { $0 != 0x0A && $0 != 0x0D }
        return token.isEmpty ? nil : String(decoding: token, as: UTF8.self)
    }

    /// Writes `token` to `path` with mode 0600, replacing a stale file; false on failure.
    /// Never through a symlink, and never into a file another process already holds open.
    public static func publish(_ token: String, at path: String) -> Bool {
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return Array((token + "\n").utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == token.utf8.count + 1
    }

    /// Whether `presented` is `expected`, in time that does not depend on where they differ
    /// (a peer timing answers learns nothing of the token).
    public static func matches(_ presented: String, _ expected: String) -> Bool {
        let a = Array(presented.utf8), b = Array(expected.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<b.count { difference |= b[i] ^ (i < a.count ? a[i] : 0) }
        return difference == 0
    }
}
