import ArgumentParser
import WardCore
import WardLedger

#if canImport(Glibc)
import Glibc
#endif

extension LedgerCommand {
    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write one run as a self-contained HTML page: its timeline, calls, outputs, effects and whether verify passed.",
            discussion: """
                Without --run, the most recently active run (the one whose last event is the latest). The page needs nothing else: \
                no network, no external file; it states whether `ward ledger verify` passes for the run and its head hash. \
                Each call's arguments, stdout and stderr are cut to \(Ledger.reportOutputLimit) bytes, and say so.
                """
        )
        @OptionGroup var options: LedgerOptions
        @Option(name: .customLong("run"), help: "The run (default: the most recently active one).") var runID: String?
        @Option(help: "Where to write the page (replaced atomically).") var html: String

        func validate() throws {
            try Checks.nonEmpty(runID, "--run")
            try Checks.nonEmpty(html, "--html")
        }

        func run() throws {
            let ledger = try options.open(readOnly: true)
            let report = try ledgerCall { () throws(LedgerError) in try ledger.report(run: runID) }
            try ReportPage.write(ReportPage.html(report), to: html)
            Output.line(2, "ward: wrote the report of run \(report.run) (\(report.calls) calls; verify \(report.verify.problem == nil ? "passed" : "FAILED")) to \(html)")
        }
    }
}

/// The HTML page of a `RunReport`: `ReportTemplate` around the run's data.
enum ReportPage {
    /// The page. The data goes in a `<script type="application/json">` block with every `<`
    /// written `\u003c`, so no text from the ledger (a tool's output holding `</script>`)
    /// can end the block; the script puts it in the DOM as text only. The page's
    /// Content-Security-Policy runs no script but the page's own (by its hash) and loads nothing.
    static func html(_ report: RunReport) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(1 << 20)
        out += Array("""
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src '\(scriptHash)'">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta name="generator" content="ward \(Ward.version)">
            <title>ward report: \(escape(report.run))</title>
            <style>
            \(ReportTemplate.style)
            </style>
            </head><body>
            \(ReportTemplate.body)
            <script type="application/json" id="ward-data">
            """.utf8)
        for byte in report.data.canonicalBytes {
            if byte == UInt8(ascii: "<") { out += Array(#"\u003c"#.utf8) } else { out.append(byte) }
        }
        out += Array("</script>\n<script>".utf8)
        out += Array(ReportTemplate.script.utf8)
        out += Array("</script>\n</body></html>\n".utf8)
        return out
    }

    /// `'sha256-…'` of the page's script: the only one the page's policy lets run.
    static let scriptHash = "sha256-" + Base64.encode(Ledger.sha256(Array(ReportTemplate.script.utf8)))

    /// Text for HTML: the five characters that could start markup or end an attribute.
    static func escape(_ text: String) -> String {
        var out = ""
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// Writes `bytes` to `path` whole or not at all: a temporary file beside it, synced, then
    /// renamed over it, so that a reader (a browser reloading it) never sees half a page.
    static func write(_ bytes: [UInt8], to path: String) throws {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let temporary = "\(directory.isEmpty ? "" : directory)/.\(name).\(getpid())-\(UInt32.random(in: 0 ... .max)).tmp"
        func failure(_ what: String) -> CLIError { CLIError(message: "cannot write \(path): \(what): \(String(cString: strerror(errno)))", exitCode: 1) }
        // 0666 less the umask: the file a redirection would have made.
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw failure("creating \(temporary)") }
        let ok = OS.writeAll(fd, bytes) && fsync(fd) == 0
        let writeError = errno
        close(fd)
        guard ok else {
            unlink(temporary)
            errno = writeError
            throw failure("writing \(temporary)")
        }
        guard rename(temporary, path) == 0 else {
            let renameError = errno
            unlink(temporary)
            errno = renameError
            throw failure("renaming \(temporary) to it")
        }
    }
}
