//! TLS for `rediss://` caches: rustls' crypto provider, and the certificate files of
//! `--cache-ca`/`--cache-cert`/`--cache-key` as redis-rs takes them.
use super::super::backend::{CacheError, CacheErrorKind};
use super::super::options::{check_cert_versions, read_pem, CacheOptions};

/// Install rustls' ring crypto provider as the process default (once; a provider installed
/// by someone else is kept). `rediss://` needs one.
pub(super) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The TLS files of `opts` as redis-rs takes them; `None` when none is given. Files given for a
/// cache that is not TLS (`redis://`) are an error, not silently ignored.
pub(super) fn certificates(
    backend: &str,
    urls: &[&str],
    opts: &CacheOptions,
) -> Result<Option<::redis::TlsCertificates>, CacheError> {
    let tls = &opts.tls;
    if !tls.is_set() {
        return Ok(None);
    }
    let err = |message: String| CacheError {
        backend: backend.to_owned(),
        kind: CacheErrorKind::Config,
        message,
    };
    if !urls
        .iter()
        .all(|u| u.to_ascii_lowercase().starts_with("rediss://"))
    {
        return Err(err(
            "--cache-tls-cert, --cache-tls-key and --cache-tls-ca are for TLS caches: \
             write rediss:// (or rediss-cluster://)"
                .to_owned(),
        ));
    }
    tls.check().map_err(err)?;
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let client_cert = read_pem("--cache-tls-cert", cert).map_err(err)?;
            check_cert_versions("--cache-tls-cert", cert, &client_cert).map_err(err)?;
            Some(::redis::ClientTlsConfig {
                client_cert,
                client_key: read_pem("--cache-tls-key", key).map_err(err)?,
            })
        }
        _ => None,
    };
    let root_cert = match &tls.ca {
        Some(ca) => {
            let pem = read_pem("--cache-tls-ca", ca).map_err(err)?;
            check_cert_versions("--cache-tls-ca", ca, &pem).map_err(err)?;
            Some(pem)
        }
        None => None,
    };
    Ok(Some(::redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}
