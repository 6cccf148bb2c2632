import Foundation

/// Reads a pipe to its end on a thread of its own, from the moment it is made. A program's
/// stdout and stderr are each drained this way, so neither can fill while the test reads
/// the other (a child blocked writing to a full pipe never exits), and the test can wait for
/// a line the child prints when it reached a point (a readiness signal, not a sleep).
public final class OutputDrain: @unchecked Sendable {
    // @unchecked: `data` and `ended` are only touched with `condition` locked.
    private let condition = NSCondition()
    private var data = Data()
    private var ended = false
    /// Kept open for as long as the drain reads it.
    private let handle: FileHandle

    public init(_ handle: FileHandle) {
        self.handle = handle
        let fd = handle.fileDescriptor
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                condition.lock()
                if n > 0 { data.append(contentsOf: buffer[0..<n]) } else { ended = true }
                condition.broadcast()
                condition.unlock()
                if n <= 0 { return }
            }
        }.start()
    }

    /// Waits until the output so far contains `text`: true; false when it ended without it
    /// or `seconds` passed (a deadline against hanging).
    public func wait(for text: String, within seconds: Double = 20) -> Bool {
        let needle = Data(text.utf8)
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while data.range(of: needle) == nil {
            if ended || !condition.wait(until: deadline) { return data.range(of: needle) != nil }
        }
        return true
    }

    /// Everything the writer wrote, once every writer closed its end; after `seconds`
    /// (a deadline against hanging), what came so far and a line saying the output stayed
    /// open, so that a leftover process holding it fails the test instead of hanging it.
    public func all(within seconds: Double = 60) -> Data {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while !ended {
            if !condition.wait(until: deadline) {
                return data + Data("\n[test: still open \(Int(seconds)) s on: a leftover process holds this output]\n".utf8)
            }
        }
        return data
    }

    /// What the writer wrote so far, as text (after `wait(for:)`, to read what it announced).
    public func textSoFar() -> String {
        condition.lock()
        defer { condition.unlock() }
        return String(decoding: data, as: UTF8.self)
    }

    /// `all()` as text.
    public func text(within seconds: Double = 60) -> String { String(decoding: all(within: seconds), as: UTF8.self) }
}
