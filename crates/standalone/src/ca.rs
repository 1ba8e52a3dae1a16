//! The built-in certificate authority.
//!
//! One CA per data directory (`DATA_DIR/ca/ca.pem`, `ca-key.pem`, 0600),
//! created on first start and reused after. It issues short-lived
//! certificates whose only name is a SPIFFE URI SAN
//! (`spiffe://cluster.local/ns/NS/sa/SERVICE`), the identity the sidecars'
//! RBAC principals match. Rotation is the runtime's job: it asks for a
//! new certificate when [`Issued::renew_at`] has passed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

/// What the CA can fail at.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the CA files.
    #[error("CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Key generation, parsing or signing.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// A SPIFFE ID that is not a valid URI SAN.
    #[error("invalid SPIFFE ID {0:?}")]
    SpiffeId(String),
}

/// The subject of packlight's CA; leaf certificates name it as issuer, so
/// it must not change between runs.
const CA_NAME: &str = "packlight standalone CA";
/// How long the CA itself is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A certificate issued to one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The SPIFFE ID it carries.
    pub spiffe_id: String,
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Serial number, hex (what Envoy's `/certs` shows).
    pub serial: String,
    /// End of validity.
    pub not_after: SystemTime,
    /// When the runtime should replace it: at half its lifetime (Istio
    /// rotates at 50% too, by default).
    pub renew_at: SystemTime,
}

/// The certificate authority of one data directory.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    lifetime: Duration,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

fn ca_params() -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "packlight");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn read(path: &Path) -> Result<Option<String>, CaError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `contents` to `path` atomically (temporary file `PATH.tmp`,
/// then rename), readable by the owner only, creating its directory; the
/// file is fsynced before the rename when `durable`.
pub(crate) fn write_private(path: &Path, contents: &[u8], durable: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)
}

impl Ca {
    /// Loads the CA of `dir` (`ca.pem`, `ca-key.pem`), or creates it.
    /// `lifetime` is the validity of the certificates it issues.
    pub fn load_or_create(dir: &Path, lifetime: Duration) -> Result<Self, CaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let (key, ca_pem) = match (read(&key_path)?, read(&cert_path)?) {
            (Some(key), Some(cert)) => (KeyPair::from_pem(&key)?, cert),
            _ => {
                let key = KeyPair::generate()?;
                let mut params = ca_params()?;
                let now = time::OffsetDateTime::now_utc();
                params.not_before = now - time::Duration::hours(1);
                params.not_after = now + CA_LIFETIME;
                let cert = params.self_signed(&key)?;
                write_private(&key_path, key.serialize_pem().as_bytes(), true)
                    .map_err(io(&key_path))?;
                write_private(&cert_path, cert.pem().as_bytes(), true).map_err(io(&cert_path))?;
                (key, cert.pem())
            }
        };
        // Issuing needs only the CA's subject and key: the same subject as
        // the stored certificate, rebuilt rather than parsed.
        let issuer = Issuer::new(ca_params()?, key);
        Ok(Ca {
            issuer,
            ca_pem,
            lifetime,
        })
    }

    /// The trust bundle (the CA certificate), PEM.
    pub fn trust_bundle(&self) -> &str {
        &self.ca_pem
    }

    /// Lifetime of issued certificates.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Issues a certificate for `spiffe_id`, valid from a minute ago (clock
    /// skew between processes) for the configured lifetime.
    pub fn issue(&self, spiffe_id: &str) -> Result<Issued, CaError> {
        let uri = rcgen::string::Ia5String::try_from(spiffe_id)
            .map_err(|_| CaError::SpiffeId(spiffe_id.to_string()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        // A subject distinct from the CA's, else OpenSSL sees a
        // self-signed leaf.
        params
            .distinguished_name
            .push(DnType::CommonName, spiffe_id);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = SystemTime::now();
        let not_before = now - Duration::from_secs(60);
        let not_after = now + self.lifetime;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            spiffe_id: spiffe_id.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            not_after,
            renew_at: now + self.lifetime / 2,
        })
    }
}

/// 128 random bits from the OS, top bit clear (a positive DER integer),
/// never zero.
fn random_serial() -> Result<[u8; 16], CaError> {
    let mut out = [0u8; 16];
    getrandom::fill(&mut out).map_err(|e| CaError::Random(e.to_string()))?;
    out[0] &= 0x7f;
    out[0] |= 0x01;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ca::load_or_create(dir.path(), Duration::from_secs(60)).unwrap();
        let b = Ca::load_or_create(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(a.trust_bundle(), b.trust_bundle());
        assert!(a.trust_bundle().contains("BEGIN CERTIFICATE"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn issues_distinct_serials_with_the_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), Duration::from_secs(30)).unwrap();
        let a = ca
            .issue("spiffe://cluster.local/ns/demo/sa/httpbin")
            .unwrap();
        let b = ca
            .issue("spiffe://cluster.local/ns/demo/sa/httpbin")
            .unwrap();
        assert_ne!(a.serial, b.serial);
        assert_ne!(a.key_pem, b.key_pem);
        let life = a.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(life <= Duration::from_secs(30) && life > Duration::from_secs(20));
        assert!(a.renew_at < a.not_after);
    }

    #[test]
    fn refuses_a_bad_spiffe_id() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), Duration::from_secs(30)).unwrap();
        assert!(matches!(ca.issue("spiffe://ä"), Err(CaError::SpiffeId(_))));
    }
}
