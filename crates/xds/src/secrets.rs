//! SDS secrets: the proxy's own certificate and the trust bundle, under
//! the names [`XdsOptions`] gives them. The contents come from the
//! runtime's CA; this only shapes them as Envoy `Secret`s.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};

use crate::XdsOptions;

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.to_string())),
        ..Default::default()
    })
}

/// The two secrets every proxy's config names ([`crate::ProxyConfig::secrets`]):
/// `sds_certificate` (certificate chain and key, PEM) and
/// `sds_trust_bundle` (CA certificates, PEM), sorted by name.
pub fn secrets(opts: &XdsOptions, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Vec<Secret> {
    let mut out = vec![
        Secret {
            name: opts.sds_certificate.clone(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(cert_pem),
                private_key: inline(key_pem),
                ..Default::default()
            })),
        },
        Secret {
            name: opts.sds_trust_bundle.clone(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: inline(ca_pem),
                    ..Default::default()
                },
            )),
        },
    ];
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_options() {
        let opts = XdsOptions::default();
        let s = secrets(&opts, "C", "K", "CA");
        let names: Vec<_> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ROOTCA", "default"]);
        assert!(matches!(s[1].r#type, Some(secret::Type::TlsCertificate(_))));
    }
}
