//! The engine's storage as a plugin reaches it: reads with bound parameters, and writes as
//! one all-or-nothing transaction run by the engine's single writer. A plugin never opens
//! the database itself (a second SQLite in the engine's process would break its locks).
//!
//! A plugin writes only its own tables: those named [`table_prefix`] of its name
//! (`plugin_<name>_…`), created by its [`Migration`]s. The engine refuses, before anything
//! is written, a batch that touches any other table (the host's `consensus_*`, the
//! engine's `hygiene_*`, another plugin's), that changes the schema, or that opens or ends
//! a transaction of its own. Reads may go anywhere, the host's tables included.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::abi::{ByteSlice, HostApi, RawBuffer, STATUS_OK};

/// One SQL statement and its parameters (`?1`, `?2`… bound in order; JSON `null`,
/// booleans, integers, reals and strings; arrays and objects are bound as JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<Value>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// A request from a plugin to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HostRequest {
    /// One read-only statement; its rows come back as objects keyed by column name.
    Query {
        sql: String,
        #[serde(default)]
        params: Vec<Value>,
    },
    /// Statements run in order in one `BEGIN IMMEDIATE` transaction: all commit, or none.
    Write { statements: Vec<Statement> },
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HostResponse {
    Rows {
        rows: Vec<Map<String, Value>>,
    },
    /// Rows changed by each statement, in order.
    Written {
        changes: Vec<u64>,
    },
    /// Nothing was written; the message names the statement and the cause.
    Refused {
        message: String,
    },
}

/// One step of a plugin's own schema, applied by the engine in one transaction with its
/// version (kept in the engine's `hygiene_schema_versions`, under the component
/// [`table_prefix`] without its trailing `_`). Append new steps; never edit a released one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    /// Creates, alters or drops only the plugin's own tables and indexes.
    pub sql: String,
}

impl Migration {
    pub fn new(version: i64, name: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            version,
            name: name.into(),
            sql: sql.into(),
        }
    }
}

/// What `describe` returns: everything the engine needs before the first run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Description {
    pub migrations: Vec<Migration>,
}

/// The prefix of every table the plugin `name` owns: `plugin_`, then the name with every
/// character other than an ASCII letter or digit as `_`, lower-cased, then `_`
/// (`speckit-digest` owns `plugin_speckit_digest_*`).
pub fn table_prefix(name: &str) -> String {
    let mut prefix = String::from("plugin_");
    prefix.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        }
    }));
    prefix.push('_');
    prefix
}

/// The engine's storage during one `run` ([`crate::JobContext::storage`]).
#[derive(Debug, Clone, Copy)]
pub struct Storage<'a> {
    host: &'a HostApi,
}

impl<'a> Storage<'a> {
    pub(crate) fn new(host: &'a HostApi) -> Self {
        Self { host }
    }

    /// Runs one read-only statement and returns its rows.
    pub fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Map<String, Value>>, String> {
        match self.call(&HostRequest::Query {
            sql: sql.to_string(),
            params,
        })? {
            HostResponse::Rows { rows } => Ok(rows),
            HostResponse::Refused { message } => Err(message),
            other => Err(format!("the engine answered a query with {other:?}")),
        }
    }

    /// Runs `statements` as one transaction; returns the rows each changed.
    pub fn write(&self, statements: Vec<Statement>) -> Result<Vec<u64>, String> {
        match self.call(&HostRequest::Write { statements })? {
            HostResponse::Written { changes } => Ok(changes),
            HostResponse::Refused { message } => Err(message),
            other => Err(format!("the engine answered a write with {other:?}")),
        }
    }

    fn call(&self, request: &HostRequest) -> Result<HostResponse, String> {
        let (Some(call), Some(free)) = (self.host.call, self.host.free_buffer) else {
            return Err("this host offers no storage".into());
        };
        let bytes = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let mut response = RawBuffer::EMPTY;
        // SAFETY: the host lent this table for the duration of `run`, which is still going
        // on (a `Storage` cannot outlive the `JobContext` it borrows from).
        let status = unsafe { call(self.host.context, ByteSlice::new(&bytes), &mut response) };
        // SAFETY: the host filled `response` (or left it empty).
        let out = unsafe { response.as_bytes() }.to_vec();
        // SAFETY: the buffer is the host's, handed back once.
        unsafe { free(self.host.context, response) };
        if status != STATUS_OK {
            return Err(String::from_utf8_lossy(&out).into_owned());
        }
        serde_json::from_slice(&out).map_err(|e| format!("the engine's answer is not valid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_safe_sql_names() {
        assert_eq!(table_prefix("speckit-digest"), "plugin_speckit_digest_");
        assert_eq!(table_prefix("Probe"), "plugin_probe_");
        assert_eq!(table_prefix("a b;--"), "plugin_a_b____");
    }

    #[test]
    fn requests_and_responses_have_a_stable_shape() {
        let request = HostRequest::Query {
            sql: "SELECT 1".into(),
            params: vec![Value::from(3)],
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({"op": "query", "sql": "SELECT 1", "params": [3]})
        );
        let response: HostResponse =
            serde_json::from_value(serde_json::json!({"result": "written", "changes": [1, 2]}))
                .unwrap();
        assert_eq!(
            response,
            HostResponse::Written {
                changes: vec![1, 2]
            }
        );
    }
}
