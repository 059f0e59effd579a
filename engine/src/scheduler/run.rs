//! One scheduled run, as its own task: claim the tick (or the missed run) in the database,
//! run the job while renewing the lease, then record the outcome and release the lease.

use chrono::{DateTime, Utc};
use std::time::Duration;

use super::lease::{self, CatchUp, Claim, Claimant};
use crate::cron_expr::{CronSchedule, ScheduleTz};
use crate::events::{EngineEvent, JobOutcome};
use crate::plugin::JobTrigger;
use crate::Engine;

/// Runs `who.job` for cron tick `tick` if this engine wins the claim.
pub async fn fire_tick(engine: Engine, who: Claimant, tick: DateTime<Utc>) {
    let now = engine.clock().now();
    match lease::claim_tick(engine.storage(), &who, tick, now).await {
        Ok(Claim::Claimed) => {
            run_leased(&engine, &who, JobTrigger::Schedule { fire_at: tick }).await
        }
        Ok(Claim::AlreadyFired { last_fire_at }) => {
            // The normal case for every engine but one when several share a database.
            tracing::debug!(job = %who.job, %tick, %last_fire_at, "tick already run by another engine");
        }
        Ok(Claim::Leased { owner, expires_at }) => {
            skipped_for_lease(&engine, &who.job, &owner, expires_at)
        }
        Err(e) => tracing::error!(%tick, "tick not run: {e}"),
    }
}

/// Runs `who.job` once now if it missed a fire time while no engine ran (and this engine
/// wins the claim).
pub async fn catch_up(engine: Engine, who: Claimant, schedule: CronSchedule, tz: ScheduleTz) {
    let now = engine.clock().now();
    match lease::claim_catch_up(engine.storage(), &who, &schedule, tz, now).await {
        Ok(CatchUp::Owed {
            missed_at,
            claim: Claim::Claimed,
        }) => {
            tracing::info!(job = %who.job, %missed_at, "missed while no engine ran; running it once now");
            run_leased(&engine, &who, JobTrigger::CatchUp { missed_at }).await
        }
        Ok(CatchUp::Owed {
            claim: Claim::Leased { owner, expires_at },
            ..
        }) => skipped_for_lease(&engine, &who.job, &owner, expires_at),
        Ok(CatchUp::Owed {
            claim: Claim::AlreadyFired { .. },
            ..
        })
        | Ok(CatchUp::NotOwed) => {
            tracing::debug!(job = %who.job, "no run missed")
        }
        Ok(CatchUp::FirstSeen) => {
            tracing::debug!(job = %who.job, "no run recorded yet; downtime counts from now")
        }
        Err(e) => tracing::error!("catch-up not run: {e}"),
    }
}

/// Runs the job under a claimed lease, renewing the lease every third of its length, and
/// releases it with the outcome at the end.
async fn run_leased(engine: &Engine, who: &Claimant, trigger: JobTrigger) {
    let renew_every = (who.lease.to_std().unwrap_or_default() / 3).max(Duration::from_secs(1));
    let mut renewals =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let run = engine.run_job(&who.job, trigger, serde_json::Value::Null);
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            result = &mut run => break result,
            _ = renewals.tick() => match lease::renew(engine.storage(), who, engine.clock().now()).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(job = %who.job, "lease lost while the job runs: another engine took it over after it expired"),
                Err(e) => tracing::warn!("{e}; will retry at the next renewal"),
            },
        }
    };
    let outcome = match &result {
        Ok(run) => match run.outcome {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Skipped => "skipped",
        },
        Err(e) => {
            tracing::error!(job = %who.job, "scheduled run failed to start: {e}");
            "failed"
        }
    };
    match lease::release(engine.storage(), who, engine.clock().now(), outcome).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            job = %who.job,
            outcome,
            "the lease had passed to another engine; its schedule state was left as that engine wrote it"
        ),
        Err(e) => tracing::error!("{e}; the lease will expire by itself"),
    }
}

fn skipped_for_lease(engine: &Engine, job: &str, owner: &str, expires_at: DateTime<Utc>) {
    let reason = format!("running in engine {owner} (its lease lasts until {expires_at})");
    tracing::warn!(job, "skipped: {reason}");
    engine.events().emit(EngineEvent::JobSkipped {
        job: job.to_string(),
        reason,
    });
}
