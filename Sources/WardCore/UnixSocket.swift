#if canImport(Glibc)
import Glibc
#endif

/// Unix stream socket plumbing shared by the server and the client (`WardConnection`).
public enum UnixSocket {
    /// The address of a socket path (at most 107 bytes: longer paths are truncated, so
    /// callers check `path.utf8.count < 108`).
    public static func address(_ path: String) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        return addr
    }

    /// A connected, close-on-exec socket, or the errno of the failure.
    public static func connect(_ path: String) -> Result<Int32, Errno> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failure(Errno(errno)) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        var addr = address(path)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            return .failure(Errno(e))
        }
        return .success(fd)
    }

    /// Writes every byte (retrying EINTR, never raising SIGPIPE); false when the peer is gone.
    public static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = OS.retrying { bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            if n < 0 { return false }
            offset += n
        }
        return true
    }

    /// An errno with its text.
    public struct Errno: Error, Sendable, CustomStringConvertible {
        public let code: Int32
        public init(_ code: Int32) { self.code = code }
        public var description: String { String(cString: strerror(code)) }
    }
}
