//! Reading a SPEC's consensus evidence: the `*_synthesis.json` and `*_verdict.json` files
//! under `consensus/<SPEC-ID>/`, in every shape upstream has written them.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Files larger than this are not read (upstream's largest synthesis is 1.8 MB).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One synthesis file: what a consensus run concluded for one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthesis {
    pub file: String,
    pub stage: String,
    pub status: String,
    /// ISO-like, `T`-separated, for ordering; from the content, else the file name.
    pub timestamp: Option<String>,
    pub run_id: Option<String>,
    pub agents: Option<u64>,
    pub degraded_agents: Vec<String>,
    pub agreements: Vec<String>,
    pub conflicts: Vec<String>,
    pub output_path: Option<String>,
    /// An unrendered template (`"stage": "${stage}"`): no run data in it.
    pub template: bool,
}

/// One verdict file: the agents' proposals a consensus run was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub file: String,
    pub stage: String,
    pub agents: Vec<String>,
    pub empty_proposals: usize,
    pub exported_at: Option<String>,
}

/// Everything read for one SPEC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecEvidence {
    pub spec_id: String,
    pub dir: PathBuf,
    pub syntheses: Vec<Synthesis>,
    pub verdicts: Vec<Verdict>,
    /// Files that could not be read or parsed: (file name, cause).
    pub unreadable: Vec<(String, String)>,
    /// Symbolic links, which are never followed.
    pub skipped_links: Vec<String>,
}

/// What `consensus/` holds: SPEC folders (name, path), and entries skipped as links.
#[derive(Debug, Default)]
pub struct SpecDirs {
    pub dirs: Vec<(String, PathBuf)>,
    pub links: Vec<String>,
}

/// The SPEC folders under `consensus_dir`, sorted, not following links and skipping
/// hidden entries.
pub fn spec_dirs(consensus_dir: &Path) -> std::io::Result<SpecDirs> {
    let mut out = SpecDirs::default();
    for entry in fs::read_dir(consensus_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            out.links.push(name);
        } else if kind.is_dir() {
            out.dirs.push((name, entry.path()));
        }
    }
    out.dirs.sort();
    out.links.sort();
    Ok(out)
}

/// Reads one SPEC's folder. Problems with single files are recorded, not returned.
pub fn read_spec(spec_id: &str, dir: &Path) -> std::io::Result<SpecEvidence> {
    let mut out = SpecEvidence {
        spec_id: spec_id.to_string(),
        dir: dir.to_path_buf(),
        ..SpecEvidence::default()
    };
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let synthesis = name.ends_with("_synthesis.json");
        let verdict = name.ends_with("_verdict.json");
        if !synthesis && !verdict {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            out.skipped_links.push(name);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let value = match read_json(&entry.path()) {
            Ok(value) => value,
            Err(cause) => {
                out.unreadable.push((name, cause));
                continue;
            }
        };
        if synthesis {
            out.syntheses.push(parse_synthesis(&name, &value));
        } else {
            out.verdicts.push(parse_verdict(&name, &value));
        }
    }
    Ok(out)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "{len} bytes, more than the {MAX_FILE_BYTES} this digest reads"
        ));
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("not a JSON object".into())
    }
}

fn is_template(s: &str) -> bool {
    s.contains("${")
}

/// A string field that holds real data (not a `${placeholder}`).
fn text(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && !is_template(s))
        .map(str::to_string)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `spec-plan` and `plan` are the same stage.
fn normalize_stage(stage: &str) -> String {
    stage.strip_prefix("spec-").unwrap_or(stage).to_string()
}

/// The stage from a file name: `spec-plan_2025-10-05T01:18:13Z_synthesis.json` and
/// `plan_synthesis.json` both name `plan`.
fn stage_from_name(name: &str) -> String {
    normalize_stage(name.split('_').next().unwrap_or(name))
}

/// A timestamp in a file name (`2025-10-05T01:18:13Z`), if any.
fn timestamp_from_name(name: &str) -> Option<String> {
    name.split('_')
        .find(|part| {
            part.len() >= 10
                && part.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && part.as_bytes()[4] == b'-'
        })
        .map(normalize_timestamp)
}

/// `2025-11-11 02:33:20` and `2025-11-11T02:33:20Z` order the same way.
fn normalize_timestamp(s: &str) -> String {
    s.replacen(' ', "T", 1)
}

/// The `**Generated**: 2025-12-26 23:16 UTC` line of a synthesis's rendered Markdown,
/// for files that carry no timestamp field.
fn generated_in_markdown(value: &Value) -> Option<String> {
    let markdown = value.get("output_markdown")?.as_str()?;
    let line = markdown
        .lines()
        .find_map(|l| l.trim().strip_prefix("**Generated**:"))?;
    let stamp = line.trim().trim_end_matches("UTC").trim();
    (!stamp.is_empty() && !is_template(stamp)).then(|| normalize_timestamp(stamp))
}

pub fn parse_synthesis(file: &str, value: &Value) -> Synthesis {
    let template = ["stage", "specId", "timestamp"].iter().any(|k| {
        value
            .get(*k)
            .and_then(Value::as_str)
            .is_some_and(is_template)
    });
    let consensus = value.get("consensus");
    let agreements = consensus
        .and_then(|c| c.get("agreements"))
        .or_else(|| value.get("agreements"));
    let conflicts = consensus
        .and_then(|c| c.get("conflicts").or_else(|| c.get("conflicts_resolved")))
        .or_else(|| value.get("conflicts"));
    let agents = value.get("agents");
    let active = agents
        .and_then(|a| a.get("active"))
        .and_then(Value::as_array);
    let agent_count = value
        .get("artifacts_count")
        .and_then(Value::as_u64)
        .or(active.map(|a| a.len() as u64))
        .or(agents.and_then(Value::as_array).map(|a| a.len() as u64))
        .filter(|n| !(template && *n == 0));
    let mut degraded_agents = strings(agents.and_then(|a| a.get("degraded")));
    if degraded_agents.is_empty() && value.get("degraded").and_then(Value::as_bool) == Some(true) {
        degraded_agents.push("(some)".into());
    }
    Synthesis {
        file: file.to_string(),
        stage: text(value, "stage")
            .map(|s| normalize_stage(&s))
            .unwrap_or_else(|| stage_from_name(file)),
        status: text(value, "status").unwrap_or_else(|| "unknown".into()),
        timestamp: text(value, "timestamp")
            .or_else(|| text(value, "created_at"))
            .map(|s| normalize_timestamp(&s))
            .or_else(|| timestamp_from_name(file))
            .or_else(|| generated_in_markdown(value)),
        run_id: text(value, "run_id"),
        agents: agent_count,
        degraded_agents,
        agreements: strings(agreements),
        conflicts: strings(conflicts),
        output_path: text(value, "output_path"),
        template,
    }
}

pub fn parse_verdict(file: &str, value: &Value) -> Verdict {
    let proposals = value
        .get("proposals")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Verdict {
        file: file.to_string(),
        stage: text(value, "stage")
            .map(|s| normalize_stage(&s))
            .unwrap_or_else(|| stage_from_name(file)),
        agents: proposals
            .iter()
            .filter_map(|p| p.get("agent_name").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        empty_proposals: proposals
            .iter()
            .filter(|p| {
                p.get("content")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            })
            .count(),
        exported_at: text(value, "exported_at"),
    }
}

/// Stages in workflow order, then any others by name.
pub fn stage_rank(stage: &str) -> (usize, String) {
    const ORDER: [&str; 6] = ["plan", "tasks", "implement", "validate", "audit", "unlock"];
    let rank = ORDER
        .iter()
        .position(|s| *s == stage)
        .unwrap_or(ORDER.len());
    (rank, stage.to_string())
}

/// One stage's runs, newest real run first chosen as `latest`.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSummary<'a> {
    pub stage: String,
    pub latest: Option<&'a Synthesis>,
    pub runs: usize,
    pub templates: usize,
    pub verdict: Option<&'a Verdict>,
}

/// Groups a SPEC's files by stage, in workflow order.
pub fn stages(spec: &SpecEvidence) -> Vec<StageSummary<'_>> {
    let mut by_stage: BTreeMap<(usize, String), StageSummary<'_>> = BTreeMap::new();
    for s in &spec.syntheses {
        let key = stage_rank(&s.stage);
        let summary = by_stage.entry(key).or_insert_with(|| StageSummary {
            stage: s.stage.clone(),
            latest: None,
            runs: 0,
            templates: 0,
            verdict: None,
        });
        if s.template {
            summary.templates += 1;
            continue;
        }
        summary.runs += 1;
        let newer = match summary.latest {
            None => true,
            Some(current) => s.timestamp >= current.timestamp,
        };
        if newer {
            summary.latest = Some(s);
        }
    }
    for v in &spec.verdicts {
        let key = stage_rank(&v.stage);
        let summary = by_stage.entry(key).or_insert_with(|| StageSummary {
            stage: v.stage.clone(),
            latest: None,
            runs: 0,
            templates: 0,
            verdict: None,
        });
        let newer = match summary.verdict {
            None => true,
            Some(current) => v.exported_at >= current.exported_at,
        };
        if newer {
            summary.verdict = Some(v);
        }
    }
    by_stage.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_rendered_synthesis_shape() {
        let s = parse_synthesis(
            "spec-audit_synthesis.json",
            &json!({
                "specId": "SPEC-KIT-DEMO", "stage": "spec-audit",
                "timestamp": "2025-10-12T16:24:23Z", "status": "degraded",
                "agents": {"active": [{"model": "a"}, {"model": "b"}], "degraded": ["gpt_pro"]},
                "consensus": {"agreements": ["ship it"], "conflicts_resolved": ["naming"]}
            }),
        );
        assert_eq!(s.stage, "audit");
        assert_eq!(s.status, "degraded");
        assert_eq!(s.timestamp.as_deref(), Some("2025-10-12T16:24:23Z"));
        assert_eq!(s.agents, Some(2));
        assert_eq!(s.degraded_agents, vec!["gpt_pro"]);
        assert_eq!(s.agreements, vec!["ship it"]);
        assert_eq!(s.conflicts, vec!["naming"]);
        assert!(!s.template);
    }

    #[test]
    fn reads_the_database_export_shape() {
        let s = parse_synthesis(
            "plan_synthesis.json",
            &json!({
                "spec_id": "SPEC-KIT-900", "stage": "spec-plan", "artifacts_count": 3,
                "status": "ok", "agreements": null, "conflicts": null, "degraded": false,
                "run_id": "run_1", "created_at": "2025-11-11 02:33:20",
                "output_path": "/x/plan.md"
            }),
        );
        assert_eq!(s.stage, "plan");
        assert_eq!(s.agents, Some(3));
        assert_eq!(s.timestamp.as_deref(), Some("2025-11-11T02:33:20"));
        assert_eq!(s.run_id.as_deref(), Some("run_1"));

        let undated = parse_synthesis(
            "audit_synthesis.json",
            &json!({"stage": "spec-audit", "status": "ok",
                    "output_markdown": "# Plan\n\n**Stage**: Audit\n**Generated**: 2025-12-26 23:16 UTC\n"}),
        );
        assert_eq!(undated.timestamp.as_deref(), Some("2025-12-26T23:16"));
        assert!(s.agreements.is_empty() && s.degraded_agents.is_empty());
    }

    #[test]
    fn recognises_unrendered_templates_and_takes_the_time_from_the_name() {
        let s = parse_synthesis(
            "spec-plan_2025-10-05T01:18:13Z_synthesis.json",
            &json!({"stage": "${stage}", "specId": "${spec}", "timestamp": "${timestamp_run}",
                    "agents": [], "consensus": {"agreements": [], "conflicts": []}, "status": "ok"}),
        );
        assert!(s.template);
        assert_eq!(s.stage, "plan");
        assert_eq!(s.timestamp.as_deref(), Some("2025-10-05T01:18:13Z"));
        assert_eq!(s.agents, None);
    }

    #[test]
    fn reads_verdicts() {
        let v = parse_verdict(
            "plan_verdict.json",
            &json!({"stage": "plan", "exported_at": "2025-11-11T02:33:20Z", "proposals": [
                {"agent_name": "gemini", "content": ""},
                {"agent_name": "gpt_pro", "content": "{...}"}]}),
        );
        assert_eq!(v.agents, vec!["gemini", "gpt_pro"]);
        assert_eq!(v.empty_proposals, 1);
    }

    #[test]
    fn the_latest_real_run_wins_and_templates_are_counted_apart() {
        let spec = SpecEvidence {
            syntheses: vec![
                parse_synthesis(
                    "a_synthesis.json",
                    &json!({"stage": "tasks", "status": "ok", "timestamp": "2025-01-02T00:00:00Z"}),
                ),
                parse_synthesis(
                    "b_synthesis.json",
                    &json!({"stage": "tasks", "status": "hold", "timestamp": "2025-01-03T00:00:00Z"}),
                ),
                parse_synthesis(
                    "spec-tasks_2025-02-01T00:00:00Z_synthesis.json",
                    &json!({"stage": "${stage}", "status": "ok"}),
                ),
                parse_synthesis(
                    "plan_synthesis.json",
                    &json!({"stage": "plan", "status": "ok"}),
                ),
            ],
            ..SpecEvidence::default()
        };
        let stages = stages(&spec);
        assert_eq!(
            stages.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(),
            ["plan", "tasks"]
        );
        assert_eq!(stages[1].latest.unwrap().status, "hold");
        assert_eq!((stages[1].runs, stages[1].templates), (2, 1));
    }
}
