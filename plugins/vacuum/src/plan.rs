//! What a `vacuum` run does: its options (`dry_run`, `force`) and the decision taken from
//! the database's auto-vacuum mode, its free pages and the policy.

use crate::VacuumPolicy;

use crate::measure::{AutoVacuum, PageStats};
use crate::render::percent_text;
use crate::report::Action;

/// The options a `vacuum` run takes in `ctx.args` (read by
/// [`speckit_engine::parse_job_options`]: unknown or mistyped options are refused, so a
/// host's typo is not silently a real vacuum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VacuumOptions {
    /// Measure, check and say what would happen; change nothing.
    pub dry_run: bool,
    /// Vacuum even when the free fraction is below the policy's threshold.
    pub force: bool,
}

/// What to do with a database in this state under this policy.
pub fn decide(pages: &PageStats, policy: &VacuumPolicy, force: bool) -> (Action, Option<String>) {
    match pages.auto_vacuum {
        AutoVacuum::None if policy.migrate_to_incremental => (Action::Migrate, None),
        AutoVacuum::None => (
            Action::None,
            Some(format!(
                "auto_vacuum is NONE and [vacuum] migrate_to_incremental is false, so its {} free pages can only be returned by a full VACUUM",
                pages.freelist_count
            )),
        ),
        AutoVacuum::Full => (
            Action::None,
            Some("auto_vacuum is FULL: SQLite returns free pages at every commit".into()),
        ),
        AutoVacuum::Incremental if pages.freelist_count == 0 => {
            (Action::None, Some("there are no free pages".into()))
        }
        AutoVacuum::Incremental
            if !force && pages.free_fraction() < policy.free_fraction_threshold =>
        {
            (
                Action::None,
                Some(format!(
                    "{} of its pages are free, below the threshold of {} (--force vacuums anyway)",
                    percent_text(pages.free_fraction()),
                    percent_text(policy.free_fraction_threshold)
                )),
            )
        }
        AutoVacuum::Incremental => (Action::Incremental, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(auto_vacuum: AutoVacuum, page_count: i64, freelist_count: i64) -> PageStats {
        PageStats {
            page_size: 4096,
            page_count,
            freelist_count,
            auto_vacuum,
        }
    }

    #[test]
    fn none_databases_are_migrated_whatever_their_free_fraction_unless_switched_off() {
        let mut policy = VacuumPolicy::default();
        assert_eq!(
            decide(&pages(AutoVacuum::None, 100, 1), &policy, false).0,
            Action::Migrate
        );
        policy.migrate_to_incremental = false;
        let (action, reason) = decide(&pages(AutoVacuum::None, 100, 50), &policy, true);
        assert_eq!(action, Action::None);
        assert!(reason.unwrap().contains("50 free pages"));
    }

    #[test]
    fn the_threshold_is_inclusive_and_force_overrides_it() {
        let policy = VacuumPolicy {
            free_fraction_threshold: 0.25,
            ..VacuumPolicy::default()
        };
        let below = pages(AutoVacuum::Incremental, 100, 24);
        let at = pages(AutoVacuum::Incremental, 100, 25);
        assert_eq!(decide(&below, &policy, false).0, Action::None);
        assert_eq!(decide(&below, &policy, true).0, Action::Incremental);
        assert_eq!(decide(&at, &policy, false).0, Action::Incremental);
        let (action, reason) = decide(&pages(AutoVacuum::Incremental, 100, 0), &policy, true);
        assert_eq!(
            (action, reason.as_deref()),
            (Action::None, Some("there are no free pages"))
        );
        assert_eq!(
            decide(&pages(AutoVacuum::Full, 100, 3), &policy, true).0,
            Action::None
        );
    }

    #[test]
    fn options_accept_booleans_only() {
        let parse =
            |v: serde_json::Value| speckit_engine::parse_job_options::<VacuumOptions>("vacuum", &v);
        assert_eq!(
            parse(serde_json::Value::Null).unwrap(),
            VacuumOptions::default()
        );
        let both = parse(serde_json::json!({"dry_run": true, "force": true})).unwrap();
        assert!(both.dry_run && both.force);
        assert!(parse(serde_json::json!({"force": 1})).is_err());
        assert!(parse(serde_json::json!({"dry-run": true})).is_err());
        assert!(parse(serde_json::json!("dry_run")).is_err());
    }
}
