import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// ward's one way to read and write file descriptors: every call retries EINTR (a signal
/// handler of the process or a stop/continue must never turn into a short read taken for an
/// end of file, or a failed write), writes are whole, and a failure leaves its errno.
/// Built on swift-system's `FileDescriptor` where it wraps the call (read, write); the
/// calls it does not wrap (send with MSG_NOSIGNAL, recv, flock, accept, poll) go through
/// `retrying`.
public enum OS {
    /// `body` again while it returns -1 with errno EINTR.
    @inlinable
    public static func retrying<T: BinaryInteger>(_ body: () -> T) -> T {
        while true {
            let result = body()
            if result == -1 && errno == EINTR { continue }
            return result
        }
    }

    /// Writes every byte; false, with errno set, when a write fails.
    public static func writeAll(_ fd: Int32, _ bytes: some Sequence<UInt8>) -> Bool {
        do {
            _ = try FileDescriptor(rawValue: fd).writeAll(bytes)
            return true
        } catch {
            errno = (error as? Errno)?.rawValue ?? EIO
            return false
        }
    }

    /// Reads into `buffer` once: the count (0 at end of file), or nil with errno set.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        do { return try FileDescriptor(rawValue: fd).read(into: buffer) } catch {
            errno = (error as? Errno)?.rawValue ?? EIO
            return nil
        }
    }

    /// Reads to end of file, at most `limit` bytes; nil, with errno set, when a read fails.
    public static func readAll(_ fd: Int32, limit: Int = .max) -> [UInt8]? {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while bytes.count < limit {
            let want = min(chunk.count, limit - bytes.count)
            guard let n = chunk.withUnsafeMutableBytes({ read(fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[..<want])) }) else { return nil }
            if n == 0 { break }
            bytes += chunk[..<n]
        }
        return bytes
    }

    /// Calls `body` with each chunk read until end of file; false, with errno set, when a read fails.
    public static func forEachChunk(_ fd: Int32, _ body: (ArraySlice<UInt8>) -> Void) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            guard let n = chunk.withUnsafeMutableBytes({ read(fd, into: $0) }) else { return false }
            if n == 0 { return true }
            body(chunk[..<n])
        }
    }

    /// Takes an exclusive flock on `fd`, waiting for it; false, with errno set, on failure.
    public static func lockExclusive(_ fd: Int32) -> Bool {
        retrying { flock(fd, LOCK_EX) } == 0
    }
}
