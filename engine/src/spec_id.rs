//! SPEC identifiers, validated so that one can never name a path outside its folder.

use std::fmt;

/// A SPEC identifier such as `SPEC-KIT-900`, or an evidence folder name such as
/// `SPEC-KIT-025-add-automated-conflict-resolution-with`.
///
/// Valid: 1 to 128 characters from `[A-Za-z0-9._-]`, not starting with `.` or `-`, so it is
/// always a single, non-hidden path component (no separator, no `..`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SpecId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPEC-ID {value:?}: {reason}")]
pub struct InvalidSpecId {
    pub value: String,
    pub reason: &'static str,
}

impl SpecId {
    pub fn parse(value: &str) -> Result<Self, InvalidSpecId> {
        let fail = |reason| {
            Err(InvalidSpecId {
                value: value.to_string(),
                reason,
            })
        };
        if value.is_empty() {
            return fail("it is empty");
        }
        if value.len() > 128 {
            return fail("it is longer than 128 characters");
        }
        if value.contains('/') || value.contains('\\') {
            return fail("it contains a path separator");
        }
        if value.starts_with('.') {
            return fail("it starts with '.' (hidden or parent folder)");
        }
        if value.starts_with('-') {
            return fail("it starts with '-'");
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return fail("only letters, digits, '-', '_' and '.' are allowed");
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Read from job options and reports: the same checks as [`SpecId::parse`], so an invalid
/// ID in `{"spec": "../x"}` is refused with its reason, like on the command line.
impl<'de> serde::Deserialize<'de> for SpecId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        SpecId::parse(&value).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SpecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SpecId {
    type Err = InvalidSpecId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_folder_names() {
        for ok in [
            "SPEC-KIT-900",
            "SPEC-KIT-025-add-automated-conflict-resolution-with",
            "SPEC-KIT-045-mini",
            "SPEC-DOGFOOD-001",
        ] {
            assert!(SpecId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_escapes() {
        for bad in [
            "", "..", "../x", "a/b", "a\\b", ".hidden", "-rf", "a b", "x\0y",
        ] {
            assert!(SpecId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
