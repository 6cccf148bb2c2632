import WardCore
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// What a call runs: its argv from the policy's command and the call's arguments, and its
/// environment from the policy's allowlist. Built in the parent for each call.
enum ToolCommand {
    /// A tool that declares its arguments gets no other: a misspelt or smuggled name is
    /// refused instead of reaching the tool's stdin unnoticed.
    static func checkDeclared(_ policy: ToolPolicy, _ arguments: JSONValue) throws(SandboxError) {
        guard let declared = policy.arguments, let members = arguments.objectValue else { return }
        if let extra = members.keys.sorted().first(where: { !declared.contains($0) }) {
            let names = declared.isEmpty ? "none" : declared.map { "\"\($0)\"" }.joined(separator: ", ")
            throw SandboxError(.invalidArguments, "tool \(policy.name) has no argument \"\(extra)\" (its arguments: \(names))")
        }
    }

    static func argv(_ command: [String], arguments: JSONValue, workspace: String) throws(SandboxError) -> [String] {
        guard let members = arguments.objectValue else {
            throw SandboxError(.invalidArguments, "arguments must be a JSON object, not \(arguments.typeName)")
        }
        var values: [String: String] = [Template.workspace: workspace]
        for (key, value) in members where key != Template.workspace {
            switch value {
            case .string(let s): values[key] = s
            case .number(let d): values[key] = JSONValue.format(number: d)
            case .bool(let b): values[key] = b ? "true" : "false"
            default: continue  // only scalars can fill a placeholder; checked below if used
            }
        }
        var argv: [String] = []
        for element in command {
            for name in Template.placeholders(in: element) where name != Template.workspace {
                if let v = members[name], values[name] == nil {
                    throw SandboxError(.invalidArguments, "argument \"\(name)\" must be a string, number or boolean, not \(v.typeName)")
                }
                if let s = values[name], s.utf8.contains(0) {
                    throw SandboxError(.invalidArguments, "argument \"\(name)\" contains a NUL byte")
                }
            }
            do { argv.append(try Template.expand(element, values: values)) } catch {
                throw SandboxError(.invalidArguments, error.message)
            }
        }
        return argv
    }

    /// `KEY=value` entries: the policy's allowlist (inherited from ward or set), then `extra`.
    static func environment(_ policy: ToolPolicy, workspace: String, extra: [(String, String)]) -> [String] {
        var env: [String] = []
        for entry in policy.environment {
            switch entry {
            // The agent's credential never reaches a tool, whatever the policy asks: ward
            // may itself run under an agent (of another ward) that holds one.
            case .inherit(let key) where key == AgentCredential.environmentVariable: continue
            case .inherit(let key):
                if let v = getenv(key) { env.append("\(key)=\(String(cString: v))") }
            case .set(let key, let value):
                env.append("\(key)=\((try? Template.expand(value, values: [Template.workspace: workspace])) ?? value)")
            }
        }
        for (key, value) in extra { env.append("\(key)=\(value)") }
        return env
    }
}
