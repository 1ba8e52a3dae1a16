//! What every rendered object shares: metadata and labels, durations in
//! protobuf-JSON form, RE2 escaping, name slugs.

pub use packlight_model::routing::{REGEX_META, escape_regex, host_regex, prefix_regex};
use std::borrow::Cow;
use std::time::Duration;

use packlight_model::ResourceId;
use serde_json::{Map, Value, json};

/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The service an object serves.
pub const SERVICE: &str = "packlight.dev/service";
/// The kind of the resource an object is made from.
pub const SOURCE_KIND: &str = "packlight.dev/source-kind";
/// The name of the resource an object is made from.
pub const SOURCE_NAME: &str = "packlight.dev/source-name";
/// The namespace of that resource, on objects outside it.
pub const SOURCE_NAMESPACE: &str = "packlight.dev/source-namespace";

/// The header the login service sets on allowed requests (the user's
/// name), forwarded upstream by the CUSTOM provider.
pub const USER_HEADER: &str = "x-packlight-user";
/// Istio's networking API version.
pub const NETWORKING: &str = "networking.istio.io/v1";
/// Istio's security API version.
pub const SECURITY: &str = "security.istio.io/v1";
/// EnvoyFilter's API version (never promoted beyond alpha3).
pub const NETWORKING_ALPHA3: &str = "networking.istio.io/v1alpha3";

/// The labels of a generated object, sorted by key (as a `BTreeMap`
/// would hold them). Keys and values borrow from the mesh where they can:
/// an object's labels are built per object, so they should cost little.
#[derive(Clone, Debug, Default)]
pub struct Labels<'a>(Vec<(&'a str, Cow<'a, str>)>);

impl<'a> Labels<'a> {
    /// `managed-by: packlight`.
    pub fn managed() -> Self {
        let mut labels = Vec::with_capacity(6);
        labels.push((MANAGED_BY, Cow::Borrowed("packlight")));
        Labels(labels)
    }

    /// Adds the service it serves.
    pub fn service(self, name: &'a str) -> Self {
        self.with(SERVICE, name)
    }

    /// Adds the resource it is made from (kind and name).
    pub fn source(self, id: &'a ResourceId) -> Self {
        self.with(SOURCE_KIND, &id.kind).with(SOURCE_NAME, &id.name)
    }

    /// Adds the source only when there is exactly one.
    pub fn single_source(self, ids: &'a [ResourceId]) -> Self {
        match ids {
            [one] => self.source(one),
            _ => self,
        }
    }

    /// Adds any label (replacing one of the same key).
    pub fn with(mut self, key: &'a str, value: impl Into<Cow<'a, str>>) -> Self {
        let value = value.into();
        match self.0.binary_search_by(|(k, _)| (*k).cmp(key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
        self
    }

    /// As JSON.
    pub fn value(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect(),
        )
    }
}

impl serde::Serialize for Labels<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (*k, v.as_ref())))
    }
}

/// A full object: `apiVersion`, `kind`, `metadata` and `spec`.
pub fn object(
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    labels: &Labels,
    spec: Value,
) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels.value()},
        "spec": spec,
    })
}

/// The order of [`crate::render`]'s output.
pub fn sort_key(v: &Value) -> (String, String, String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    )
}

/// A duration as protobuf JSON: `5s`, `0.500s`, `1.000001s`.
pub fn duration(d: Duration) -> String {
    let (s, n) = (d.as_secs(), d.subsec_nanos());
    if n == 0 {
        format!("{s}s")
    } else if n % 1_000_000 == 0 {
        format!("{s}.{:03}s", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{s}.{:06}s", n / 1_000)
    } else {
        format!("{s}.{n:09}s")
    }
}

/// The prefix behind a [`prefix_regex`] result (`None` for any other regex).
pub fn regex_prefix(re: &str) -> Option<String> {
    if re == "/.*" {
        return Some("/".to_string());
    }
    let escaped = re.strip_suffix("(/.*)?")?;
    let mut out = String::new();
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            c if REGEX_META.contains(c) => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// A DNS-label-safe slug: `*.oss.example.com` -> `wildcard-oss-example-com`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '*' => out.push_str("wildcard"),
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            _ => {
                if !out.ends_with('-') {
                    out.push('-')
                }
            }
        }
    }
    out.trim_matches('-').to_string()
}

/// Drops null and empty-collection members of an object, so optional
/// fields are absent rather than `null`.
pub fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .filter(|(_, v)| !matches!(v, Value::Array(a) if a.is_empty()))
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_protobuf_json() {
        assert_eq!(duration(Duration::from_secs(5)), "5s");
        assert_eq!(duration(Duration::from_millis(500)), "0.500s");
        assert_eq!(duration(Duration::from_micros(1_000_001)), "1.000001s");
        assert_eq!(duration(Duration::from_nanos(7)), "0.000000007s");
    }

    #[test]
    fn regexes_are_segment_aware_and_escaped() {
        assert_eq!(prefix_regex("/v1"), "/v1(/.*)?");
        assert_eq!(prefix_regex("/a.b+c"), "/a\\.b\\+c(/.*)?");
        assert_eq!(prefix_regex("/"), "/.*");
        for p in ["/", "/v1", "/a.b+c/(x)"] {
            assert_eq!(regex_prefix(&prefix_regex(p)).as_deref(), Some(p));
        }
        assert_eq!(regex_prefix("/v1(/.*)?x"), None);
        assert_eq!(host_regex("v2.example.com"), "v2\\.example\\.com(:[0-9]+)?");
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("*.oss-cn.example.com"), "wildcard-oss-cn-example-com");
        assert_eq!(slug("10.0.0.0/24"), "10-0-0-0-24");
    }
}
