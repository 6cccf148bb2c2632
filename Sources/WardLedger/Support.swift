import WardCore
import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// SHA-256 helpers: raw 32-byte keys for the blob table, lowercase hex everywhere a person
/// or a JSON document sees a hash.
enum Digest {
    static func sha256(_ bytes: some Sequence<UInt8>) -> [UInt8] { Array(SHA256.hash(data: Array(bytes))) }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func sha256Hex(_ bytes: some Sequence<UInt8>) -> String { hex(sha256(bytes)) }

    static func bytes(fromHex hex: String) -> [UInt8]? {
        let chars = Array(hex.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x61...0x66: c - 0x61 + 10
            case 0x41...0x46: c - 0x41 + 10
            default: nil
            }
        }
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    /// The all-zero hash that the first event of every run chains from.
    static let genesis = String(repeating: "0", count: 64)
}

/// The SHA-256 of executable files, cached by (device, inode, size, mtime): recorded with
/// every call so an audit shows which binary ran, at no cost per call once cached.
public final class FileDigests: Sendable {
    private struct Key: Hashable { let dev: UInt64, ino: UInt64, size: Int64, mtime: Int64, mtimeNsec: Int64 }
    private let cache = Lock<[String: (Key, String)]>([:])

    public init() {}

    /// The hex SHA-256 of the file, or "unreadable".
    public func digest(of path: String) -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { return "unreadable" }
        let key = Key(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino), size: Int64(st.st_size),
                      mtime: Int64(st.st_mtim.tv_sec), mtimeNsec: Int64(st.st_mtim.tv_nsec))
        if let (cachedKey, hex) = cache.withLock({ $0[path] }), cachedKey == key { return hex }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "unreadable" }
        defer { close(fd) }
        var hasher = SHA256()
        guard OS.forEachChunk(fd, { hasher.update(data: $0) }) else { return "unreadable" }
        let hex = Digest.hex(hasher.finalize())
        cache.withLock { $0[path] = (key, hex) }
        return hex
    }
}

/// Which process holds a `running` call: pid, its start time (so a reused pid is not
/// mistaken for it) and the boot (so a reboot makes every old owner dead).
public struct ProcessIdentity: Sendable, Hashable {
    public let pid: Int32
    public let startTime: UInt64
    public let bootID: String

    public static let current: ProcessIdentity = ProcessIdentity(pid: getpid(), startTime: startTime(of: getpid()) ?? 0, bootID: bootID)

    public var text: String { "\(pid):\(startTime)@\(bootID)" }

    public init(pid: Int32, startTime: UInt64, bootID: String) {
        self.pid = pid
        self.startTime = startTime
        self.bootID = bootID
    }

    public init?(text: String) {
        let at = text.split(separator: "@", maxSplits: 1)
        guard at.count == 2 else { return nil }
        let parts = at[0].split(separator: ":")
        guard parts.count == 2, let pid = Int32(parts[0]), let start = UInt64(parts[1]) else { return nil }
        self.init(pid: pid, startTime: start, bootID: String(at[1]))
    }

    /// Whether that process still runs (on this boot, with that start time).
    public var isAlive: Bool {
        guard bootID == ProcessIdentity.bootID else { return false }
        guard let start = ProcessIdentity.startTime(of: pid) else { return false }
        return start == startTime
    }

    /// This process, for people: "pid 123 (ward serve)".
    public var description: String { "pid \(pid) (\(ProcessIdentity.commandName))" }

    /// The program and its subcommand ("ward serve"), or the program alone.
    static let commandName: String = {
        let args = CommandLine.arguments
        let program = args.first.map { String($0.split(separator: "/").last ?? "") } ?? "?"
        return args.count > 1 && !args[1].hasPrefix("-") ? program + " " + args[1] : program
    }()

    /// Why this process is not alive, in words for an operator; nil while it is.
    public var fate: String? {
        guard bootID == ProcessIdentity.bootID else { return "the machine has restarted since (that process ran in boot \(bootID))" }
        guard let start = ProcessIdentity.startTime(of: pid) else { return "process \(pid) has exited or was killed" }
        guard start == startTime else { return "process \(pid) has exited or was killed (its pid now belongs to another process)" }
        return nil
    }

    static let bootID: String = {
        let fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "unknown" }
        defer { close(fd) }
        guard let bytes = OS.readAll(fd, limit: 64), !bytes.isEmpty else { return "unknown" }
        return String(decoding: bytes, as: UTF8.self).filter { $0 != "\n" }
    }()

    /// Field 22 of /proc/PID/stat (clock ticks after boot), nil when the process is gone.
    static func startTime(of pid: Int32) -> UInt64? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let bytes = OS.readAll(fd, limit: 4096), !bytes.isEmpty else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3); the start time is field 22.
        guard fields.count > 19, fields[0] != "Z" else { return nil }
        return UInt64(fields[19])
    }
}

/// UTC timestamps with milliseconds, ISO 8601 ("2026-11-21T20:57:06.123Z").
enum Timestamp {
    static func now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return format(ts)
    }

    static func format(_ ts: timespec) -> String {
        var t = ts.tv_sec
        var tm = tm()
        gmtime_r(&t, &tm)
        // "YYYY-MM-DDTHH:MM:SS.mmmZ", digit by digit: three of these per tool call.
        return String(unsafeUninitializedCapacity: 24) { out in
            var i = 0
            func put(_ value: Int32, _ width: Int) {
                var v = Int(value)
                for k in stride(from: width - 1, through: 0, by: -1) {
                    out[i + k] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
                i += width
            }
            func put(_ c: Unicode.Scalar) {
                out[i] = UInt8(ascii: c)
                i += 1
            }
            put(tm.tm_year + 1900, 4); put("-"); put(tm.tm_mon + 1, 2); put("-"); put(tm.tm_mday, 2); put("T")
            put(tm.tm_hour, 2); put(":"); put(tm.tm_min, 2); put(":"); put(tm.tm_sec, 2); put(".")
            put(Int32(ts.tv_nsec / 1_000_000), 3); put("Z")
            return i
        }
    }
}

extension Ledger {
    /// Lowercase hex SHA-256, for hashes the supervisor records (policy hashes).
    public static func sha256Hex(_ bytes: [UInt8]) -> String { Digest.sha256Hex(bytes) }
    /// Raw SHA-256 (a report's script hash for its Content-Security-Policy).
    public static func sha256(_ bytes: [UInt8]) -> [UInt8] { Digest.sha256(bytes) }
}
