import Foundation
import Synchronization
import Testing
@testable import WardLedger
import WardTestSupport

/// The suite's server, started on first use (about a second) and shared by its tests; the
/// tests that stop a server make their own.
private let sharedServer = Result { try PostgresServer() }

private func server() throws -> PostgresServer { try sharedServer.get() }

private func link(_ url: String? = nil) throws -> PostgresLink {
    try PostgresLink(PostgresAddress(url: url ?? server().url), timeout: 5)
}

/// A table name of the test's own in the shared database.
private func table(_ stem: String) -> String { "\(stem)_\(UInt32.random(in: 0...UInt32.max))" }

private func same(_ a: SQLValue, _ b: SQLValue) -> Bool {
    switch (a, b) {
    case (.null, .null): true
    case (.int(let x), .int(let y)): x == y
    case (.real(let x), .real(let y)): x == y || (x.isNaN && y.isNaN)
    case (.text(let x), .text(let y)): x == y
    case (.blob(let x), .blob(let y)): x == y
    default: false
    }
}

private func same(_ a: [SQLValue], _ b: [SQLValue]) -> Bool { a.count == b.count && zip(a, b).allSatisfy { same($0, $1) } }

private func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

@Suite("PostgreSQL: the ledger's connection layer", .serialized)
struct PostgresLinkTests {
    @Test func everyKindOfValueRoundTrips() throws {
        let db = try link()
        defer { db.close() }
        let t = table("kinds")
        _ = try db.query("CREATE TABLE \(t) (k int PRIMARY KEY, i bigint, r double precision, s text, b bytea)")
        let rows: [[SQLValue]] = [
            [.int(1), .int(Int.max), .real(3.25), .text("héllo ✓ 日本語 🎉 \"quoted\" 'single'"), .blob([0, 1, 127, 128, 255])],
            [.int(2), .int(Int.min), .real(-1e-300), .text(""), .blob([])],
            [.int(3), .null, .null, .null, .null],
            [.int(4), .int(0), .real(.infinity), .text(String(repeating: "x", count: 100_000)), .blob(Array(repeating: 7, count: 70_000))],
        ]
        for row in rows {
            let inserted = try db.query("INSERT INTO \(t) (k, i, r, s, b) VALUES (?, ?, ?, ?, ?)", row)
            #expect(inserted.affected == 1)
        }
        let back = try db.query("SELECT k, i, r, s, b FROM \(t) ORDER BY k")
        #expect(back.columns == ["k", "i", "r", "s", "b"])
        try #require(back.rows.count == rows.count)
        for (got, want) in zip(back.rows, rows) {
            #expect(same(got, want), "\(got) != \(want)")
        }
        // Bound values come back as bound, with no table in between.
        let echoed = try db.query("SELECT ?, ?, ?, ?", [.int(-42), .real(0.1), .text("ü"), .blob([9])])
        #expect(same(echoed.rows[0], [.int(-42), .real(0.1), .text("ü"), .blob([9])]))
        // An empty blob is an empty bytea, never NULL; a NULL is NULL.
        let nulls = try db.query("SELECT b IS NULL, length(b) FROM \(t) WHERE k IN (2, 3) ORDER BY k")
        #expect(same(nulls.rows[0], [.int(0), .int(0)]) && same(nulls.rows[1], [.int(1), .null]), "\(nulls.rows)")
    }

    @Test func questionMarksInLiteralsIdentifiersCommentsAndBodiesAreNotPlaceholders() throws {
        let db = try link()
        defer { db.close() }
        let t = table("marks")
        _ = try db.query("CREATE TABLE \(t) (\"who?\" text, what text, n bigint)")
        let inserted = try db.query("""
            INSERT INTO \(t) ("who?", what, n) -- is this a ? no
            VALUES (?, 'really?' || E'\\'?' || $$?$$, /* ? */ ?) RETURNING "who?", what, n
            """, [.text("me?"), .int(7)])
        #expect(inserted.columns == ["who?", "what", "n"])
        #expect(same(inserted.rows[0], [.text("me?"), .text("really?'??"), .int(7)]), "\(inserted.rows)")
        #expect(PostgresSQL.placeholders("SELECT '?', \"?\", ? -- ?\n, $tag$ ? $tag$, ?").0 == "SELECT '?', \"?\", $1 -- ?\n, $tag$ ? $tag$, $2")
        #expect(PostgresSQL.placeholders("SELECT 'it''s ?', ?").0 == "SELECT 'it''s ?', $1")
        // SQL without ? goes as written, $n and all.
        #expect(same(try db.query("SELECT $1::bigint + 1", [.int(1)]).rows[0], [.int(2)]))
        // A count that does not match is an error before anything is sent.
        #expect(throws: PostgresFailure.self) { try db.query("SELECT ?, ?", [.int(1)]) }
        #expect(!db.isBroken)
    }

    @Test func valuesDecodeByColumnType() throws {
        let db = try link()
        defer { db.close() }
        let t = table("sums")
        _ = try db.query("CREATE TABLE \(t) (v bigint)")
        for v in [Int.max, Int.max, 5, -3] { _ = try db.query("INSERT INTO \(t) VALUES (?)", [.int(v)]) }
        let r = try db.query("""
            SELECT sum(v) FILTER (WHERE v < 10), sum(v), count(*), avg(v) FILTER (WHERE v < 10),
                   true, false, 2::smallint, 3::int, 1.5::real, 100.00::numeric, -123456789012345::numeric,
                   12.5::numeric, 0.0001::numeric, 4000000000::oid
            FROM \(t)
            """)
        let want: [SQLValue] = [.int(2), .real(2.0 * Double(Int.max) + 2), .int(4), .int(1), .int(1), .int(0), .int(2), .int(3),
                                .real(1.5), .int(100), .int(-123456789012345), .real(12.5), .real(0.0001), .int(4_000_000_000)]
        #expect(same(r.rows[0], want), "\(r.rows[0])")
        // Text-like types come back as the server prints them.
        let texts = try db.query("""
            SELECT v, v::text FROM (VALUES
              ('2024-02-29 12:34:56.789+00'::timestamptz), ('1999-12-31 23:59:59.000001+00'), ('2000-01-01 00:00:00+00'),
              ('0044-03-15 12:00:00+00 BC'), ('infinity'), ('-infinity'), ('1969-07-20 20:17:40+00')) x(v)
            """)
        #expect(texts.rows.count == 7)
        for row in texts.rows { #expect(same(row[0], row[1]), "\(row)") }
        let kinds = try db.query("""
            SELECT '2024-02-29'::date, '0001-01-01 BC'::date, '13:14:15.5'::time, '2024-02-29 01:02:03'::timestamp,
                   '{"a": [1, 2]}'::jsonb, '{"a": [1, 2]}'::json, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid,
                   'x'::varchar(5), 'ab'::char(4), 'pg'::name
            """)
        #expect(same(kinds.rows[0], [.text("2024-02-29"), .text("0001-01-01 BC"), .text("13:14:15.5"), .text("2024-02-29 01:02:03"),
                                     .text("{\"a\": [1, 2]}"), .text("{\"a\": [1, 2]}"), .text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                                     .text("x"), .text("ab  "), .text("pg")]), "\(kinds.rows[0])")
        // void (pg_advisory_lock) is NULL; a type the ledger does not decode is an error naming the column.
        #expect(same(try db.query("SELECT pg_advisory_lock(?)", [.int(99)]).rows[0], [.null]))
        #expect(same(try db.query("SELECT pg_advisory_unlock(?)", [.int(99)]).rows[0], [.int(1)]))
        do {
            _ = try db.query("SELECT point(1, 2) AS where_it_is")
            Issue.record("a point decoded")
        } catch let error as PostgresFailure {
            #expect(error.message.contains("where_it_is") && !error.connectionLost, "\(error)")
        }
        #expect(!db.isBroken)
    }

    @Test func affectedCountsTheRowsAStatementChanged() throws {
        let db = try link()
        defer { db.close() }
        let t = table("affected")
        _ = try db.query("CREATE TABLE \(t) (id bigint PRIMARY KEY, v text)")
        #expect(try db.query("INSERT INTO \(t) SELECT g, 'a' FROM generate_series(1, 5) g").affected == 5)
        #expect(try db.query("UPDATE \(t) SET v = ? WHERE id <= ?", [.text("b"), .int(3)]).affected == 3)
        #expect(try db.query("UPDATE \(t) SET v = 'c' WHERE id > 100").affected == 0)
        #expect(try db.query("DELETE FROM \(t) WHERE v = ?", [.text("a")]).affected == 2)
        #expect(try db.query("SELECT * FROM \(t)").affected == 0)
        let returning = try db.query("UPDATE \(t) SET v = 'd' WHERE id = 1 RETURNING id")
        #expect(returning.affected == 1 && same(returning.rows[0], [.int(1)]))
    }

    @Test func aUniqueViolationCarriesItsSQLStateAndLeavesTheLinkUsable() throws {
        let db = try link()
        defer { db.close() }
        let t = table("unique")
        _ = try db.query("CREATE TABLE \(t) (id bigint PRIMARY KEY)")
        _ = try db.query("INSERT INTO \(t) VALUES (?)", [.int(1)])
        do {
            _ = try db.query("INSERT INTO \(t) VALUES (?)", [.int(1)])
            Issue.record("a duplicate key was inserted")
        } catch let error as PostgresFailure {
            #expect(error.sqlState == "23505" && !error.connectionLost, "\(error)")
            #expect(error.message.contains("\(t)_pkey") && error.message.contains("(id)=(1)"), "\(error)")
        }
        #expect(!db.isBroken)
        // Inside a transaction the error aborts it; ROLLBACK makes the link usable again.
        _ = try db.query("BEGIN")
        #expect(throws: PostgresFailure.self) { try db.query("INSERT INTO \(t) VALUES (?)", [.int(1)]) }
        do {
            _ = try db.query("SELECT 1")
            Issue.record("a statement ran in an aborted transaction")
        } catch let error as PostgresFailure {
            #expect(error.sqlState == "25P02", "\(error)")
        }
        _ = try db.query("ROLLBACK")
        #expect(same(try db.query("SELECT count(*) FROM \(t)").rows[0], [.int(1)]))
    }

    @Test func scriptsRunStatementByStatementWithFunctionBodiesWhole() throws {
        let db = try link()
        defer { db.close() }
        let t = table("script")
        try db.execute(script: """
            -- a migration
            CREATE TABLE \(t) (id bigint PRIMARY KEY, note text);
            INSERT INTO \(t) VALUES (1, 'semi;colon'), (2, $q$also; here$q$);
            CREATE FUNCTION \(t)_next() RETURNS bigint LANGUAGE plpgsql AS $$
            DECLARE n bigint;
            BEGIN
              SELECT max(id) + 1 INTO n FROM \(t);  -- a ; inside the body
              RETURN n;
            END;
            $$;
            /* trailing comment; with a semicolon */
            """)
        #expect(same(try db.query("SELECT \(t)_next()").rows[0], [.int(3)]))
        #expect(try db.query("SELECT note FROM \(t) ORDER BY id").rows.map { $0[0] }.elementsEqual([.text("semi;colon"), .text("also; here")], by: same))
        #expect(PostgresSQL.statements("SELECT 1; -- only a comment\n ; SELECT ';'").count == 2)
        #expect(throws: PostgresFailure.self) { try db.execute(script: "SELECT 1; SELECT * FROM no_such_table; SELECT 2") }
    }

    @Test func urlsParseAndInvalidOnesSayWhatIsWrong() throws {
        let a = try PostgresAddress(url: "postgres://w%40rd:p%3Ass@db.example:6543/led%20ger?application_name=ward&connect_timeout=3", environment: [:])
        #expect(a.user == "w@rd" && a.password == "p:ss" && a.database == "led ger" && a.endpoint == .tcp(host: "db.example", port: 6543))
        #expect(a.connectTimeout == 3 && a.applicationName == "ward")
        // No password, not even masked: a command ward prints for pasting works as printed.
        #expect(a.redacted == "postgres://w%40rd@db.example:6543/led%20ger?connect_timeout=3.0&application_name=ward", "\(a.redacted)")
        let b = try PostgresAddress(url: "postgresql://ward@/ward?host=/tmp/x&port=7000", environment: ["PGPASSWORD": "secret"])
        #expect(b.endpoint == .unix(path: "/tmp/x/.s.PGSQL.7000") && b.password == "secret" && !"\(b)".contains("secret"))
        let c = try PostgresAddress(url: "postgres://ward@[::1]/ward", environment: [:])
        #expect(c.endpoint == .tcp(host: "::1", port: 5432))
        #expect(PostgresAddress.isURL("postgres://x") && PostgresAddress.isURL("postgresql://x") && !PostgresAddress.isURL("/var/ward.sqlite"))
        let invalid: [(String, String)] = [
            ("mysql://ward@host/db", "postgres://"),
            ("postgres://ward@host:99999/db", "port"),
            ("postgres://ward@host:x/db", "port"),
            ("postgres://ward@host/db?sslmode=verify-full", "verify-full"),
            ("postgres://ward@host/db?sslmode=maybe", "sslmode"),
            ("postgres://ward@host/db?colour=blue", "colour"),
            ("postgres://ward:%zz@host/db", "password"),
            ("postgres://ward@a,b/db", "several hosts"),
            ("postgres://ward@host/db?connect_timeout=soon", "connect_timeout"),
            // A password with an unencoded /, ? or @ (or & in a password parameter): refused,
            // no piece of it repeated.
            ("postgres://ward:pa/ss12@host/db", "percent-encode"),
            ("postgres://ward:pa?ss12@host/db", "percent-encode"),
            ("postgres://ward:p/a?ss12@host:5432/db?application_name=a@b", "percent-encode"),
            ("postgres://u:p@ss12/b@db.example/ward", "percent-encode"),
            ("postgres://u:p@ss12:x/b@db.example/ward", "percent-encode"),
            ("postgres://ward@host/db?password=se&ss12", "percent-encode"),
        ]
        for (url, named) in invalid {
            do {
                _ = try PostgresAddress(url: url, environment: [:])
                Issue.record("\(url) parsed")
            } catch {
                #expect("\(error)".contains(named), "\(url): \(error)")
                #expect(!"\(error)".contains("ss12"), "\(url): \(error)")
            }
        }
        // An @ in a query value is no password's; a URL with a password still says what else is wrong.
        #expect(try PostgresAddress(url: "postgres://ward@host:5432/db?application_name=a@b", environment: [:]).applicationName == "a@b")
        #expect(try PostgresAddress(url: "postgres://db:5432/ward?password=p@ss", environment: [:]).password == "p@ss")
        #expect(try PostgresAddress(url: "postgres://[::1]/w?application_name=ward@host1", environment: [:]).applicationName == "ward@host1")
        #expect(try PostgresAddress(url: "postgres://u:p%2Fss@host/db", environment: [:]).password == "p/ss")
    }

    /// `ward ledger effects --path GLOB` on PostgreSQL matches what SQLite's GLOB does,
    /// including classes PostgreSQL's regular expressions would read otherwise or refuse
    /// (a backwards range, `[:`, a backslash).
    @Test func globsMatchOnPostgreSQLAsSQLitesGLOBDoes() throws {
        let db = try link()
        defer { db.close() }
        let file = NSTemporaryDirectory() + "glob-\(UInt32.random(in: 0...UInt32.max)).sqlite"
        defer { for suffix in ["", "-wal", "-shm"] { unlink(file + suffix) } }
        let sqlite = try Ledger(path: file)
        let globs = ["*.txt", "a?c", "[abc]x", "[^abc]x", "[a-c]x", "[z-a]x", "[^z-a]x", "[]a]x", "[a-]x", "[-a]x", "[[:x]",
                     "[[:alpha:]]x", "[\\]x", "[", "a[", "(a|b)", "a.c", "$x^", "[é-ë]", "[a-cz-x]q", "*/secret/*", "a\\b", "[^]]x", "*"]
        let paths = ["a.txt", "abc", "ax", "dx", "]x", "-x", "zx", "[x", ":x", "\\x", "[", "a[", "(a|b)", "a.c", "$x^", "é", "ê",
                     "bq", "yq", "/home/u/secret/k", "a\\b", "x", ""]
        for glob in globs {
            for path in paths {
                let expected = try sqlite.read("glob") { c in try c.first("SELECT ? GLOB ?", [.text(path), .text(glob)]) { $0.int(0) } }
                let regex = Ledger.globRegex(glob)
                do {
                    let got = try db.query("SELECT ?::text ~ ?::text", [.text(path), .text(regex)]).rows.first?.first
                    #expect(same(got ?? .null, .int(expected == 1 ? 1 : 0)),
                            "\(path) GLOB \(glob): SQLite \(expected ?? -1), PostgreSQL \(String(describing: got)) (\(regex))")
                } catch {
                    Issue.record("\(glob) as \(regex): \(error)")
                }
            }
        }
    }

    @Test func anAddressWithNothingThereFailsClearlyAsALostConnection() throws {
        let nowhere = makeTemporaryDirectory("ward-pg-none")
        do {
            _ = try PostgresLink(PostgresAddress(url: "postgres://ward:hunter2@/ward?host=\(nowhere)"), timeout: 2)
            Issue.record("connected to nothing")
        } catch let error as PostgresFailure {
            #expect(error.connectionLost && error.message.contains(nowhere) && error.message.contains("No such file"), "\(error)")
            #expect(!"\(error)".contains("hunter2"))
        }
        do {
            // A port nothing listens on (the shared server's socket has no TCP side).
            _ = try PostgresLink(PostgresAddress(url: "postgres://ward@127.0.0.1:1/ward"), timeout: 2)
            Issue.record("connected to port 1")
        } catch let error as PostgresFailure {
            #expect(error.connectionLost && error.message.contains("127.0.0.1:1") && error.message.contains("refused"), "\(error)")
        }
        // A login the server rejects is not a lost connection, and names the address.
        do {
            _ = try link(try server().url(database: "no_such_database"))
            Issue.record("connected to a missing database")
        } catch let error as PostgresFailure {
            #expect(error.sqlState == "3D000" && !error.connectionLost && error.message.contains("no_such_database"), "\(error)")
        }
    }

    @Test func aStoppedServerGivesLostConnectionsThenThePoolReconnectsAfterItsRestart() throws {
        let own = try PostgresServer()
        print("PostgresServer start-up, a later one (copy, start, CREATE DATABASE): \(own.startupSeconds) s")
        let address = try PostgresAddress(url: own.url)
        let db = try PostgresLink(address, timeout: 5)
        defer { db.close() }
        let pool = PostgresPool(address, size: 2)
        defer { pool.close() }
        #expect(same(try pool.with { try $0.query("SELECT 1").rows[0] }, [.int(1)]))

        try own.stop(mode: .fast)
        do {
            _ = try db.query("SELECT 1")
            Issue.record("a query ran on a stopped server")
        } catch let error as PostgresFailure {
            #expect(error.connectionLost, "\(error)")
        }
        #expect(db.isBroken)
        let start = ContinuousClock.now
        do {
            _ = try pool.with { try $0.query("SELECT 1") }
            Issue.record("the pool reached a stopped server")
        } catch let error as PostgresFailure {
            #expect(error.connectionLost && error.message.contains("3 tries") && error.message.contains(own.directory), "\(error)")
        }
        #expect(seconds(ContinuousClock.now - start) >= 0.4)
        #expect(pool.linkCount == 0)

        try own.start()
        #expect(same(try pool.with { try $0.query("SELECT 2").rows[0] }, [.int(2)]))
        // A crash (immediate stop) and recovery: idle links the server dropped are replaced.
        _ = try pool.with { try $0.query("CREATE TABLE kept (id bigint)") }
        _ = try pool.with { try $0.query("INSERT INTO kept VALUES (1)") }
        try own.stop(mode: .immediate)
        try own.start()
        #expect(same(try pool.with { try $0.query("SELECT count(*) FROM kept").rows[0] }, [.int(1)]))
        #expect(pool.linkCount == 1)
    }

    /// A write whose body swallowed a failed statement is no commit: the server answers its
    /// COMMIT with ROLLBACK, and the write fails with nothing of it kept, deferred writes
    /// before the failure included.
    @Test func aTransactionTheServerFailedIsNeverTakenForACommit() throws {
        let store = try PostgresStore(url: server().createDatabase("swallowed_\(UInt32.random(in: 0...UInt32.max))"), readOnly: false, existing: false)
        let t = table("swallowed")
        try store.statement { db in try db.run("CREATE TABLE \(t) (id bigint)") }
        do {
            _ = try store.write(runs: ["r"]) { db -> Int in
                try db.run("INSERT INTO \(t) VALUES (1)")
                _ = try? db.first("SELECT * FROM no_such_table_\(t)") { $0.int(0) }
                return 1
            }
            Issue.record("a failed transaction was reported committed")
        } catch {
            #expect("\(error)".contains("ROLLBACK") || "\(error)".contains("no_such_table"), "\(error)")
        }
        #expect(try store.lookup { db in try db.first("SELECT count(*) FROM \(t)") { $0.int(0) } } == 0)
        // A write sent without a wait (nothing read after it) that fails: found before any
        // COMMIT is sent, and the write fails whole.
        do {
            _ = try store.write(runs: ["r"]) { db -> Int in
                try db.run("INSERT INTO \(t) VALUES (1)")
                try db.run("INSERT INTO no_such_table_\(t) VALUES (1)")
                return 1
            }
            Issue.record("a transaction with a failed write was reported committed")
        } catch {
            #expect("\(error)".contains("no_such_table"), "\(error)")
        }
        #expect(try store.lookup { db in try db.first("SELECT count(*) FROM \(t)") { $0.int(0) } } == 0)
        // The link went back usable: the next write commits.
        #expect(try store.write(runs: ["r"]) { db -> Int in try db.run("INSERT INTO \(t) VALUES (2)"); return 2 } == 2)
        #expect(try store.lookup { db in try db.first("SELECT count(*) FROM \(t)") { $0.int(0) } } == 1)
    }

    /// A link that broke while lent out leaves the pool when it comes back: a pool of one
    /// whose link the server ended serves the next caller on a new one.
    @Test func aLinkThatBrokeWhileLentOutFreesItsPlace() throws {
        let pool = PostgresPool(try PostgresAddress(url: server().url), size: 1)
        defer { pool.close() }
        let admin = try link()
        defer { admin.close() }
        for round in 0..<3 {
            #expect(throws: PostgresFailure.self) {
                try pool.with { db in
                    let pid = try db.query("SELECT pg_backend_pid()").rows[0][0]
                    // Ended by the server, which waits for the backend to be gone.
                    _ = try admin.query("SELECT pg_terminate_backend(?::integer, 5000)", [pid])
                    _ = try db.query("SELECT 1")
                }
            }
            try #require(pool.linkCount == 0, "round \(round): its place was not freed (the next caller would wait for ever)")
        }
        #expect(same(try pool.with { try $0.query("SELECT 2").rows[0] }, [.int(2)]))
    }

    @Test func aFailedBodyLeavesNoTransactionOpenForTheNext() throws {
        let pool = PostgresPool(try PostgresAddress(url: server().url), size: 1)
        defer { pool.close() }
        let t = table("rollback")
        _ = try pool.with { try $0.query("CREATE TABLE \(t) (id bigint)") }
        struct Stop: Error {}
        #expect(throws: Stop.self) {
            try pool.with { db in
                _ = try db.query("BEGIN")
                _ = try db.query("INSERT INTO \(t) VALUES (1)")
                throw Stop()
            }
        }
        #expect(same(try pool.with { try $0.query("SELECT count(*) FROM \(t)").rows[0] }, [.int(0)]))
    }

    @Test func thePoolServesEightThreadsRightAnswers() throws {
        let pool = PostgresPool(try PostgresAddress(url: server().url), size: 4)
        defer { pool.close() }
        let t = table("threads")
        _ = try pool.with { try $0.query("CREATE TABLE \(t) (thread bigint, i bigint, PRIMARY KEY (thread, i))") }
        let wrong = Atomic(0), failed = Atomic(0)
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for i in 0..<200 {
                do {
                    let answer = try pool.with { db -> [SQLValue] in
                        if i % 4 == 0 { _ = try db.query("INSERT INTO \(t) VALUES (?, ?)", [.int(thread), .int(i)]) }
                        return try db.query("SELECT ?::bigint * 1000 + ?, ?", [.int(thread), .int(i), .text("t\(thread)")]).rows[0]
                    }
                    if !same(answer, [.int(thread * 1000 + i), .text("t\(thread)")]) { wrong.add(1, ordering: .relaxed) }
                } catch {
                    failed.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(wrong.load(ordering: .relaxed) == 0 && failed.load(ordering: .relaxed) == 0)
        #expect(same(try pool.with { try $0.query("SELECT count(*), count(DISTINCT thread) FROM \(t)").rows[0] }, [.int(400), .int(8)]))
        #expect(pool.linkCount <= 4)
    }

    @Test func tlsIsUsedWhenTheURLRequiresIt() throws {
        let own = try PostgresServer(tcp: true)
        let cert = own.directory + "/server.crt", key = own.directory + "/server.key"
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert]
        openssl.standardError = FileHandle.nullDevice
        openssl.standardOutput = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        try #require(openssl.terminationStatus == 0)
        let tcp = try #require(own.tcpURL)
        // Without TLS on the server, sslmode=require fails clearly.
        do {
            _ = try PostgresLink(PostgresAddress(url: tcp + "?sslmode=require"), timeout: 5)
            Issue.record("sslmode=require connected without TLS")
        } catch let error as PostgresFailure {
            #expect(error.message.contains("TLS"), "\(error)")
        }
        if geteuid() == 0 { chown(cert, postgresUID(), gid_t.max); chown(key, postgresUID(), gid_t.max) }
        chmod(key, 0o600)
        try own.psql("ward", "ALTER SYSTEM SET ssl_cert_file = '\(cert)'")
        try own.psql("ward", "ALTER SYSTEM SET ssl_key_file = '\(key)'")
        try own.psql("ward", "ALTER SYSTEM SET ssl = on")
        try own.psql("ward", "SELECT pg_reload_conf()")
        Thread.sleep(forTimeInterval: 0.3)
        let secure = try PostgresLink(PostgresAddress(url: tcp + "?sslmode=require"), timeout: 5)
        defer { secure.close() }
        #expect(same(try secure.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").rows[0], [.int(1)]))
        let plain = try PostgresLink(PostgresAddress(url: tcp), timeout: 5)
        defer { plain.close() }
        #expect(same(try plain.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").rows[0], [.int(0)]))
    }

    @Test func theScriptStartsAServerTheLinkReachesAndStopsIt() throws {
        let dir = makeTemporaryDirectory("ward-pg-script")
        let script = BuildProducts.repository + "/Scripts/pg-server"
        let started = try BuildProducts.run(script, ["start", dir])
        defer { _ = try? BuildProducts.run(script, ["stop", dir, "immediate"]) }
        try #require(started.status == 0, "\(started.stderr)")
        let url = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try BuildProducts.run(script, ["url", dir]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == url)
        let db = try PostgresLink(PostgresAddress(url: url), timeout: 5)
        defer { db.close() }
        #expect(same(try db.query("SELECT current_database(), current_setting('fsync'), current_setting('synchronous_commit')").rows[0],
                     [.text("ward"), .text("on"), .text("on")]))
        #expect(try BuildProducts.run(script, ["stop", dir]).status == 0)
        #expect(throws: PostgresFailure.self) { try db.query("SELECT 1") }
        #expect(db.isBroken)
    }

    /// One statement is one round trip: the median time of SELECT 1 and of an INSERT on the
    /// Unix socket (printed; bounded loosely, for a shared machine).
    @Test func roundTripsAreFast() throws {
        let db = try link()
        defer { db.close() }
        let t = table("timing")
        _ = try db.query("CREATE TABLE \(t) (id bigint PRIMARY KEY, v text)")
        func median(_ n: Int, _ body: (Int) throws -> Void) rethrows -> Double {
            var times: [Double] = []
            for i in 0..<n {
                let start = ContinuousClock.now
                try body(i)
                times.append(seconds(ContinuousClock.now - start))
            }
            return times.sorted()[n / 2]
        }
        for i in 0..<200 { _ = try db.query("SELECT ?", [.int(i)]) }  // warm up
        let select = try median(2000) { _ in _ = try db.query("SELECT 1") }
        let insert = try median(2000) { i in _ = try db.query("INSERT INTO \(t) (id, v) VALUES (?, ?)", [.int(i), .text("value \(i)")]) }
        print("PostgresServer start-up, the process's first (initdb, start, CREATE DATABASE): \(try server().startupSeconds) s")
        print("PostgreSQL round trip on the Unix socket: SELECT 1 \(Int(select * 1e6)) µs, INSERT (autocommit, fsync) \(Int(insert * 1e6)) µs")
        #expect(select < 0.002 && insert < 0.05)
    }
}

private func postgresUID() -> uid_t { getpwnam("postgres")?.pointee.pw_uid ?? 0 }
