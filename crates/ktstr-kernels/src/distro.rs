//! Distribution kernels by name: the `debian[:VERSION][:FLAVOR]` request a
//! user types (`--kernel debian:7.2`, `ktstr kernel fetch debian`), and the
//! cache name such a kernel lives under (`debian-7.2-cloud`). Fetching is
//! `provision::debian`; this part is what resolution needs without it.

use crate::cache::{Cache, CacheError, version_cmp};

/// The flavor taken when none is named: the smallest image, made for VMs.
pub const DEFAULT_FLAVOR: &str = "cloud-amd64";

/// A Debian kernel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianSpec {
    /// `7.2` or `7.2.13`; None: the newest.
    pub version: Option<String>,
    /// Debian's flavor: `cloud-amd64`, `amd64`, `rt-amd64`.
    pub flavor: String,
}

impl DebianSpec {
    /// Parse `debian`, `debian:7.2`, `debian:7.2:rt-amd64`, `debian::amd64`.
    /// None when the value does not name Debian; Err when it does but is
    /// malformed.
    pub fn parse(value: &str) -> Option<Result<Self, String>> {
        let rest = match value.strip_prefix("debian") {
            Some("") => "",
            Some(r) => r.strip_prefix(':')?,
            None => return None,
        };
        let mut parts = rest.splitn(2, ':');
        let version = parts.next().filter(|v| !v.is_empty());
        let flavor = parts.next().filter(|f| !f.is_empty());
        if let Some(v) = version
            && (v.split('.').count() < 2
                || !v
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        {
            return Some(Err(format!(
                "{value}: the version must look like 7.2 or 7.2.13, not {v:?}"
            )));
        }
        let flavor = flavor.unwrap_or(DEFAULT_FLAVOR);
        if flavor.is_empty()
            || flavor.len() > 32
            || !flavor
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Some(Err(format!("{value}: {flavor:?} is not a Debian flavor")));
        }
        Some(Ok(Self {
            version: version.map(String::from),
            flavor: flavor.to_string(),
        }))
    }

    /// The cache name for a kernel of this flavor and `series` (`7.2`):
    /// `debian-7.2-cloud`, `debian-7.2` (plain amd64), `debian-7.2-rt`.
    pub fn cache_name(&self, series: &str) -> String {
        match flavor_tag(&self.flavor) {
            "" => format!("debian-{series}"),
            tag => format!("debian-{series}-{tag}"),
        }
    }

    /// The cached kernel this request names, if it is cached: the named
    /// series, or the newest cached one of this flavor.
    pub fn cached_name(&self, cache: &Cache) -> Result<Option<String>, CacheError> {
        if let Some(v) = &self.version {
            let name = self.cache_name(&series(v));
            return Ok(cache
                .kernel_dir(&name)
                .join("manifest.json")
                .is_file()
                .then_some(name));
        }
        let mut names: Vec<(String, String)> = cache
            .list_kernels()?
            .into_iter()
            .filter_map(|m| {
                let s = series(&m.version);
                (self.cache_name(&s) == m.name).then_some((s, m.name))
            })
            .collect();
        names.sort_by(|a, b| version_cmp(&b.0, &a.0));
        Ok(names.into_iter().next().map(|(_, n)| n))
    }
}

/// `7.2.13` -> `7.2`.
pub fn series(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// `cloud-amd64` -> `cloud`, `amd64` -> ``, `rt-amd64` -> `rt`.
fn flavor_tag(flavor: &str) -> &str {
    flavor
        .strip_suffix("amd64")
        .map(|t| t.trim_end_matches('-'))
        .unwrap_or(flavor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        let p = |v: &str| DebianSpec::parse(v).map(|r| r.map(|s| (s.version, s.flavor)));
        assert_eq!(p("7.2"), None);
        assert_eq!(p("debianx"), None);
        assert_eq!(p("debian"), Some(Ok((None, "cloud-amd64".into()))));
        assert_eq!(
            p("debian:7.2"),
            Some(Ok((Some("7.2".into()), "cloud-amd64".into())))
        );
        assert_eq!(
            p("debian:7.2.13:rt-amd64"),
            Some(Ok((Some("7.2.13".into()), "rt-amd64".into())))
        );
        assert_eq!(p("debian::amd64"), Some(Ok((None, "amd64".into()))));
        assert!(matches!(p("debian:7"), Some(Err(_))));
        assert!(matches!(p("debian:7.x"), Some(Err(_))));
        assert!(matches!(p("debian:7.2:../x"), Some(Err(_))));
    }

    #[test]
    fn cache_names() {
        let s = |f: &str| DebianSpec {
            version: None,
            flavor: f.into(),
        };
        assert_eq!(s("cloud-amd64").cache_name("7.2"), "debian-7.2-cloud");
        assert_eq!(s("amd64").cache_name("7.2"), "debian-7.2");
        assert_eq!(s("rt-amd64").cache_name("6.12"), "debian-6.12-rt");
        assert_eq!(series("7.2.13"), "7.2");
    }
}
