//! `init`: a commented `speckit.toml` for the repository in the current folder (or
//! `--dir`), so that no command has to run on defaults that belong to no repository.
//!
//! It looks, at most [`MAX_DEPTH`] folders deep, for the evidence root (a folder whose
//! `commands/` or `consensus/` holds `SPEC-*` folders, upstream's layout) and for SPEC
//! trackers (files named like the default tracker, `SPEC.md`, that retention's own parser
//! finds a tracker table in). The database goes where `--database` says: `repo`, a file
//! of this repository's own (the default, said in the output and the file), or `host`,
//! the host application's shared one. Whatever it did not find is said, and the file is
//! written anyway (a root left commented out at its default).
//!
//! It never replaces a `speckit.toml` without `--force` (exit 2), and writes it
//! atomically with retention's `write_atomic`, so a crash leaves no half a file.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use super::{GlobalArgs, UsageError, DEFAULT_CONFIG, EXIT_OK};
use speckit_retention::fsutil::write_atomic;
use speckit_retention::layout::{tracker_id, EvidenceKind};
use speckit_retention::tracker::{TrackerSummary, Trackers};
use speckit_retention::EvidencePolicy;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The repository to set up; speckit.toml is written here [default: the current
    /// folder].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Where the consensus database is: `repo` (.speckit/consensus_artifacts.db in the
    /// repository, this repository's alone) or `host` (the host application's
    /// ~/.code/consensus_artifacts.db, shared by every repository) [default: repo].
    #[arg(long, value_enum, value_name = "WHERE")]
    database: Option<DatabaseChoice>,
    /// Replace an existing speckit.toml.
    #[arg(long)]
    force: bool,
}

/// Where the database goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatabaseChoice {
    /// A file of this repository's own: `.speckit/consensus_artifacts.db`.
    Repo,
    /// The host application's `~/.code/consensus_artifacts.db`, shared by every repository.
    Host,
}

/// The per-repository database, relative to the config file: a hidden folder of the tool's
/// own state, named like the host's file so it is recognised as the same kind.
pub const REPO_DATABASE: &str = ".speckit/consensus_artifacts.db";
/// The host application's database (the engine's default).
pub const HOST_DATABASE: &str = "~/.code/consensus_artifacts.db";
/// How deep the search goes: upstream's root is 3 folders down (`docs/SPEC-OPS-004-.../
/// evidence`), its second copy 4 (`codex-rs/docs/...`).
pub const MAX_DEPTH: usize = 5;
/// A bound on the folders looked at, for a huge work tree (or a symlink loop).
const MAX_FOLDERS: usize = 20_000;
/// Folders never searched: build output and dependencies hold no evidence, and hidden ones
/// (`.git`, `.speckit`) are tools' state.
const SKIPPED: [&str; 2] = ["target", "node_modules"];

/// An evidence root found under the repository.
#[derive(Debug, Clone)]
struct FoundRoot {
    /// Relative to the repository.
    relative: PathBuf,
    /// The SPEC folders under its `commands/` and `consensus/` (a SPEC may have both).
    folders: BTreeSet<String>,
}

/// A file named like a tracker, and what retention's parser made of it.
#[derive(Debug, Clone)]
struct FoundTracker {
    relative: PathBuf,
    summary: TrackerSummary,
}

/// Everything the search found.
#[derive(Debug, Default)]
struct Found {
    /// The root used, then the others (one root per speckit.toml).
    roots: Vec<FoundRoot>,
    /// Files that hold a tracker table (used) and files that do not (reported).
    trackers: Vec<FoundTracker>,
    not_trackers: Vec<PathBuf>,
    /// The search stopped at [`MAX_FOLDERS`].
    truncated: bool,
}

impl Found {
    fn root(&self) -> Option<&FoundRoot> {
        self.roots.first()
    }

    /// SPECs under the root used, counted as retention counts them: folder names mapped
    /// to the trackers' IDs (`SPEC-KIT-025-add-...` and its truncated twin are one SPEC).
    fn spec_count(&self, dir: &Path) -> usize {
        let Some(root) = self.root() else { return 0 };
        let paths: Vec<PathBuf> = self
            .trackers
            .iter()
            .map(|t| dir.join(&t.relative))
            .collect();
        let trackers = Trackers::load(&paths).unwrap_or_default();
        let ids: Vec<&str> = trackers.ids().collect();
        let specs: BTreeSet<String> = root
            .folders
            .iter()
            .map(|folder| tracker_id(folder, ids.iter().copied()))
            .collect();
        specs.len()
    }
}

pub fn init(global: &GlobalArgs, args: InitArgs) -> Result<u8> {
    if let Some(config) = &global.config {
        anyhow::bail!(UsageError(format!(
            "init writes DIR/speckit.toml (DIR: --dir, else the current folder), not --config {}: pass --dir to choose the folder",
            config.display()
        )));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        anyhow::bail!(UsageError(format!("--dir {}: not a folder", dir.display())));
    }
    let config = dir.join(DEFAULT_CONFIG);
    refuse_existing(&config, args.force)?;
    let found = search(&dir);
    let database = args.database.unwrap_or(DatabaseChoice::Repo);
    let text = render(&found, &dir, database, args.database.is_none());
    write_atomic(&config, text.as_bytes())
        .with_context(|| format!("writing {}", config.display()))?;
    report(&dir, &config, &found, database, args.database.is_none());
    Ok(EXIT_OK)
}

/// An existing file (or anything at that name) is kept unless `--force`.
fn refuse_existing(config: &Path, force: bool) -> Result<()> {
    if force || std::fs::symlink_metadata(config).is_err() {
        return Ok(());
    }
    let shown = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    anyhow::bail!(UsageError(format!(
        "{} already exists: init does not replace it (pass --force to overwrite it)",
        shown.display()
    )))
}

/// Breadth first from `dir`: roots are not searched further (their own `SPEC.md`, if any,
/// is evidence, not the tracker); trackers are files named like the default tracker.
fn search(dir: &Path) -> Found {
    let tracker_names = default_tracker_names();
    let mut found = Found::default();
    let mut roots = Vec::new();
    let mut queue = VecDeque::from([(PathBuf::new(), 0)]);
    let mut visited = 0;
    while let Some((relative, depth)) = queue.pop_front() {
        visited += 1;
        if visited > MAX_FOLDERS {
            found.truncated = true;
            break;
        }
        let folder = dir.join(&relative);
        if let Some(folders) = spec_folders(&folder) {
            roots.push(FoundRoot { relative, folders });
            continue;
        }
        for (name, is_dir) in entries(&folder) {
            let child = relative.join(&name);
            if is_dir && depth < MAX_DEPTH && !skipped(&name) {
                queue.push_back((child, depth + 1));
            } else if !is_dir && tracker_names.contains(&name) {
                add_tracker(&mut found, dir, child);
            }
        }
    }
    found.roots = ranked(roots);
    found
}

/// `SPEC.md` (the file names of the default `evidence.tracker_paths`).
fn default_tracker_names() -> BTreeSet<String> {
    EvidencePolicy::default()
        .tracker_paths
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect()
}

fn skipped(name: &str) -> bool {
    name.starts_with('.') || SKIPPED.contains(&name)
}

/// A folder's entries, sorted, as (name, is a folder); symlinks are followed (the search
/// is bounded by depth and count), names that are not UTF-8 are left out (they cannot be
/// written into the file as they are), unreadable folders give nothing.
fn entries(folder: &Path) -> Vec<(String, bool)> {
    let Ok(read) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut out: Vec<(String, bool)> = read
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let meta = std::fs::metadata(entry.path()).ok()?;
            Some((name, meta.is_dir()))
        })
        .collect();
    out.sort();
    out
}

/// The SPEC folders of `folder` when it is an evidence root: its `commands/` or
/// `consensus/` holds at least one folder named `SPEC-*`. Every folder there is counted
/// then, as retention's layout counts it.
fn spec_folders(folder: &Path) -> Option<BTreeSet<String>> {
    let folders: BTreeSet<String> = EvidenceKind::ALL
        .iter()
        .flat_map(|kind| entries(&folder.join(kind.dir_name())))
        .filter(|(_, is_dir)| *is_dir)
        .map(|(name, _)| name)
        .collect();
    folders
        .iter()
        .any(|name| name.starts_with("SPEC-"))
        .then_some(folders)
}

/// Parses a tracker candidate with retention's parser: used when it holds a tracker table.
fn add_tracker(found: &mut Found, dir: &Path, relative: PathBuf) {
    match TrackerSummary::read(&dir.join(&relative)) {
        Ok(summary) if summary.status_tables > 0 => {
            found.trackers.push(FoundTracker { relative, summary })
        }
        _ => found.not_trackers.push(relative),
    }
}

/// The root to use first: upstream's place when it is there, else the one with the most
/// SPEC folders, else the shallowest.
fn ranked(mut roots: Vec<FoundRoot>) -> Vec<FoundRoot> {
    let upstream = EvidencePolicy::default().root;
    roots.sort_by(|a, b| {
        (b.relative == upstream)
            .cmp(&(a.relative == upstream))
            .then(b.folders.len().cmp(&a.folders.len()))
            .then(
                a.relative
                    .components()
                    .count()
                    .cmp(&b.relative.components().count()),
            )
            .then(a.relative.cmp(&b.relative))
    });
    roots
}

/// A TOML string (quoted and escaped).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A relative path as written in the file (found paths are UTF-8, see [`entries`]).
/// The repository folder itself (init run inside the evidence root) is `.`.
fn path_text(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        return ".".to_string();
    }
    path.to_string_lossy().into_owned()
}

/// The whole file: every key it sets explained in a comment above it.
fn render(found: &Found, dir: &Path, database: DatabaseChoice, defaulted: bool) -> String {
    let mut out = String::from(
        "# speckit-hygiene policy for this repository, written by `speckit-hygiene init`.\n\
         # `speckit-hygiene check` validates it, checks what it points at (the evidence root,\n\
         # the trackers, the database's folder) and prints every value with its origin.\n\
         # Keys not written here take their defaults; config/speckit.toml in speckit-hygiene's\n\
         # source documents every key. Relative paths resolve against this file's folder; `~`\n\
         # is the home folder. `speckit-hygiene run` reloads this file when it changes.\n\n",
    );
    out.push_str("[storage]\n");
    out.push_str(&database_comment(database, defaulted));
    let path = match database {
        DatabaseChoice::Repo => REPO_DATABASE,
        DatabaseChoice::Host => HOST_DATABASE,
    };
    out.push_str(&format!("database_path = {}\n\n", toml_string(path)));
    out.push_str("[evidence]\n");
    out.push_str(&root_lines(found, dir));
    out.push_str(&tracker_lines(found));
    out.push_str(
        "\n# Everything else (ages, size limits, statuses, schedules) takes its default; set a\n\
         # key to change it, for example:\n\
         # [retention]\n\
         # archive_after_days = 30   # evidence of finished SPECs older than this is archived\n",
    );
    out
}

/// Why the database is where it is, and what the other choice would mean.
fn database_comment(database: DatabaseChoice, defaulted: bool) -> String {
    match database {
        DatabaseChoice::Repo => format!(
            "# The consensus database: per repository ({}).\n\
             # Created by the first command that writes, it holds this repository's job history,\n\
             # archive records and spawn metrics, so `speckit-hygiene jobs` here lists only this\n\
             # repository's runs. Keep it out of version control (add .speckit/ to .gitignore).\n\
             # The spec-kit host application keeps its consensus runs in\n\
             # {HOST_DATABASE}; to keep that file healthy (vacuum, archived rows of\n\
             # finished SPECs), set that path here (`speckit-hygiene init --database host`).\n\
             # Changing it needs a restart of `run`.\n",
            if defaulted {
                "the default, as init was run without --database"
            } else {
                "--database repo"
            }
        ),
        DatabaseChoice::Host => format!(
            "# The consensus database: the spec-kit host application's own (--database host),\n\
             # shared by every repository on this machine. Vacuum shrinks the file the host\n\
             # uses, cleanup archives its rows of finished SPECs, and `speckit-hygiene jobs`\n\
             # lists the runs of every repository set up this way. For a database of this\n\
             # repository's own, set {REPO_DATABASE:?}.\n\
             # Changing it needs a restart of `run`.\n"
        ),
    }
}

/// `root = ...` with what was found, or the default commented out with what was not.
fn root_lines(found: &Found, dir: &Path) -> String {
    let mut out = String::from(
        "# The evidence root: commands/<SPEC-ID>/ and consensus/<SPEC-ID>/ live under it.\n",
    );
    match found.root() {
        Some(root) => {
            out.push_str(&format!(
                "# init found it holding {}.\n",
                spec_figures(found.spec_count(dir), root.folders.len())
            ));
            for other in &found.roots[1..] {
                out.push_str(&format!(
                    "# Also holding SPEC evidence, not used here (one root per speckit.toml; give it\n\
                     # a speckit.toml of its own): {}\n",
                    path_text(&other.relative)
                ));
            }
            out.push_str(&format!(
                "root = {}\n",
                toml_string(&path_text(&root.relative))
            ));
        }
        None => {
            let default = EvidencePolicy::default().root;
            out.push_str(&format!(
                "# init found none under this folder (it looks for commands/SPEC-*/ or\n\
                 # consensus/SPEC-*/ up to {MAX_DEPTH} folders deep), so the default, upstream's place,\n\
                 # is left commented out and applies. Set it once spec-kit has written evidence;\n\
                 # until then `speckit-hygiene check` reports the root as missing.\n\
                 # root = {}\n",
                toml_string(&path_text(&default))
            ));
        }
    }
    out
}

/// `tracker_paths = [...]`: every tracker found (more rows only protect more), or none.
fn tracker_lines(found: &Found) -> String {
    let mut out = String::from(
        "# SPEC trackers: Markdown files whose tables have an ID column (Task ID, Spec ID, Spec,\n\
         # ID or Item) and a Status column. A SPEC is archived only when every row of every\n\
         # tracker gives it a finished status (retention.finished_statuses); a SPEC in no\n\
         # tracker is protected (retention.untracked_specs).\n",
    );
    if found.trackers.is_empty() {
        out.push_str(
            "# init found none (no SPEC.md holding such a table), so none is listed: every SPEC\n\
             # is untracked and protected (never archived) until you list yours, e.g. [\"SPEC.md\"].\n\
             tracker_paths = []\n",
        );
        return out;
    }
    out.push_str("# init found these (every one is listed, so no row is missed):\n");
    for t in &found.trackers {
        out.push_str(&format!(
            "#   {}: {}\n",
            path_text(&t.relative),
            tracker_figures(&t.summary)
        ));
    }
    let paths: Vec<toml::Value> = found
        .trackers
        .iter()
        .map(|t| toml::Value::String(path_text(&t.relative)))
        .collect();
    out.push_str(&format!("tracker_paths = {}\n", toml::Value::Array(paths)));
    out
}

/// `3 SPECs`, `1 SPEC folder`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `11 SPECs in 12 SPEC folders`.
fn spec_figures(specs: usize, folders: usize) -> String {
    format!(
        "{} in {}",
        count(specs, "SPEC"),
        count(folders, "SPEC folder")
    )
}

/// `91 status rows, 91 SPECs`.
fn tracker_figures(summary: &TrackerSummary) -> String {
    format!(
        "{}, {}",
        count(summary.status_rows, "status row"),
        count(summary.specs, "SPEC")
    )
}

/// What was found, what was not, and what was written (stdout: it is the command's result).
fn report(dir: &Path, config: &Path, found: &Found, database: DatabaseChoice, defaulted: bool) {
    let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    println!(
        "Looked for the evidence root and the SPEC trackers under {}:",
        shown.display()
    );
    match found.root() {
        Some(root) => println!(
            "  evidence root   {}: {}",
            path_text(&root.relative),
            spec_figures(found.spec_count(dir), root.folders.len())
        ),
        None => println!(
            "  evidence root   not found (no commands/SPEC-*/ or consensus/SPEC-*/ within {MAX_DEPTH} folders): the default {} is left commented out; set [evidence] root once spec-kit has written evidence",
            path_text(&EvidencePolicy::default().root)
        ),
    }
    for other in found.roots.iter().skip(1) {
        println!(
            "  also evidence   {} ({}): not used, one root per speckit.toml",
            path_text(&other.relative),
            count(other.folders.len(), "SPEC folder")
        );
    }
    for t in &found.trackers {
        println!(
            "  SPEC tracker    {}: {}",
            path_text(&t.relative),
            tracker_figures(&t.summary)
        );
    }
    for path in &found.not_trackers {
        println!(
            "  not a tracker   {}: no table with an ID column and a Status column",
            path_text(path)
        );
    }
    if found.trackers.is_empty() {
        println!("  SPEC tracker    not found (no SPEC.md holding a table with an ID column and a Status column): tracker_paths = [], so every SPEC is protected until you list yours");
    }
    if found.truncated {
        println!("  (the search stopped after {MAX_FOLDERS} folders; run init nearer the evidence with --dir)");
    }
    match database {
        DatabaseChoice::Repo if defaulted => println!(
            "  database        {REPO_DATABASE}, per repository (no --database given; --database host uses the host's {HOST_DATABASE})"
        ),
        DatabaseChoice::Repo => println!("  database        {REPO_DATABASE}, per repository (--database repo)"),
        DatabaseChoice::Host => println!(
            "  database        {HOST_DATABASE}, the host application's, shared by every repository (--database host)"
        ),
    }
    let written = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    println!("Wrote {}.", written.display());
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", shown.display())
    };
    if found.root().is_some() {
        println!("Next: {cd}speckit-hygiene check, then speckit-hygiene cleanup --dry-run");
    } else {
        println!(
            "Next: set [evidence] root in {} (until then `speckit-hygiene check` reports the evidence root as missing)",
            written.display()
        );
    }
}
