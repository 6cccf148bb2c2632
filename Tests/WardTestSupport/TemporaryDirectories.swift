import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A new directory `/tmp/PREFIX-XXXXXX`, removed when the test process exits: a run of the
/// suites makes thousands (one per test, per property case, per policy file).
///
/// Removed with `rm -rf --one-file-system`: a test that mounted a file system inside one
/// and did not unmount it leaves that directory, never empties the mount.
public func makeTemporaryDirectory(_ prefix: String) -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp /tmp/\(prefix)-XXXXXX: \(String(cString: strerror(errno)))") }
    let path = String(cString: made)
    TemporaryDirectories.made.withLock { made in
        if made.isEmpty { atexit { TemporaryDirectories.removeAll() } }
        made.append(path)
    }
    return path
}

private enum TemporaryDirectories {
    static let made = Guarded<[String]>([])

    static func removeAll() {
        let paths = made.withLock { made in defer { made = [] }; return made }
        // In batches: one command line holds a few thousand paths.
        for start in stride(from: 0, to: paths.count, by: 2000) {
            let batch = Array(paths[start..<min(start + 2000, paths.count)])
            let rm = Process()
            rm.executableURL = URL(fileURLWithPath: "/bin/rm")
            rm.arguments = ["-rf", "--one-file-system", "--"] + batch
            rm.standardError = FileHandle.nullDevice
            guard (try? rm.run()) != nil else { return }
            rm.waitUntilExit()
        }
    }
}

/// A value behind a lock (this target has no dependency that offers one).
private final class Guarded<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
