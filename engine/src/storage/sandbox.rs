//! Limits on SQL that comes from a dynamic plugin, enforced by SQLite's authorizer on the
//! writer's connection while (and only while) such SQL is prepared.
//!
//! The authorizer is installed once on every read-write connection and asks a
//! thread-local [`Sandbox`]; outside [`within`] it allows everything, so the engine's own
//! statements (its `BEGIN`/`COMMIT`, its version rows) never meet it. A statement the
//! sandbox refuses fails at prepare time with `SQLITE_AUTH`, before anything is written.
//!
//! What a sandboxed statement may do: read any table; insert, update and delete rows of
//! tables named with the owner's prefix; and, in a migration, create, alter and drop
//! tables and indexes with that prefix. Nothing else: no other table's rows (the host's
//! `consensus_*`, the engine's `hygiene_*`, another plugin's), no pragma, no `ATTACH`, no
//! trigger, view or virtual table, no transaction or savepoint of its own.

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use std::cell::RefCell;

/// Who is running SQL, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Tables whose name starts with this (ASCII case-insensitive) are the owner's.
    pub table_prefix: String,
    /// A migration may change the schema of the owner's tables; a write batch may not.
    pub schema_changes: bool,
}

thread_local! {
    static ACTIVE: RefCell<Option<Sandbox>> = const { RefCell::new(None) };
    /// The first refusal while the sandbox was active, for the error message.
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` with `sandbox` limiting every statement this thread prepares; returns `f`'s
/// result and the first action refused, if any.
pub fn within<T>(sandbox: &Sandbox, f: impl FnOnce() -> T) -> (T, Option<String>) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.borrow_mut().take());
        }
    }
    REFUSED.with(|r| r.borrow_mut().take());
    ACTIVE.with(|a| *a.borrow_mut() = Some(sandbox.clone()));
    let reset = Reset;
    let value = f();
    drop(reset);
    (value, REFUSED.with(|r| r.borrow_mut().take()))
}

/// The authorizer callback: installed on read-write connections.
pub fn authorize(context: AuthContext<'_>) -> Authorization {
    ACTIVE.with(|active| match &*active.borrow() {
        None => Authorization::Allow,
        Some(sandbox) => match refusal(sandbox, &context.action) {
            None => Authorization::Allow,
            Some(reason) => {
                REFUSED.with(|r| {
                    r.borrow_mut().get_or_insert(reason);
                });
                Authorization::Deny
            }
        },
    })
}

/// Why `action` is refused to `sandbox`, or `None` when it is allowed.
fn refusal(sandbox: &Sandbox, action: &AuthAction<'_>) -> Option<String> {
    let own = |table: &str| {
        table.len() > sandbox.table_prefix.len()
            && table.as_bytes()[..sandbox.table_prefix.len()]
                .eq_ignore_ascii_case(sandbox.table_prefix.as_bytes())
    };
    // DDL writes its own rows to sqlite_master, authorized as plain inserts and updates.
    let schema_table = |table: &str| sandbox.schema_changes && is_schema_table(table);
    // Row writes: to the plugin's own tables, or (in a migration) SQLite's schema rows.
    let row_write = |verb: &str, table: &str| {
        if own(table) || schema_table(table) {
            None
        } else if is_schema_table(table) {
            Some(format!(
                "{verb} {table}: schema changes belong in the plugin's migrations"
            ))
        } else {
            Some(format!(
                "{verb} table {table}: a plugin writes only its own tables ({}*)",
                sandbox.table_prefix
            ))
        }
    };
    let ddl = |what: &str, name: &str, table: &str| {
        if !sandbox.schema_changes {
            Some(format!(
                "{what} {name}: schema changes belong in the plugin's migrations"
            ))
        } else if (own(name) || name.starts_with("sqlite_autoindex_")) && own(table) {
            // UNIQUE and PRIMARY KEY constraints make indexes SQLite names itself.
            None
        } else {
            Some(format!(
                "{what} {name}: a plugin's migrations create only its own tables and indexes ({}*)",
                sandbox.table_prefix
            ))
        }
    };
    match *action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Recursive => None,
        AuthAction::Function { function_name } => {
            (function_name.eq_ignore_ascii_case("load_extension"))
                .then(|| "function load_extension is not allowed".to_string())
        }
        AuthAction::Insert { table_name } => row_write("insert into", table_name),
        AuthAction::Update { table_name, .. } => row_write("update", table_name),
        AuthAction::Delete { table_name } => row_write("delete from", table_name),
        AuthAction::CreateTable { table_name } => ddl("create table", table_name, table_name),
        AuthAction::DropTable { table_name } => ddl("drop table", table_name, table_name),
        AuthAction::AlterTable { table_name, .. } => ddl("alter table", table_name, table_name),
        AuthAction::CreateIndex {
            index_name,
            table_name,
        } => ddl("create index", index_name, table_name),
        AuthAction::DropIndex {
            index_name,
            table_name,
        } => ddl("drop index", index_name, table_name),
        // CREATE INDEX asks to (re)build the new index.
        AuthAction::Reindex { index_name } if sandbox.schema_changes && own(index_name) => None,
        AuthAction::Pragma { pragma_name, .. } => {
            Some(format!("pragma {pragma_name} is not allowed"))
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Some(
            "a plugin's statements run in the engine's transaction; BEGIN, COMMIT, ROLLBACK and savepoints are not allowed".into(),
        ),
        AuthAction::Attach { filename } => Some(format!("attach {filename} is not allowed")),
        AuthAction::Detach { database_name } => {
            Some(format!("detach {database_name} is not allowed"))
        }
        ref other => Some(format!("{other:?} is not allowed")),
    }
}

/// SQLite's own tables that DDL (and AUTOINCREMENT) write.
fn is_schema_table(table: &str) -> bool {
    ["sqlite_master", "sqlite_schema", "sqlite_sequence"]
        .iter()
        .any(|t| table.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn connection() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.authorizer(Some(authorize)).unwrap();
        conn.execute_batch(
            "CREATE TABLE consensus_runs (id INTEGER); CREATE TABLE plugin_p_own (id INTEGER); \
             CREATE TABLE plugin_p_counted (id INTEGER PRIMARY KEY AUTOINCREMENT, x);",
        )
        .unwrap();
        conn
    }

    fn sandbox(schema_changes: bool) -> Sandbox {
        Sandbox {
            table_prefix: "plugin_p_".into(),
            schema_changes,
        }
    }

    fn run(conn: &Connection, sandbox: &Sandbox, sql: &str) -> Result<(), String> {
        let (result, refused) = within(sandbox, || conn.execute_batch(sql));
        result.map_err(|e| format!("{e}: {}", refused.unwrap_or_default()))
    }

    #[test]
    fn own_rows_are_writable_and_every_other_table_is_refused_by_name() {
        let conn = connection();
        let writes = sandbox(false);
        run(&conn, &writes, "INSERT INTO plugin_p_own VALUES (1)").unwrap();
        run(
            &conn,
            &writes,
            "INSERT INTO plugin_p_counted (x) VALUES (1)",
        )
        .unwrap();
        run(
            &conn,
            &writes,
            "INSERT INTO plugin_p_own SELECT id FROM consensus_runs",
        )
        .unwrap();
        for (sql, reason) in [
            (
                "INSERT INTO consensus_runs VALUES (1)",
                "insert into table consensus_runs",
            ),
            (
                "DELETE FROM consensus_runs",
                "delete from table consensus_runs",
            ),
            (
                "UPDATE consensus_runs SET id = 2",
                "update table consensus_runs",
            ),
            (
                "CREATE TABLE plugin_p_new (x)",
                "schema changes belong in the plugin's migrations",
            ),
            ("PRAGMA user_version = 7", "pragma user_version"),
            ("ATTACH ':memory:' AS other", "attach"),
            ("COMMIT", "BEGIN, COMMIT"),
            ("SAVEPOINT s", "savepoints"),
        ] {
            let err = run(&conn, &writes, sql).unwrap_err();
            assert!(err.contains(reason), "{sql}: {err}");
        }
        // Outside the sandbox the engine's own statements are not limited.
        conn.execute_batch("INSERT INTO consensus_runs VALUES (9)")
            .unwrap();
    }

    #[test]
    fn migrations_create_only_the_owners_tables_and_indexes() {
        let conn = connection();
        let migration = sandbox(true);
        run(
            &conn,
            &migration,
            "CREATE TABLE plugin_p_digest (spec TEXT PRIMARY KEY, body TEXT); \
             CREATE INDEX plugin_p_digest_body ON plugin_p_digest(body);",
        )
        .unwrap();
        let err = run(&conn, &migration, "CREATE TABLE hygiene_evil (x)").unwrap_err();
        assert!(err.contains("create table hygiene_evil"), "{err}");
        let err = run(
            &conn,
            &migration,
            "CREATE INDEX plugin_p_idx ON consensus_runs(id)",
        )
        .unwrap_err();
        assert!(err.contains("create index plugin_p_idx"), "{err}");
        let err = run(&conn, &migration, "DROP TABLE consensus_runs").unwrap_err();
        assert!(err.contains("drop table consensus_runs"), "{err}");
        let err = run(
            &conn,
            &migration,
            "CREATE TRIGGER plugin_p_t AFTER INSERT ON plugin_p_own BEGIN DELETE FROM consensus_runs; END",
        )
        .unwrap_err();
        assert!(err.contains("not allowed"), "{err}");
    }
}
