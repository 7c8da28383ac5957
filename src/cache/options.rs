//! What every backend is opened with besides its spec: [`CacheOptions`] (key prefix, size
//! bound, TLS files), and the `--cache-max-size` parser.
use std::path::PathBuf;

use super::key;

/// Options every backend takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Key prefix (`--cache-prefix`), [`key::DEFAULT_PREFIX`] by default.
    pub prefix: String,
    /// Bound in bytes (`--cache-max-size`); only the disk backend enforces it (Redis has its
    /// own `maxmemory` and eviction policy).
    pub max_size: Option<u64>,
    /// Client certificate and CA files for `rediss://` and `rediss-cluster://`.
    pub tls: TlsFiles,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            prefix: key::DEFAULT_PREFIX.to_owned(),
            max_size: None,
            tls: TlsFiles::default(),
        }
    }
}

/// PEM files for TLS to Redis: a client certificate and its key (mutual TLS, for servers
/// started with `--tls-auth-clients yes`), and the CA that signed the server's certificate.
/// Without `ca`, the system's trust store is used (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
/// honoured); with it, only that CA is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--cache-tls-cert`: the client certificate (chain).
    pub cert: Option<PathBuf>,
    /// `--cache-tls-key`: the client certificate's private key.
    pub key: Option<PathBuf>,
    /// `--cache-tls-ca`: the CA certificate(s) to trust instead of the system's.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is given.
    pub fn is_set(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some()
    }

    /// Check that the files make sense together and are readable PEM: a certificate needs
    /// its key and a key its certificate. The message names the flag and the file.
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err(
                    "--cache-tls-cert needs --cache-tls-key (the certificate's private key)"
                        .to_owned(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "--cache-tls-key needs --cache-tls-cert (the client certificate)".to_owned(),
                )
            }
            _ => {}
        }
        for (flag, path) in [
            ("--cache-tls-cert", &self.cert),
            ("--cache-tls-key", &self.key),
            ("--cache-tls-ca", &self.ca),
        ] {
            if let Some(path) = path {
                read_pem(flag, path)?;
            }
        }
        Ok(())
    }
}

/// A PEM file's bytes; the error names `flag` and the file (never its contents).
pub(crate) fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    let shown = crate::text::shown(path);
    let bytes = std::fs::read(path).map_err(|e| format!("{flag} {shown}: cannot read: {e}"))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!(
            "{flag} {shown}: not a PEM file (no -----BEGIN line)"
        ));
    }
    Ok(bytes)
}

/// Refuse X.509 v1 certificates in a PEM file read by [`read_pem`]: rustls (webpki) takes
/// v3 only and would say no more than `UnsupportedCertVersion` at connect time, though
/// OpenSSL (redis-cli) accepts them; `openssl x509 -req` makes v1 unless given extensions.
pub(crate) fn check_cert_versions(
    flag: &str,
    path: &std::path::Path,
    pem: &[u8],
) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let v1 = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .any(|c| is_x509_v1(&c));
    if !v1 {
        return Ok(());
    }
    Err(format!(
        "{flag} {}: an X.509 version 1 certificate (what `openssl x509 -req` makes when given \
         no extensions); TLS here (rustls) takes version 3 only, though redis-cli (OpenSSL) \
         accepts version 1. Sign it again as a v3 certificate, with extensions: `openssl x509 \
         -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -out client.crt \
         -extfile <(printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=clientAuth\\n')` \
         (a CA: `-addext basicConstraints=critical,CA:TRUE` with `openssl req -x509`, which makes \
         v3); `openssl x509 -noout -text -in FILE` shows `Version: 3 (0x2)`",
        crate::text::shown(path)
    ))
}

/// Whether a DER certificate is X.509 v1: its TBSCertificate starts with the serial number
/// (an INTEGER) instead of the explicit `[0]` version field that v2 and v3 carry.
fn is_x509_v1(der: &[u8]) -> bool {
    // the contents of a DER element with tag `tag` at the start of `b`
    fn inside(b: &[u8], tag: u8) -> Option<&[u8]> {
        if *b.first()? != tag {
            return None;
        }
        let len = *b.get(1)?;
        let header = if len < 0x80 {
            2
        } else {
            2 + (len & 0x7f) as usize
        };
        b.get(header..)
    }
    inside(der, 0x30)
        .and_then(|cert| inside(cert, 0x30))
        .is_some_and(|tbs| tbs.first() == Some(&0x02))
}

/// Parse `--cache-max-size`: plain bytes (`1048576`), or a number with a unit. `K`, `M`, `G`,
/// `T` and `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024; `kB`, `MB`, `GB`, `TB` powers of
/// 1000; `B` is bytes. Case-insensitive; fractions allowed (`1.5GiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size `{s}`: expected a number of bytes, optionally with a unit (500M, 2G, 1.5GiB)"
        ));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}`: `{num}` is not a number"))?;
    const KI: f64 = 1024.0;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => KI,
        "m" | "mib" => KI * KI,
        "g" | "gib" => KI * KI * KI,
        "t" | "tib" => KI * KI * KI * KI,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "invalid size `{s}`: unknown unit `{other}` (use B, K, M, G, T, KiB..TiB or kB..TB)"
            ))
        }
    };
    let bytes = (value * mult).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size `{s}`: out of range"));
    }
    Ok(bytes as u64)
}
