//! Reading the command line's `--json` envelope in tests: one place that checks its shape
//! (an object with `schema_version` 1, `command`, `ok`, `data`, `warnings`, `errors`).

use serde_json::Value;

/// The envelope in `stdout`, its shape checked; panics, showing the text, otherwise.
pub fn envelope(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{text}"));
    assert_eq!(value["schema_version"], 1, "not the envelope:\n{text}");
    for key in ["command", "ok", "data", "warnings", "errors"] {
        assert!(
            value.get(key).is_some(),
            "the envelope has no {key:?}:\n{text}"
        );
    }
    value
}

/// The envelope's `data`.
pub fn data(stdout: &[u8]) -> Value {
    envelope(stdout)["data"].clone()
}
