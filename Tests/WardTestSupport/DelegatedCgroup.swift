import Foundation
import Synchronization
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

/// A cgroup subtree handed to an unprivileged uid, as systemd delegates one to a user's
/// service: a directory of this process's own in each v1 hierarchy ward uses here (pids,
/// memory), owned by `uid`. A command run through `command` joins it before it drops to
/// the uid, so the unprivileged ward it starts finds a writable cgroup of its own.
/// Removed at exit (once ward, which removes its pools, is gone).
public final class DelegatedCgroup: Sendable {
    public let directories: [String]
    public let uid: uid_t

    /// nil where this machine has no such hierarchy to delegate from.
    public init?(uid: uid_t) {
        let layout = CgroupLayout.detect()
        let parents = [layout.v1Pids, layout.v1Memory].compactMap { $0 }
        guard !parents.isEmpty else { return nil }
        let suffix = UInt32.random(in: 0...UInt32.max)
        var made: [String] = []
        for parent in parents {
            let dir = parent + "/ward-test-delegated-\(getpid())-\(suffix)"
            guard mkdir(dir, 0o755) == 0 || errno == EEXIST else { return nil }
            made.append(dir)
            // The directory and its control files: nobody creates its own cgroups in it and
            // moves its processes (who may write `tasks` and `cgroup.procs` decides).
            for entry in [""] + ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []) {
                _ = chown(entry.isEmpty ? dir : dir + "/" + entry, uid, uid)
            }
        }
        directories = made
        self.uid = uid
        DelegatedCgroup.all.withLock { all in
            if all.isEmpty { atexit { DelegatedCgroup.removeAll() } }
            all += made
        }
    }

    /// `program arguments` run as `uid` from inside the delegated cgroup.
    public func command(_ program: String, _ arguments: [String]) -> (String, [String]) {
        let join = directories.map { "echo $$ > '\($0)/cgroup.procs'" }.joined(separator: " && ")
        return ("/bin/sh", ["-c", "\(join) && exec /usr/bin/setpriv --reuid=\(uid) --regid=\(uid) --clear-groups --inh-caps=-all -- \"$@\"",
                            "sh", program] + arguments)
    }

    private static let all = Mutex<[String]>([])

    /// Each directory and whatever ward left below it, deepest first.
    private static func removeAll() {
        for dir in all.withLock({ $0 }) {
            let children = FileManager.default.enumerator(atPath: dir)?.compactMap { $0 as? String } ?? []
            for child in children.sorted(by: { $0.count > $1.count }) {
                var st = stat()
                if lstat(dir + "/" + child, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR { rmdir(dir + "/" + child) }
            }
            rmdir(dir)
        }
    }
}

/// The last subordinate uid of `user` in /etc/subuid: the tool identity of an unprivileged
/// ward run as that user (`Scripts/setup --test` gives nobody a range).
public func subordinateUID(of user: String) throws -> UInt32 {
    struct Missing: Error, CustomStringConvertible {
        let description: String
    }
    let lines = try String(contentsOfFile: "/etc/subuid", encoding: .utf8).split(separator: "\n")
    guard let fields = lines.first(where: { $0.hasPrefix(user + ":") })?.split(separator: ":"), fields.count == 3,
          let start = UInt32(fields[1]), let count = UInt32(fields[2]) else {
        throw Missing(description: "\(user) has no subordinate uids in /etc/subuid: run Scripts/setup --test")
    }
    return start + count - 1
}
