//! Version strings: `MAJOR.MINOR` or `MAJOR.MINOR.PATCH`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A parsed version. Ordered numerically (`1.9` < `1.10`); `1.0` and
/// `1.0.0` are different versions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    /// The major: the first number.
    pub major: u32,
    /// The minor.
    pub minor: u32,
    /// The patch, when written.
    pub patch: Option<u32>,
}

/// Why a version string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a version: write MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. \"1.0\" (quoted in YAML)"
)]
pub struct BadVersion(pub String);

impl FromStr for Version {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.to_string());
        let num = |p: &str| -> Result<u32, BadVersion> {
            // No signs, no leading zeros, at most 6 digits (the CRD's pattern).
            if p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            if p.len() > 1 && p.starts_with('0') {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let parts: Vec<&str> = s.split('.').collect();
        match parts.as_slice() {
            [a, b] => Ok(Version {
                major: num(a)?,
                minor: num(b)?,
                patch: None,
            }),
            [a, b, c] => Ok(Version {
                major: num(a)?,
                minor: num(b)?,
                patch: Some(num(c)?),
            }),
            _ => Err(bad()),
        }
    }
}

impl Version {
    /// The subset / object-name form: `1.0` -> `v1-0`, `1.0.1` -> `v1-0-1`.
    pub fn subset(&self) -> String {
        match self.patch {
            Some(p) => format!("v{}-{}-{}", self.major, self.minor, p),
            None => format!("v{}-{}", self.major, self.minor),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "{}.{}.{}", self.major, self.minor, p),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_subsets() {
        let v: Version = "1.0".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 0, None));
        assert_eq!(v.subset(), "v1-0");
        assert_eq!("1.0.1".parse::<Version>().unwrap().subset(), "v1-0-1");
        assert_eq!("10.2".parse::<Version>().unwrap().to_string(), "10.2");
    }

    #[test]
    fn rejects_non_versions() {
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "1.0.0.0",
            "v1.0",
            "01.0",
            "1.a",
            "-1.0",
            "1234567.0",
            " 1.0",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn orders_numerically() {
        let a: Version = "1.9".parse().unwrap();
        let b: Version = "1.10".parse().unwrap();
        assert!(a < b);
    }
}
