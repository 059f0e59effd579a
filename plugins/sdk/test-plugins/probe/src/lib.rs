//! A test plugin that does what its config says: `mode` for `run` (`ok`, `noop`, `fail`,
//! `report_errors`, `panic`, `hang`) and `validate` for `validate` (`ok`, `reject`,
//! `panic`, `hang`). A successful run echoes its job context back in the report's data, so
//! tests can check what the engine sent.

use serde::Deserialize;
use speckit_plugin_sdk::{export_plugin, parse_config, JobContext, Plugin, Report};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub mode: String,
    pub validate: String,
}

#[derive(Debug, Default)]
pub struct Probe;

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

impl Plugin for Probe {
    fn validate(&self, config: &serde_json::Value) -> Result<(), String> {
        let config: ProbeConfig = parse_config(config)?;
        match config.validate.as_str() {
            "" | "ok" => {}
            "reject" => return Err("validate = \"reject\": refusing this config".into()),
            "panic" => panic!("probe panicked in validate"),
            "hang" => hang(),
            other => return Err(format!("unknown validate mode {other:?}")),
        }
        match config.mode.as_str() {
            "" | "ok" | "noop" | "fail" | "report_errors" | "panic" | "hang" => Ok(()),
            other => Err(format!("unknown mode {other:?}")),
        }
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
            _ => Ok(Report::new(format!("probe ran job {}", ctx.job))
                .with_data(serde_json::to_value(ctx).map_err(|e| e.to_string())?)),
        }
    }
}

export_plugin!(Probe, "probe");
