
#if canImport(Glibc)
import Glibc
#endif

/// Named moments of the write-ahead protocol where a test can make ward die, stall or fail,
/// to show what each crash window leaves behind. Off unless `WARD_FAILPOINTS` is set when
/// the process starts; then one branch on a constant per point. Building with
/// `-Xswiftc -DWARD_NO_FAILPOINTS` compiles them out (Scripts/bench measures the difference).
///
/// `WARD_FAILPOINTS="after-begin=kill@3,before-reply=stall:200,in-checkpoint=fail"`: at
/// the 3rd `after-begin` the process SIGKILLs itself; every `before-reply` sleeps 200 ms;
/// every checkpoint write fails.
public enum FailPoint: String, Sendable, CaseIterable {
    /// The `running` record is committed; no child exists yet.
    case afterBegin = "after-begin"
    /// The tool's process exists; its outcome is not recorded.
    case afterSpawn = "after-spawn"
    /// Inside a checkpoint's transaction, before it commits.
    case inCheckpoint = "in-checkpoint"
    /// The tool has finished; its outcome is not recorded yet.
    case beforeFinish = "before-finish"
    /// The outcome is committed; the result has not been returned.
    case afterFinish = "after-finish"
    /// The response is ready; it has not been written to the socket.
    case beforeReply = "before-reply"
}

public enum FailPoints {
    enum Action: Equatable {
        case kill, fail
        case stall(milliseconds: Int)
    }

    struct Rule {
        let action: Action
        /// Fire only on this hit (1-based); nil: every hit.
        let onHit: Int?
    }

    static let rules: [FailPoint: Rule] = {
        guard let raw = getenv("WARD_FAILPOINTS"), raw.pointee != 0 else { return [:] }
        var rules: [FailPoint: Rule] = [:]
        for item in String(cString: raw).split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1).map { String($0.filter { $0 != " " }) }
            guard kv.count == 2, let point = FailPoint(rawValue: kv[0]) else { continue }
            let spec = kv[1].split(separator: "@", maxSplits: 1)
            let onHit = spec.count == 2 ? Int(spec[1]) : nil
            let action: Action?
            switch spec[0] {
            case "kill": action = .kill
            case "fail": action = .fail
            case let s where s.hasPrefix("stall:"): action = Int(s.dropFirst(6)).map { .stall(milliseconds: $0) }
            default: action = nil
            }
            if let action { rules[point] = Rule(action: action, onHit: onHit) }
        }
        return rules
    }()

    /// Whether any fail point is armed in this process.
    public static let enabled = !rules.isEmpty
    private static let hits = Lock<[FailPoint: Int]>([:])

    /// Passes `point`: may SIGKILL the process or stall here; returns true when the
    /// operation must fail.
    @inline(__always)
    public static func hit(_ point: FailPoint) -> Bool {
        #if WARD_NO_FAILPOINTS
        return false
        #else
        guard enabled else { return false }
        return fire(point)
        #endif
    }

    private static func fire(_ point: FailPoint) -> Bool {
        guard let rule = rules[point] else { return false }
        let n = hits.withLock { h -> Int in
            h[point, default: 0] += 1
            return h[point]!
        }
        if let onHit = rule.onHit, onHit != n { return false }
        switch rule.action {
        case .kill:
            kill(getpid(), SIGKILL)
            return false
        case .stall(let ms):
            usleep(useconds_t(ms) * 1000)
            return false
        case .fail:
            return true
        }
    }
}
