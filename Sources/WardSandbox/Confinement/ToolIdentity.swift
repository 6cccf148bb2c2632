import CWardOS
import CWardSpawn
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// Who a root ward's tools run as: never uid 0.
///
/// As uid 0 a tool reads the root-only files in its read roots, plants setuid-root binaries
/// in the workspace for any local user to run, and changes the limits of every root process
/// (a `prlimit` on ward itself). So when ward runs as root every tool drops to this
/// identity before it starts (the spawn's identity step), with no supplementary groups. The
/// workspace is handed to it (`prepareWorkspace`): its files belong to the tool identity,
/// which also keeps an operator's `git` out of it (git refuses a repository another user
/// owns, so a hook or `core.fsmonitor` a tool wrote never runs as root).
///
/// An unprivileged ward's tools run as a subordinate uid and gid of its user
/// (`ToolNamespace`) where the system gives it some; else they keep its uid, and a user
/// namespace of their own, Landlock and the seccomp filter separate them from ward.
public struct ToolIdentity: Sendable, Equatable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    /// The user name, when the uid has one.
    public var name: String?

    /// The identity used when neither `--tool-user` nor the policies' `[defaults] user`
    /// names one: the `ward-tool` user where the system has it (`Scripts/setup` makes it),
    /// else uid and gid 65533, a number no distribution assigns.
    public static let defaultUser = "ward-tool"
    static let fallbackID: UInt32 = 65533

    public var description: String { "\(name ?? "uid \(uid)") (uid \(uid), gid \(gid))" }

    /// `NAME`, `UID` or `UID:GID` (a name's gid is its primary group; a bare uid's gid is
    /// the same number). nil: the default. Refuses uid 0 and gid 0.
    public static func resolve(_ spec: String?) throws(SandboxError) -> ToolIdentity {
        let identity: ToolIdentity
        if let spec {
            let parts = spec.split(separator: ":", omittingEmptySubsequences: false)
            if let uid = UInt32(parts[0]), parts.count <= 2 {
                guard let gid = parts.count == 2 ? UInt32(parts[1]) : uid else {
                    throw SandboxError(.policyDenied, "tool user \(spec): the gid after the colon is not a number")
                }
                identity = ToolIdentity(uid: uid, gid: gid, name: user(uid))
            } else if parts.count == 1, let entry = passwd(named: spec) {
                identity = entry
            } else {
                throw SandboxError(.policyDenied, "tool user \(spec): no such user (give a name, UID or UID:GID)")
            }
        } else {
            identity = passwd(named: defaultUser) ?? ToolIdentity(uid: fallbackID, gid: fallbackID, name: user(fallbackID))
        }
        guard identity.uid != 0, identity.gid != 0, identity.uid != UInt32.max, identity.gid != UInt32.max else {
            throw SandboxError(.policyDenied, "tool user \(spec ?? defaultUser) is \(identity): tools never run as root or with root's group")
        }
        return identity
    }

    private static func passwd(named name: String) -> ToolIdentity? {
        guard let entry = getpwnam(name) else { return nil }
        return ToolIdentity(uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid, name: name)
    }

    private static func user(_ uid: UInt32) -> String? {
        getpwuid(uid).map { String(cString: $0.pointee.pw_name) }
    }
}

extension ToolIdentity {
    /// Who an unprivileged ward's tools run as on this system: its user's subordinate
    /// identity (a namespace is made and dropped to be sure the helpers map it), or why they
    /// keep ward's uid. For `ward doctor` and `ward policy explain`.
    public static func subordinate() -> Result<ToolIdentity, SandboxError> {
        switch ToolNamespace.make() {
        case .success(let namespace): return .success(namespace.identity)
        case .failure(let why): return .failure(SandboxError(.internalError, why.description))
        }
    }

    /// Makes the workspace this identity's: every entry in it is given to the identity
    /// (tools create, change and remove files there) and each directory above it that the
    /// identity cannot search gets an ACL entry letting it search (only search: Landlock
    /// still decides what a tool may reach). A root operator keeps every access. An
    /// unprivileged one (`namespace`: the tools' user namespace, in which ward gives what it
    /// owns) keeps read, write and search through an ACL entry of its own on each entry
    /// given, and a default one on each directory for what tools create later.
    func prepareWorkspace(_ workspace: String, namespace: ToolNamespace? = nil) throws(SandboxError) {
        var failed = [CChar](repeating: 0, count: Int(PATH_MAX))
        let userns = namespace?.fd ?? -1
        if ward_chown_tree(workspace, uid, gid, userns, &failed) != 0 {
            let e = errno
            throw SandboxError(.internalError, "cannot give the workspace to the tool user \(self): chown of \(String(decoding: failed.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) failed: \(errnoName(e))", errno: e)
        }
        var path = ""
        for component in workspace.split(separator: "/") {
            path += "/" + component
            guard ward_searchable_as(path, uid, gid, userns) != 1 else { continue }
            // setfacl (the acl package) merges the entry with any ACL the directory has.
            let rc = ToolIdentity.runQuietly("/usr/bin/setfacl", ["-m", "u:\(uid):x", path])
            guard rc == 0, ward_searchable_as(path, uid, gid, userns) == 1 else {
                throw SandboxError(.internalError, """
                    the tool user \(self) cannot reach the workspace: \(path) is not searchable by it, and \
                    \(rc == 127 ? "setfacl is not installed (the acl package)" : "setfacl -m u:\(uid):x \(path) failed"); \
                    make \(path) searchable by uid \(uid), or choose another \(namespace == nil ? "--tool-user or " : "")workspace
                    """)
            }
        }
    }

    /// Runs a program with no input or output; its exit status (127 when it cannot start).
    private static func runQuietly(_ path: String, _ arguments: [String]) -> Int32 {
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd in [Int32(0), 1, 2] { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        let argv = CStringArray([path] + arguments)
        let env = CStringArray(["PATH=/usr/bin:/bin", "LC_ALL=C"])
        guard posix_spawn(&pid, path, &actions, nil, argv.pointers, env.pointers) == 0 else { return 127 }
        var exited: Int32 = 0, code: Int32 = 0, signal: Int32 = 0
        guard ward_wait(pid, &exited, &code, &signal) == 0, exited != 0 else { return 127 }
        return code
    }
}

/// The user namespace an unprivileged ward's tools run in, made once per sandbox where the
/// system gives ward's user subordinate ids (`/etc/subuid` and `/etc/subgid`, mapped by the
/// setuid helpers `newuidmap` and `newgidmap` of the uidmap package).
///
/// Why: without it an unprivileged ward's tools write the workspace as the operator's own
/// uid, so a `core.fsmonitor`, `core.pager`, `core.sshCommand` or `core.hooksPath` a tool
/// puts into `.git/config` (or a hook) runs at the operator's next `git status`, outside any
/// sandbox. As a subordinate uid they own what they write, and the operator's git refuses
/// the repository ("dubious ownership") as it does a root ward's tool user's.
///
/// The namespace maps ward's uid and gid to 0 (so ward can give the workspace to the tool
/// identity, as uid 0 there) and the tool identity, the last id of the user's first range,
/// to itself. Each call still makes a user namespace of its own below it
/// (`ward_step_user_namespace`), so a tool holds no capability in this one.
final class ToolNamespace: Sendable {
    /// The namespace (owned: closed with this).
    let fd: Int32
    /// The tool identity, in the ids outside (which the namespace maps to themselves).
    let identity: ToolIdentity

    static let newuidmap = "/usr/bin/newuidmap"
    static let newgidmap = "/usr/bin/newgidmap"

    private init(fd: Int32, identity: ToolIdentity) {
        self.fd = fd
        self.identity = identity
    }

    deinit { close(fd) }

    /// What the system offers: the namespace, or why there is none (no subordinate ids, no
    /// helpers, or a helper refused) for ward to say.
    static func make() -> Result<ToolNamespace, Unavailable> {
        let uid = getuid()
        let name = getpwuid(uid).map { String(cString: $0.pointee.pw_name) }
        guard let subuid = lastSubordinateID(file: "/etc/subuid", user: name, uid: uid) else {
            return .failure(Unavailable("uid \(uid) has no subordinate uids in /etc/subuid"))
        }
        guard let subgid = lastSubordinateID(file: "/etc/subgid", user: name, uid: uid) else {
            return .failure(Unavailable("uid \(uid) has no subordinate gids in /etc/subgid"))
        }
        for helper in [newuidmap, newgidmap] where access(helper, X_OK) != 0 {
            return .failure(Unavailable("\(helper) is missing (the uidmap package)"))
        }
        var message = [CChar](repeating: 0, count: 512)
        let fd = ward_user_namespace_create(newuidmap, newgidmap, subuid, subgid, &message, message.count)
        guard fd >= 0 else {
            let said = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .failure(Unavailable("mapping subordinate ids \(subuid):\(subgid) failed: \(said)"))
        }
        return .success(ToolNamespace(fd: fd, identity: ToolIdentity(uid: subuid, gid: subgid, name: getpwuid(subuid).map { String(cString: $0.pointee.pw_name) })))
    }

    struct Unavailable: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// The last id of the first range of `file` (`OWNER:START:COUNT` lines) whose owner is
    /// the user's name or uid (both files name users, as shadow's helpers read them). The
    /// last, not the first: rootless containers map their uid 1 to the first.
    static func lastSubordinateID(file: String, user: String?, uid: UInt32) -> UInt32? {
        guard let text = readSmallFile(file) else { return nil }
        let owners = Set([user, String(uid)].compactMap { $0 })
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count == 3, owners.contains(String(fields[0])),
                  let start = UInt32(fields[1]), let count = UInt32(fields[2]), count > 0,
                  start > 0, UInt64(start) + UInt64(count) - 1 < UInt64(UInt32.max) else { continue }
            return start + count - 1
        }
        return nil
    }
}
