import CWardOS
import WardLedger

#if canImport(Glibc)
import Glibc
#endif

extension RunPlace {
    /// The place of an existing workspace directory; nil when `workspace` does not exist or
    /// is not a directory. Nothing is created: a reconcile must never look for effects in an
    /// empty directory made for it.
    public static func of(workspace: String, policies: String) -> RunPlace? {
        guard let real = realpath(workspace, nil) else { return nil }
        defer { free(real) }
        var dev: UInt64 = 0, ino: UInt64 = 0, bornSeconds: Int64 = 0, bornNanoseconds: UInt32 = 0
        guard ward_directory_identity(real, &dev, &ino, &bornSeconds, &bornNanoseconds) == 0 else { return nil }
        let born = bornSeconds == 0 && bornNanoseconds == 0 ? "" : "\(bornSeconds).\(String(repeating: "0", count: 9 - String(bornNanoseconds).count))\(bornNanoseconds)"
        let policyPath = realpath(policies, nil).map { p in defer { free(p) }; return String(cString: p) } ?? policies
        return RunPlace(workspace: String(cString: real), device: dev, inode: ino, born: born, policies: policyPath)
    }
}
