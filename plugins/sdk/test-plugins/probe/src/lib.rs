//! A test plugin that does what its config says: `mode` for `run` (`ok`, `noop`, `fail`,
//! `report_errors`, `panic`, `hang`, and the crashes `segfault`, `abort`, `exit`,
//! `allocate`, plus `print` and `storage`) and `validate` for `validate` (`ok`, `reject`,
//! `panic`, `hang`, `segfault`). A successful run echoes its job context back in the
//! report's data, so tests can check what the engine sent.
//!
//! In `storage` mode it writes `writes` (SQL, no parameters) as one batch, then `inserts`
//! rows into its own table in one batch, then runs `query`, and reports each outcome.

use serde::Deserialize;
use serde_json::json;
use speckit_plugin_sdk::{
    export_plugin, parse_config, JobContext, Migration, Plugin, Report, Statement,
};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub mode: String,
    pub validate: String,
    /// `storage` mode: statements written as one batch.
    pub writes: Vec<String>,
    /// `storage` mode: rows inserted into `plugin_probe_notes` in one batch.
    pub inserts: u64,
    /// `storage` mode: a query whose rows are reported.
    pub query: String,
}

#[derive(Debug, Default)]
pub struct Probe;

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn segfault() -> ! {
    // SAFETY: none; crashing the process is the point of this mode.
    unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
    unreachable!("a write through a null pointer returned")
}

/// Allocates and touches memory until the allocator fails (which aborts the process).
fn allocate_without_bound() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(vec![1u8; 32 << 20]);
    }
}

const MODES: &[&str] = &[
    "",
    "ok",
    "noop",
    "fail",
    "report_errors",
    "panic",
    "hang",
    "segfault",
    "abort",
    "exit",
    "allocate",
    "print",
    "storage",
];

impl Plugin for Probe {
    fn validate(&self, config: &serde_json::Value) -> Result<(), String> {
        let config: ProbeConfig = parse_config(config)?;
        match config.validate.as_str() {
            "" | "ok" => {}
            "reject" => return Err("validate = \"reject\": refusing this config".into()),
            "panic" => panic!("probe panicked in validate"),
            "hang" => hang(),
            "segfault" => segfault(),
            other => return Err(format!("unknown validate mode {other:?}")),
        }
        if MODES.contains(&config.mode.as_str()) {
            Ok(())
        } else {
            Err(format!("unknown mode {:?}", config.mode))
        }
    }

    fn migrations(&self) -> Vec<Migration> {
        vec![Migration::new(
            1,
            "notes",
            "CREATE TABLE plugin_probe_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL)",
        )]
    }

    fn run(&self, ctx: &JobContext) -> Result<Report, String> {
        let config: ProbeConfig = ctx.config_as()?;
        match config.mode.as_str() {
            // As little work as a job can do: for measuring the boundary's own cost.
            "noop" => Ok(Report::new("noop")),
            "fail" => Err("probe failed on purpose".into()),
            "report_errors" => Ok(Report {
                summary: "probe met an error".into(),
                errors: vec!["one file could not be read".into()],
                ..Report::default()
            }),
            "panic" => panic!("probe panicked in run"),
            "hang" => hang(),
            "segfault" => segfault(),
            "abort" => std::process::abort(),
            "exit" => std::process::exit(0),
            "allocate" => allocate_without_bound(),
            "print" => {
                for i in 0..1000 {
                    println!("probe prints line {i} to stdout");
                }
                Ok(Report::new("printed 1000 lines"))
            }
            "storage" => storage(ctx, &config),
            _ => Ok(Report::new(format!("probe ran job {}", ctx.job))
                .with_data(serde_json::to_value(ctx).map_err(|e| e.to_string())?)),
        }
    }
}

fn storage(ctx: &JobContext, config: &ProbeConfig) -> Result<Report, String> {
    let storage = ctx.storage()?;
    let as_json = |r: Result<Vec<u64>, String>| match r {
        Ok(changes) => json!({ "changes": changes }),
        Err(error) => json!({ "error": error }),
    };
    let writes = (!config.writes.is_empty()).then(|| {
        as_json(
            storage.write(
                config
                    .writes
                    .iter()
                    .map(|sql| Statement::new(sql.clone(), Vec::new()))
                    .collect(),
            ),
        )
    });
    let inserts = (config.inserts > 0).then(|| {
        as_json(
            storage.write(
                (0..config.inserts)
                    .map(|i| {
                        Statement::new(
                            "INSERT INTO plugin_probe_notes (note) VALUES (?1)",
                            vec![json!(format!("note {i} of run {}", ctx.run_id))],
                        )
                    })
                    .collect(),
            ),
        )
    });
    let query =
        (!config.query.is_empty()).then(|| match storage.query(&config.query, Vec::new()) {
            Ok(rows) => json!({ "rows": rows }),
            Err(error) => json!({ "error": error }),
        });
    Ok(Report::new("probe used storage")
        .with_data(json!({ "writes": writes, "inserts": inserts, "query": query })))
}

export_plugin!(Probe, "probe");
