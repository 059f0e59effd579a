//! `archives [--spec SPEC] [--json]`: every recorded archive and where it is: `local`,
//! `remote` (offloaded, its local copy deleted), `both` (offloaded, local copy not
//! deleted yet), `missing` (recorded, unpurged, in neither place: `cleanup` reports it as
//! damage) or `purged`. Reads only (the database read-only, the archive folder by `lstat`).

use anyhow::Result;
use clap::Args;
use speckit_engine::units::human_bytes;
use speckit_engine::SpecId;
use speckit_retention::offload::{locations, ArchiveLocation, Whereabouts};
use speckit_retention::EvidencePolicy;

use super::{GlobalArgs, EXIT_OK};

#[derive(Debug, Args)]
pub struct ArchivesArgs {
    /// Only the archives of this SPEC (a folder name or a tracker ID).
    #[arg(long, value_name = "SPEC-ID", value_parser = super::cleanup::parse_spec_id)]
    spec: Option<SpecId>,
    /// Print JSON (one object per archive) instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

pub async fn archives(global: &GlobalArgs, args: ArchivesArgs) -> Result<u8> {
    let engine = super::start_engine(global, super::Access::ReadOnly).await?;
    let root = engine
        .policy()
        .policy
        .section::<EvidencePolicy>()
        .root
        .clone();
    let storage = engine.storage().clone();
    let spec = args.spec.clone();
    let listed =
        tokio::task::spawn_blocking(move || locations(&root, &storage, spec.as_ref())).await?;
    engine.shutdown(std::time::Duration::from_secs(5)).await;
    let listed = listed?;
    if args.json {
        super::json::print_data("archives", &serde_json::json!({ "archives": listed }));
        return Ok(EXIT_OK);
    }
    if listed.is_empty() {
        eprintln!(
            "no archive is recorded{}",
            match &args.spec {
                Some(s) => format!(" for {s}"),
                None => String::new(),
            }
        );
        return Ok(EXIT_OK);
    }
    print_table(&listed);
    Ok(EXIT_OK)
}

fn where_text(l: &ArchiveLocation) -> &'static str {
    match l.location {
        Whereabouts::Local => "local",
        Whereabouts::Remote => "remote",
        Whereabouts::Both => "both",
        Whereabouts::Missing => "MISSING",
        Whereabouts::Purged => "purged",
    }
}

fn print_table(listed: &[ArchiveLocation]) {
    println!(
        "{:<8} {:>10}  {:<20} {:<24} archive / remote URL",
        "where", "size", "created (UTC)", "SPEC"
    );
    for l in listed {
        let created = l
            .created_at
            .get(..19)
            .unwrap_or(&l.created_at)
            .replace('T', " ");
        println!(
            "{:<8} {:>10}  {:<20} {:<24} {}",
            where_text(l),
            human_bytes(l.bytes),
            created,
            l.spec,
            l.path
        );
        if let Some(url) = &l.remote_url {
            println!("{:<66} -> {url}", "");
        }
    }
    let count = |w: Whereabouts| listed.iter().filter(|l| l.location == w).count();
    println!(
        "{} archive(s): {} local, {} remote, {} both, {} missing, {} purged",
        listed.len(),
        count(Whereabouts::Local),
        count(Whereabouts::Remote),
        count(Whereabouts::Both),
        count(Whereabouts::Missing),
        count(Whereabouts::Purged)
    );
}
