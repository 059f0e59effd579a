//! `spawn stats`: latency percentiles, success rates and parallel against sequential, read
//! from the metrics tables (never from memory: every figure is one a batch stored).
//!
//! Latencies are taken over successful spawns and fully successful batches (a timed-out
//! agent measures its timeout, not a spawn); success rates over all of them. A batch of two
//! or more agents is *sequential* when its effective concurrency
//! (`min(max_concurrency, agents)`) is 1, else *parallel*; they are compared per agent count.

use std::collections::BTreeMap;

use speckit_engine::storage::table_exists;
use speckit_engine::{Storage, StorageError};

/// Nearest-rank percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// `None` for an empty sample. Values are microseconds.
    pub fn of(mut micros: Vec<u64>) -> Option<Self> {
        if micros.is_empty() {
            return None;
        }
        micros.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            count: micros.len(),
            p50_ms: ms(percentile(&micros, 50.0)),
            p95_ms: ms(percentile(&micros, 95.0)),
            p99_ms: ms(percentile(&micros, 99.0)),
            max_ms: ms(*micros.last().unwrap_or(&0)),
        })
    }
}

pub use speckit_engine::units::percentile;

/// Parallel against sequential batches of one size.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub agents: usize,
    pub parallel: Percentiles,
    pub sequential: Percentiles,
    /// sequential p50 / parallel p50.
    pub speedup_p50: f64,
    /// sequential p95 / parallel p95.
    pub speedup_p95: f64,
}

/// Everything `spawn stats` prints.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpawnStats {
    pub batches: usize,
    pub batches_ok: usize,
    pub agents: usize,
    pub agents_ok: usize,
    /// agents_ok / agents, `None` without agents.
    pub agent_success_rate: Option<f64>,
    pub batch_success_rate: Option<f64>,
    /// Per-agent spawn time (request to running, ready and recorded), successful spawns.
    pub agent_spawn: Option<Percentiles>,
    /// Batch total (request to every agent initialised), fully successful batches.
    pub batch_total: Option<Percentiles>,
    /// Batch totals of parallel / sequential batches (two or more agents, all successful).
    pub parallel: Option<Percentiles>,
    pub sequential: Option<Percentiles>,
    /// Per agent count present in both modes.
    pub comparisons: Vec<Comparison>,
}

/// One stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSample {
    pub agent_count: usize,
    pub max_concurrency: usize,
    pub total_us: u64,
    pub failed_count: usize,
}

impl BatchSample {
    fn sequential(&self) -> bool {
        self.max_concurrency.min(self.agent_count) <= 1
    }
}

/// One stored agent spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentSample {
    pub spawn_us: u64,
    pub ok: bool,
}

/// Computes the statistics of stored samples.
pub fn compute(batches: &[BatchSample], agents: &[AgentSample]) -> SpawnStats {
    let ok_batches: Vec<&BatchSample> = batches.iter().filter(|b| b.failed_count == 0).collect();
    let agents_ok = agents.iter().filter(|a| a.ok).count();
    let rate = |part: usize, all: usize| (all > 0).then(|| part as f64 / all as f64);
    let multi = |sequential: bool| -> Vec<u64> {
        ok_batches
            .iter()
            .filter(|b| b.agent_count >= 2 && b.sequential() == sequential)
            .map(|b| b.total_us)
            .collect()
    };
    let mut by_size: BTreeMap<usize, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for b in ok_batches.iter().filter(|b| b.agent_count >= 2) {
        let entry = by_size.entry(b.agent_count).or_default();
        if b.sequential() {
            entry.1.push(b.total_us);
        } else {
            entry.0.push(b.total_us);
        }
    }
    let comparisons = by_size
        .into_iter()
        .filter_map(|(agents, (parallel, sequential))| {
            let parallel = Percentiles::of(parallel)?;
            let sequential = Percentiles::of(sequential)?;
            Some(Comparison {
                agents,
                speedup_p50: sequential.p50_ms / parallel.p50_ms,
                speedup_p95: sequential.p95_ms / parallel.p95_ms,
                parallel,
                sequential,
            })
        })
        .collect();
    SpawnStats {
        batches: batches.len(),
        batches_ok: ok_batches.len(),
        agents: agents.len(),
        agents_ok,
        agent_success_rate: rate(agents_ok, agents.len()),
        batch_success_rate: rate(ok_batches.len(), batches.len()),
        agent_spawn: Percentiles::of(agents.iter().filter(|a| a.ok).map(|a| a.spawn_us).collect()),
        batch_total: Percentiles::of(ok_batches.iter().map(|b| b.total_us).collect()),
        parallel: Percentiles::of(multi(false)),
        sequential: Percentiles::of(multi(true)),
        comparisons,
    }
}

/// Reads every finished batch and agent spawn from the metrics tables. No database (a
/// read-only open of a missing file) or no tables (a database spawn never wrote to, or
/// opened read-only before spawn's schema was applied) means no batches.
pub async fn load(storage: &Storage) -> Result<SpawnStats, StorageError> {
    if !storage.exists() {
        return Ok(compute(&[], &[]));
    }
    storage
        .read(|conn| {
            if !table_exists(conn, "hygiene_spawn_batches")?
                || !table_exists(conn, "hygiene_spawn_metrics")?
            {
                return Ok(compute(&[], &[]));
            }
            let mut batches = Vec::new();
            let mut stmt = conn.prepare(
                "SELECT agent_count, max_concurrency, total_us, failed_count FROM hygiene_spawn_batches WHERE total_us IS NOT NULL",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                batches.push(BatchSample {
                    agent_count: row.get::<_, i64>(0)?.max(0) as usize,
                    max_concurrency: row.get::<_, i64>(1)?.max(0) as usize,
                    total_us: row.get::<_, i64>(2)?.max(0) as u64,
                    failed_count: row.get::<_, Option<i64>>(3)?.unwrap_or(0).max(0) as usize,
                });
            }
            let mut agents = Vec::new();
            let mut stmt = conn.prepare("SELECT spawn_us, ok FROM hygiene_spawn_metrics")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                agents.push(AgentSample {
                    spawn_us: row.get::<_, i64>(0)?.max(0) as u64,
                    ok: row.get::<_, i64>(1)? != 0,
                });
            }
            Ok(compute(&batches, &agents))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sample: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sample, 50.0), 50);
        assert_eq!(percentile(&sample, 95.0), 95);
        assert_eq!(percentile(&sample, 99.0), 99);
        assert_eq!(percentile(&sample, 100.0), 100);
        assert_eq!(percentile(&[7], 95.0), 7);
        assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
        let p = Percentiles::of(vec![3000, 1000, 2000]).unwrap();
        assert_eq!((p.count, p.p50_ms, p.max_ms), (3, 2.0, 3.0));
        assert!(Percentiles::of(vec![]).is_none());
    }

    #[test]
    fn classifies_and_compares_modes() {
        let b = |agents, conc, ms: u64, failed| BatchSample {
            agent_count: agents,
            max_concurrency: conc,
            total_us: ms * 1000,
            failed_count: failed,
        };
        let batches = vec![
            b(3, 8, 50, 0),
            b(3, 8, 52, 0),
            b(3, 1, 150, 0),
            b(3, 1, 156, 0),
            b(3, 8, 9_000, 1), // failed: counted in the rate, not in latencies
            b(1, 8, 5, 0),     // one agent: neither mode
            b(2, 2, 40, 0),    // parallel, no sequential twin: no comparison
        ];
        let agents = vec![
            AgentSample {
                spawn_us: 1000,
                ok: true,
            },
            AgentSample {
                spawn_us: 9_000_000,
                ok: false,
            },
        ];
        let s = compute(&batches, &agents);
        assert_eq!((s.batches, s.batches_ok), (7, 6));
        assert_eq!(s.agent_success_rate, Some(0.5));
        assert_eq!(s.agent_spawn.as_ref().unwrap().max_ms, 1.0);
        assert_eq!(s.parallel.as_ref().unwrap().count, 3);
        assert_eq!(s.sequential.as_ref().unwrap().count, 2);
        assert_eq!(s.comparisons.len(), 1);
        let c = &s.comparisons[0];
        assert_eq!(c.agents, 3);
        assert_eq!(c.parallel.p95_ms, 52.0);
        assert_eq!(c.sequential.p95_ms, 156.0);
        assert!((c.speedup_p95 - 3.0).abs() < 1e-9);
    }

    #[test]
    fn empty_tables() {
        let s = compute(&[], &[]);
        assert_eq!(s.batches, 0);
        assert!(s.agent_success_rate.is_none() && s.agent_spawn.is_none());
        assert!(s.comparisons.is_empty());
    }
}
