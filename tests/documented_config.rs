//! `config/speckit.toml` documents every field of every compiled-in plugin's section and
//! of the engine's own, with its default: loading it must give exactly the defaults.

use speckit_engine::policy::{load_policy, Origin};
use std::path::Path;

#[test]
fn the_documented_file_holds_every_default_and_nothing_else() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/speckit.toml");
    let shape = speckit_hygiene::builtin_shape();
    let documented = load_policy(&path, true, Vec::new(), &shape).unwrap();
    // The same folder without the file: built-in defaults, paths resolved alike.
    let absent = path.with_file_name("no-such-speckit.toml");
    let defaults = load_policy(&absent, false, Vec::new(), &shape).unwrap();
    assert_eq!(documented.policy, defaults.policy);

    let undocumented: Vec<_> = documented
        .origins
        .iter()
        .filter(|(key, origin)| {
            **origin == Origin::Default
                && !key.starts_with("spawn.agents")
                && !key.starts_with("plugins")
        })
        .map(|(key, _)| key.clone())
        .collect();
    assert!(
        undocumented.is_empty(),
        "undocumented keys: {undocumented:?}"
    );
    // Every section and every job of the compiled-in plugins is there.
    for section in [
        "storage",
        "schedule",
        "evidence",
        "retention",
        "offload",
        "vacuum",
        "spawn",
    ] {
        assert!(
            documented
                .origins
                .keys()
                .any(|k| k.starts_with(&format!("{section}."))),
            "[{section}] is not documented"
        );
    }
    for job in ["cleanup", "vacuum", "integrity_check", "restore", "spawn"] {
        assert!(
            documented.policy.schedule.jobs.contains_key(job),
            "job {job} has no schedule entry"
        );
    }
}
