//! A dynamic plugin's storage requests, answered from the engine's [`Storage`]: queries
//! on the read pool, write batches as one transaction on the single writer inside the
//! plugin's [`Sandbox`]. JSON values map to SQL values one to one (arrays and objects are
//! bound as JSON text; blobs come back as lower-case hex strings).

use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{Map, Number, Value};
use speckit_plugin_sdk::storage::{HostRequest, HostResponse, Statement};

use crate::storage::sandbox::{within, Sandbox};
use crate::storage::{Storage, StorageError};

/// The most rows one query returns; a plugin pages through more with `LIMIT`/`OFFSET`.
pub const MAX_QUERY_ROWS: usize = 100_000;

/// Answers one request (`HostRequest` JSON) with a `HostResponse` as JSON.
pub fn answer(storage: &Storage, table_prefix: &str, request: &str) -> String {
    let response = match serde_json::from_str::<HostRequest>(request) {
        Err(e) => refused(format!("not a storage request: {e}")),
        Ok(HostRequest::Query { sql, params }) => query(storage, &sql, params),
        Ok(HostRequest::Write { statements }) => write(storage, table_prefix, statements),
    };
    serde_json::to_string(&response).unwrap_or_else(|e| {
        format!(r#"{{"result":"refused","message":"cannot encode the answer: {e}"}}"#)
    })
}

fn refused(message: String) -> HostResponse {
    HostResponse::Refused { message }
}

fn query(storage: &Storage, sql: &str, params: Vec<Value>) -> HostResponse {
    let sql = sql.to_string();
    let result = storage.read_blocking(move |conn| {
        let mut statement = conn.prepare(&sql)?;
        if !statement.readonly() {
            return Ok(Err(format!(
                "query {}: only statements that read are queries; write through a batch",
                excerpt(&sql)
            )));
        }
        let names: Vec<String> = statement.column_names().map(|n| n.to_string()).collect();
        let mut rows = statement.query(rusqlite::params_from_iter(params.iter().map(to_sql)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            if out.len() == MAX_QUERY_ROWS {
                return Ok(Err(format!(
                    "query {}: more than {MAX_QUERY_ROWS} rows; page with LIMIT and OFFSET",
                    excerpt(&sql)
                )));
            }
            let mut object = Map::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                object.insert(name.clone(), from_sql(row.get_ref(i)?));
            }
            out.push(object);
        }
        Ok(Ok(out))
    });
    match result {
        Ok(Ok(rows)) => HostResponse::Rows { rows },
        Ok(Err(message)) => refused(message),
        Err(e) => refused(format!("query failed: {e}")),
    }
}

/// Why a batch was rolled back.
#[derive(Debug)]
enum BatchError {
    Storage(StorageError),
    Statement(String),
}

impl From<StorageError> for BatchError {
    fn from(e: StorageError) -> Self {
        BatchError::Storage(e)
    }
}

fn write(storage: &Storage, table_prefix: &str, statements: Vec<Statement>) -> HostResponse {
    let sandbox = Sandbox {
        table_prefix: table_prefix.to_string(),
        schema_changes: false,
    };
    let result = storage.write_blocking(move |tx| {
        let mut changes = Vec::with_capacity(statements.len());
        for (i, statement) in statements.iter().enumerate() {
            let (result, refusal) = within(&sandbox, || {
                tx.prepare(&statement.sql).and_then(|mut prepared| {
                    prepared.execute(rusqlite::params_from_iter(
                        statement.params.iter().map(to_sql),
                    ))
                })
            });
            match result {
                Ok(n) => changes.push(n as u64),
                Err(e) => {
                    let cause = refusal.unwrap_or_else(|| e.to_string());
                    return Err(BatchError::Statement(format!(
                        "statement {} of {} ({}): {cause}; nothing was written",
                        i + 1,
                        statements.len(),
                        excerpt(&statement.sql)
                    )));
                }
            }
        }
        Ok(changes)
    });
    match result {
        Ok(changes) => HostResponse::Written { changes },
        Err(BatchError::Statement(message)) => refused(message),
        Err(BatchError::Storage(e)) => refused(format!("write failed, nothing was written: {e}")),
    }
}

/// The first line of a statement, shortened, for messages.
fn excerpt(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    let short: String = line.chars().take(80).collect();
    if short.len() < line.len() {
        format!("{short}…")
    } else {
        short
    }
}

fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(hex::encode(b)),
    }
}
