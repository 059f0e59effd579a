//! Typed job options: every compiled-in job reads `ctx.args` into its own struct (serde,
//! `deny_unknown_fields`), so a typo such as `{"dryrun": true}` or a mistyped value such as
//! `{"dry_run": "true"}` is refused with the option's name instead of running a real job.

use serde::de::DeserializeOwned;

use crate::plugin::PluginError;

/// Reads a job's options. `null` (a scheduled run) and `{}` both mean "every option at its
/// default", so a struct with a required field reports it missing by name.
///
/// The error names the job, the option (its path inside the object) and the cause:
/// `cleanup: option dry_run: invalid type: string "true", expected a boolean`.
pub fn parse_job_options<T: DeserializeOwned>(
    job: &str,
    args: &serde_json::Value,
) -> Result<T, PluginError> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let args = match args {
        serde_json::Value::Null => &empty,
        serde_json::Value::Object(_) => args,
        other => {
            return Err(PluginError::InvalidArgs(format!(
                "{job}: options must be an object like {{\"dry_run\": true}}, got {other}"
            )))
        }
    };
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let cause = e.into_inner();
        if path == "." {
            PluginError::InvalidArgs(format!("{job}: {cause}"))
        } else {
            PluginError::InvalidArgs(format!("{job}: option {path}: {cause}"))
        }
    })
}

/// The options of a job that takes none: any key is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        dry_run: bool,
        spec: Option<crate::SpecId>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Required {
        spec: String,
    }

    fn message(r: Result<impl std::fmt::Debug, PluginError>) -> String {
        match r {
            Err(PluginError::InvalidArgs(m)) => m,
            other => panic!("expected InvalidArgs, got {other:?}"),
        }
    }

    #[test]
    fn null_and_empty_object_are_defaults() {
        let a: Example = parse_job_options("x", &serde_json::Value::Null).unwrap();
        let b: Example = parse_job_options("x", &json!({})).unwrap();
        assert_eq!(a, Example::default());
        assert_eq!(b, Example::default());
    }

    #[test]
    fn unknown_option_is_refused_by_name() {
        let m = message(parse_job_options::<Example>(
            "cleanup",
            &json!({"dryrun": true}),
        ));
        assert!(m.contains("cleanup") && m.contains("dryrun"), "{m}");
        assert!(m.contains("dry_run"), "names the options it takes: {m}");
    }

    #[test]
    fn mistyped_option_is_refused_by_name() {
        let m = message(parse_job_options::<Example>(
            "cleanup",
            &json!({"dry_run": "true"}),
        ));
        assert!(m.contains("option dry_run") && m.contains("boolean"), "{m}");
    }

    #[test]
    fn invalid_spec_id_gives_its_reason() {
        let m = message(parse_job_options::<Example>(
            "cleanup",
            &json!({"spec": "../x"}),
        ));
        assert!(
            m.contains("option spec") && m.contains("path separator"),
            "{m}"
        );
    }

    #[test]
    fn missing_required_option_is_named() {
        let m = message(parse_job_options::<Required>(
            "restore",
            &serde_json::Value::Null,
        ));
        assert!(m.contains("restore") && m.contains("spec"), "{m}");
    }

    #[test]
    fn not_an_object_is_refused() {
        let m = message(parse_job_options::<Example>("vacuum", &json!([1])));
        assert!(m.contains("must be an object"), "{m}");
    }

    #[test]
    fn no_options_refuses_any_key() {
        assert!(parse_job_options::<NoOptions>("integrity_check", &json!({})).is_ok());
        let m = message(parse_job_options::<NoOptions>(
            "integrity_check",
            &json!({"quick": true}),
        ));
        assert!(m.contains("quick"), "{m}");
    }
}
