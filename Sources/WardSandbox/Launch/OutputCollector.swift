import CWardOS
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// Drains a tool's stdout and stderr, keeping at most `limit` bytes of each, and copying
/// what it keeps to `capture` (an `OutputCapture` file) when there is one.
struct OutputCollector {
    var fds: [Int32]
    var buffers: [[UInt8]] = [[], []]
    var truncated = false
    /// Per stream: the limit was reached.
    private var full = [false, false]
    let limit: Int
    let capture: Int32
    private var scratch = [UInt8](repeating: 0, count: 65536)

    init(fds: [Int32], limit: Int, capture: Int32 = -1) {
        self.fds = fds
        self.limit = limit
        self.capture = capture
    }

    /// Appends one frame to the capture file. A failed write loses evidence, never the call.
    func record(_ kind: OutputCapture.Kind, _ bytes: ArraySlice<UInt8>) {
        guard capture >= 0, !bytes.isEmpty else { return }
        var header = OutputCapture.frameHeader(kind, length: bytes.count)
        header.withUnsafeMutableBytes { h in
            bytes.withUnsafeBytes { b in
                var iov = [iovec(iov_base: h.baseAddress, iov_len: h.count),
                           iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count)]
                _ = writev(capture, &iov, 2)
            }
        }
    }

    /// Waits for output or for `extra` (the pidfd) to become readable; true when it did.
    /// `listener`, when not -1 (a traced call's), is polled too, and `service` answers it.
    mutating func pollOnce(extra: Int32, listener: Int32 = -1, until deadline: UInt64, service: () -> Void = {}) -> Bool {
        var pfds = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        pfds.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0))
        pfds.append(pollfd(fd: extra, events: Int16(POLLIN), revents: 0))
        let now = Sandbox.monotonicNanoseconds()
        let timeout = now < deadline ? Int32(min((deadline - now) / 1_000_000 + 1, 60_000)) : 0
        if poll(&pfds, nfds_t(pfds.count), timeout) <= 0 { return false }
        // The tool's syscall waits for this answer: before the output, which can wait.
        if listener >= 0 && pfds[fds.count].revents != 0 { service() }
        for i in 0..<fds.count where fds[i] >= 0 && pfds[i].revents != 0 { readAvailable(i) }
        return pfds.last!.revents != 0
    }

    /// After the tree is dead: read both pipes to EOF (bounded in time for the degraded mode).
    mutating func drain(until deadline: UInt64) {
        while fds.contains(where: { $0 >= 0 }) {
            var pfds = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let now = Sandbox.monotonicNanoseconds()
            guard now < deadline else { break }
            if poll(&pfds, nfds_t(pfds.count), Int32((deadline - now) / 1_000_000 + 1)) <= 0 { break }
            for i in 0..<fds.count where fds[i] >= 0 && pfds[i].revents != 0 { readAvailable(i) }
        }
    }

    private mutating func readAvailable(_ i: Int) {
        let n = scratch.withUnsafeMutableBytes { read(fds[i], $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR || errno == EAGAIN { return }
        }
        if n <= 0 {
            close(fds[i])
            fds[i] = -1
            return
        }
        if full[i] { return }  // past the limit: drained and dropped
        let room = limit - buffers[i].count
        let kept = min(room, n)
        if kept > 0 {
            buffers[i] += scratch[0..<kept]
            record(i == 0 ? .stdout : .stderr, scratch[0..<kept])
        }
        if room < n {
            truncated = true
            full[i] = true
            // A cut inside a UTF-8 character would turn the whole stream into base64 for
            // the agent: the cut is moved back to the character's start.
            buffers[i].removeLast(OutputCollector.partialUTF8Suffix(buffers[i]))
        }
    }

    /// How many bytes at the end of `bytes` start a UTF-8 character that is not complete.
    static func partialUTF8Suffix(_ bytes: [UInt8]) -> Int {
        var back = 1
        while back <= min(3, bytes.count) {
            let b = bytes[bytes.count - back]
            if b & 0xC0 != 0x80 {  // not a continuation byte: the character starts here
                let width = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                return width > back ? back : 0
            }
            back += 1
        }
        return 0
    }
}
