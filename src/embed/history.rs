//! Recent job runs as the engine recorded them in `hygiene_job_runs`, for a host to show
//! the last reports (including runs from before it started, and from other engines sharing
//! the database).

use chrono::{DateTime, Utc};
use serde::Serialize;

use speckit_engine::{JobReport, Storage, StorageError};

/// One recorded job run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub run_id: i64,
    pub job: String,
    pub plugin: String,
    /// `schedule`, `catch_up` or `manual`.
    pub trigger: String,
    pub engine_id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `failed` or `skipped`.
    pub outcome: String,
    pub report: Option<JobReport>,
    pub error: Option<String>,
}

impl JobRecord {
    /// The report's one-line summary, else the error.
    pub fn summary(&self) -> &str {
        self.report
            .as_ref()
            .map(|r| r.summary.as_str())
            .or(self.error.as_deref())
            .unwrap_or("")
    }
}

/// The newest `limit` runs, newest first; none when the engine's tables do not exist yet
/// (a host database no writing engine has opened).
pub async fn recent(storage: &Storage, limit: u32) -> Result<Vec<JobRecord>, StorageError> {
    storage
        .read(move |conn| {
            if !speckit_engine::storage::table_exists(conn, "hygiene_job_runs")? {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare(
                "SELECT id, job, plugin, trigger, engine_id, started_at, finished_at, outcome, report_json \
                 FROM hygiene_job_runs ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                let report_json: Option<String> = r.get(8)?;
                let (report, error) = parse_report(report_json.as_deref());
                Ok(JobRecord {
                    run_id: r.get(0)?,
                    job: r.get(1)?,
                    plugin: r.get(2)?,
                    trigger: r.get(3)?,
                    engine_id: r.get(4)?,
                    started_at: r.get::<_, Option<i64>>(5)?.and_then(DateTime::from_timestamp_millis),
                    finished_at: r.get::<_, Option<i64>>(6)?.and_then(DateTime::from_timestamp_millis),
                    outcome: r.get(7)?,
                    report,
                    error,
                })
            })?;
            rows.collect()
        })
        .await
}

/// The engine stores `{"report": JobReport | null, "error": string | null}`; a row it could
/// not parse (written by another version) shows as an error rather than vanishing.
fn parse_report(json: Option<&str>) -> (Option<JobReport>, Option<String>) {
    let Some(json) = json else {
        return (None, None);
    };
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(value) => (
            value
                .get("report")
                .filter(|r| !r.is_null())
                .and_then(|r| serde_json::from_value(r.clone()).ok()),
            value
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string),
        ),
        Err(e) => (None, Some(format!("unreadable report: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_errors_parse() {
        let (report, error) = parse_report(Some(
            r#"{"report":{"summary":"freed 3 pages","data":{}},"error":null}"#,
        ));
        assert_eq!(report.unwrap().summary, "freed 3 pages");
        assert_eq!(error, None);
        let (report, error) = parse_report(Some(r#"{"report":null,"error":"boom"}"#));
        assert!(report.is_none());
        assert_eq!(error.as_deref(), Some("boom"));
        let (_, error) = parse_report(Some("{not json"));
        assert!(error.unwrap().starts_with("unreadable report"));
        assert_eq!(parse_report(None), (None, None));
    }
}
