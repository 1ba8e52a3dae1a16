//! The webhook's certificate: a CA and a serving certificate made with
//! rcgen, kept in one Secret that every replica shares, renewed before it
//! expires, and the CA bundle patched into the ValidatingWebhookConfiguration.
//!
//! The Secret (type `kubernetes.io/tls`) holds `tls.crt`/`tls.key` (the
//! serving certificate), `ca.crt` (the CA bundle: the current CA first,
//! then the previous one while certificates it signed may still be
//! served) and `ca.key`. Annotations record the expiry times and the
//! names the certificate was made for, so no certificate is parsed to
//! decide on renewal. Replicas race safely: creates and updates carry the
//! `resourceVersion` that was read, and a loser reads the winner's Secret.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::Error;

const NOT_AFTER: &str = "packlight.dev/not-after";
const CA_NOT_AFTER: &str = "packlight.dev/ca-not-after";
const NAMES: &str = "packlight.dev/names";

/// The certificate material in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The CA bundle (PEM; the `caBundle` of the webhook configuration).
    pub ca_bundle: String,
    /// The current CA's private key (PEM).
    pub ca_key: String,
    /// The serving certificate (PEM).
    pub cert: String,
    /// Its private key (PEM).
    pub key: String,
    /// When the serving certificate expires (Unix seconds).
    pub not_after: i64,
    /// When the current CA expires (Unix seconds).
    pub ca_not_after: i64,
    /// The names it was made for (`,`-joined DNS names and IPs).
    pub names: String,
}

/// How the certificate is made and renewed.
#[derive(Clone, Debug)]
pub struct CertPolicy {
    /// DNS names of the serving certificate (the Service's names).
    pub dns_names: Vec<String>,
    /// IP addresses of the serving certificate (tests: 127.0.0.1).
    pub ip_addresses: Vec<std::net::IpAddr>,
    /// Lifetime of a serving certificate; the CA lives ten times as long.
    pub validity: Duration,
    /// A certificate this close to expiry is replaced.
    pub renew_before: Duration,
}

impl CertPolicy {
    fn names(&self) -> String {
        let mut names: Vec<String> = self.dns_names.clone();
        names.extend(self.ip_addresses.iter().map(ToString::to_string));
        names.join(",")
    }
}

/// Errors making a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("making the webhook certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A time out of range.
    #[error("certificate validity out of range")]
    Time,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// What has to be made anew.
#[derive(Debug, PartialEq, Eq)]
enum Renewal {
    None,
    Leaf,
    CaAndLeaf,
}

fn renewal(current: Option<&Bundle>, policy: &CertPolicy, now: i64) -> Renewal {
    let Some(b) = current else {
        return Renewal::CaAndLeaf;
    };
    // A new serving certificate must not outlive its CA.
    if b.ca_not_after - now < secs(policy.validity) + secs(policy.renew_before) {
        return Renewal::CaAndLeaf;
    }
    if b.not_after - now < secs(policy.renew_before) || b.names != policy.names() {
        return Renewal::Leaf;
    }
    Renewal::None
}

fn params(now: i64, validity: Duration) -> Result<rcgen::CertificateParams, CertError> {
    let mut p = rcgen::CertificateParams::default();
    // A minute of slack for clocks that differ a little.
    p.not_before =
        time::OffsetDateTime::from_unix_timestamp(now - 60).map_err(|_| CertError::Time)?;
    p.not_after = time::OffsetDateTime::from_unix_timestamp(now.saturating_add(secs(validity)))
        .map_err(|_| CertError::Time)?;
    let mut serial = [0u8; 16];
    let n = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        SystemTime::now(),
    );
    serial[..8].copy_from_slice(&n.to_be_bytes());
    serial[8..].copy_from_slice(&now.to_be_bytes());
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(p)
}

/// Makes what `renewal` asks for from `current`.
fn renew(
    current: Option<&Bundle>,
    policy: &CertPolicy,
    now: i64,
    what: &Renewal,
) -> Result<Bundle, CertError> {
    let (ca_cert, ca_key, ca_bundle, ca_not_after) = match (what, current) {
        (Renewal::Leaf, Some(b)) => {
            let first = first_pem(&b.ca_bundle);
            (first, b.ca_key.clone(), b.ca_bundle.clone(), b.ca_not_after)
        }
        _ => {
            let ca_validity = policy.validity.saturating_mul(10);
            let mut p = params(now, ca_validity)?;
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
            p.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "packlight webhook CA");
            let key = rcgen::KeyPair::generate()?;
            let cert = p.self_signed(&key)?.pem();
            // The previous CA stays trusted while its certificates may
            // still be served by a replica that has not re-read the Secret.
            let bundle = match current {
                Some(b) => format!("{cert}{}", first_pem(&b.ca_bundle)),
                None => cert.clone(),
            };
            (cert, key.serialize_pem(), bundle, now + secs(ca_validity))
        }
    };
    let ca_key_pair = rcgen::KeyPair::from_pem(&ca_key)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key_pair)?;
    let mut p = params(now, policy.validity)?;
    p.subject_alt_names = policy
        .dns_names
        .iter()
        .map(|n| Ok(rcgen::SanType::DnsName(n.clone().try_into()?)))
        .collect::<Result<Vec<_>, rcgen::Error>>()?;
    p.subject_alt_names.extend(
        policy
            .ip_addresses
            .iter()
            .map(|ip| rcgen::SanType::IpAddress(*ip)),
    );
    let cn = policy
        .dns_names
        .first()
        .cloned()
        .unwrap_or_else(|| "packlight-webhook".into());
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?.pem();
    Ok(Bundle {
        ca_bundle,
        ca_key,
        cert,
        key: key.serialize_pem(),
        not_after: now + secs(policy.validity),
        ca_not_after,
        names: policy.names(),
    })
}

/// The first PEM block of a bundle.
fn first_pem(bundle: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    match bundle.find(END) {
        Some(i) => format!("{}\n", &bundle[..i + END.len()]),
        None => bundle.to_string(),
    }
}

fn from_secret(secret: &Secret) -> Option<Bundle> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|s| !s.is_empty())
    };
    let ann = secret.metadata.annotations.as_ref()?;
    let num = |k: &str| ann.get(k).and_then(|v| v.parse::<i64>().ok());
    Some(Bundle {
        ca_bundle: text("ca.crt")?,
        ca_key: text("ca.key")?,
        cert: text("tls.crt")?,
        key: text("tls.key")?,
        not_after: num(NOT_AFTER)?,
        ca_not_after: num(CA_NOT_AFTER)?,
        names: ann.get(NAMES)?.clone(),
    })
}

fn to_secret(b: &Bundle, name: &str, namespace: &str, resource_version: Option<String>) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version,
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "packlight".to_string(),
            )])),
            annotations: Some(BTreeMap::from([
                (NOT_AFTER.to_string(), b.not_after.to_string()),
                (CA_NOT_AFTER.to_string(), b.ca_not_after.to_string()),
                (NAMES.to_string(), b.names.clone()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".to_string(), bytes(&b.ca_bundle)),
            ("ca.key".to_string(), bytes(&b.ca_key)),
            ("tls.crt".to_string(), bytes(&b.cert)),
            ("tls.key".to_string(), bytes(&b.key)),
        ])),
        ..Secret::default()
    }
}

/// The certificate in the Secret, renewed (and written back) first when it
/// is missing, near expiry, or made for other names.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    name: &str,
    policy: &CertPolicy,
) -> Result<Bundle, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let live = api
            .get_opt(name)
            .await
            .map_err(|e| Error::Kube(format!("reading Secret {namespace}/{name}"), e))?;
        let current = live.as_ref().and_then(from_secret);
        let now = now();
        let what = renewal(current.as_ref(), policy, now);
        if let (Renewal::None, Some(b)) = (&what, &current) {
            return Ok(b.clone());
        }
        let next = renew(current.as_ref(), policy, now, &what).map_err(Error::Cert)?;
        let rv = live
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone());
        let secret = to_secret(&next, name, namespace, rv.clone());
        let written = match rv {
            Some(_) => api.replace(name, &PostParams::default(), &secret).await,
            None => api.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{name}"), renewal = ?what, not_after = next.not_after, "webhook certificate written");
                return Ok(next);
            }
            // Another replica wrote first: use what it wrote.
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
            Err(e) => return Err(Error::Kube(format!("writing Secret {namespace}/{name}"), e)),
        }
    }
}

/// Puts `ca_bundle` into every webhook of the configuration `name` (an
/// update only when one differs).
pub async fn patch_ca_bundle(client: &Client, name: &str, ca_bundle: &str) -> Result<bool, Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for attempt in 1.. {
        let mut vwc = api.get(name).await.map_err(|e| {
            Error::Kube(format!("reading ValidatingWebhookConfiguration {name}"), e)
        })?;
        let want = ByteString(ca_bundle.as_bytes().to_vec());
        let mut changed = false;
        for w in vwc.webhooks.iter_mut().flatten() {
            if w.client_config.ca_bundle.as_ref() != Some(&want) {
                w.client_config.ca_bundle = Some(want.clone());
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        match api.replace(name, &PostParams::default(), &vwc).await {
            Ok(_) => {
                tracing::info!(configuration = name, "webhook caBundle updated");
                return Ok(true);
            }
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
            Err(e) => {
                return Err(Error::Kube(
                    format!("updating ValidatingWebhookConfiguration {name}"),
                    e,
                ));
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CertPolicy {
        CertPolicy {
            dns_names: vec!["packlight-webhook.packlight-system.svc".into()],
            ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            validity: Duration::from_secs(100),
            renew_before: Duration::from_secs(30),
        }
    }

    #[test]
    fn renews_the_leaf_near_expiry_and_the_ca_before_it_would_outlive_it() {
        let p = policy();
        let t0 = 1_000_000;
        assert_eq!(renewal(None, &p, t0), Renewal::CaAndLeaf);
        let b = renew(None, &p, t0, &Renewal::CaAndLeaf).unwrap();
        assert_eq!(b.ca_not_after, t0 + 1000);
        assert_eq!(renewal(Some(&b), &p, t0 + 60), Renewal::None);
        assert_eq!(renewal(Some(&b), &p, t0 + 71), Renewal::Leaf);
        let b2 = renew(Some(&b), &p, t0 + 71, &Renewal::Leaf).unwrap();
        assert_eq!(b2.ca_bundle, b.ca_bundle, "a new leaf keeps the CA");
        assert_ne!(b2.cert, b.cert);
        assert_eq!(renewal(Some(&b2), &p, t0 + 871), Renewal::CaAndLeaf);
        let b3 = renew(Some(&b2), &p, t0 + 871, &Renewal::CaAndLeaf).unwrap();
        assert!(
            b3.ca_bundle.ends_with(&b.ca_bundle),
            "the old CA stays trusted"
        );
        assert_eq!(b3.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        let mut other = p.clone();
        other.dns_names.push("other".into());
        assert_eq!(renewal(Some(&b3), &other, t0 + 872), Renewal::Leaf);
    }

    #[test]
    fn the_secret_round_trips() {
        let b = renew(None, &policy(), 5_000, &Renewal::CaAndLeaf).unwrap();
        let s = to_secret(&b, "tls", "ns", None);
        assert_eq!(from_secret(&s), Some(b));
    }
}
