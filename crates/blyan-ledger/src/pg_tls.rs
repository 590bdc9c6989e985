//! TLS to PostgreSQL, as the connection string asks (`sslmode`, libpq's names and meanings):
//!
//! - absent, `disable`, `allow`, `prefer`: no TLS (the ledger never negotiates opportunistic,
//!   unauthenticated TLS it would not insist on);
//! - `require`: TLS or no connection — a server that does not offer TLS is refused, never
//!   fallen back to plaintext. The certificate is not checked (as libpq), unless `sslrootcert`
//!   names a file, which makes it `verify-ca`;
//! - `verify-ca`: TLS, and the server's certificate chains to `sslrootcert` (a PEM file; absent
//!   or `system`: the webpki roots);
//! - `verify-full`: as `verify-ca`, and the certificate names the host connected to.
//!
//! The connection string is parsed here first: `sslmode` and `sslrootcert` are taken out
//! (tokio-postgres knows neither `verify-*` nor `sslrootcert`) and the rest is handed to
//! tokio-postgres. rustls runs with the ring provider; no channel binding is offered.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::error::{LedgerError, Result};

/// What the connection string's `sslmode` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plaintext (`disable`, `allow`, `prefer` or no `sslmode`).
    Off,
    /// TLS, certificate unchecked.
    Require,
    /// TLS, certificate chained to the roots.
    VerifyCa,
    /// TLS, certificate chained to the roots and naming the host.
    VerifyFull,
}

/// A parsed connection string: tokio-postgres's config and the TLS to use with it.
pub(crate) struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: RustlsConnect,
    pub mode: TlsMode,
}

fn config_error(reason: impl Into<String>) -> LedgerError {
    LedgerError::PgConfig {
        reason: reason.into(),
    }
}

/// Parses `url` (`postgresql://…?sslmode=…` or `host=… sslmode=…`).
pub(crate) fn parse(url: &str) -> Result<PgTarget> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut sslmode: Option<String> = None;
    let mut rootcert: Option<String> = None;
    let rest = if is_url {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((head, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some(("sslmode", value)) => sslmode = Some(value.to_owned()),
                        Some(("sslrootcert", value)) => rootcert = Some(value.to_owned()),
                        _ => kept.push(pair),
                    }
                }
                if kept.is_empty() {
                    head.to_owned()
                } else {
                    format!("{head}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            match pair.split_once('=') {
                Some(("sslmode", value)) => sslmode = Some(value.to_owned()),
                Some(("sslrootcert", value)) => rootcert = Some(value.to_owned()),
                _ => kept.push(pair),
            }
        }
        kept.join(" ")
    };
    let mode = match sslmode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => TlsMode::Off,
        Some("require") if rootcert.is_some() => TlsMode::VerifyCa,
        Some("require") => TlsMode::Require,
        Some("verify-ca") => TlsMode::VerifyCa,
        Some("verify-full") => TlsMode::VerifyFull,
        Some(other) => {
            return Err(config_error(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            )));
        }
    };
    let mut config: tokio_postgres::Config =
        rest.parse().map_err(|e| config_error(format!("{e}")))?;
    config.ssl_mode(if mode == TlsMode::Off {
        SslMode::Disable
    } else {
        SslMode::Require
    });
    let tls = RustlsConnect::new(mode, rootcert.as_deref())?;
    Ok(PgTarget { config, tls, mode })
}

/// The roots `verify-*` check against: the PEM file `rootcert`, or the webpki roots.
fn roots(rootcert: Option<&str>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match rootcert {
        None | Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let path = PathBuf::from(path);
            let certificates = CertificateDer::pem_file_iter(&path)
                .map_err(|e| config_error(format!("sslrootcert {}: {e}", path.display())))?;
            for certificate in certificates {
                let certificate = certificate
                    .map_err(|e| config_error(format!("sslrootcert {}: {e}", path.display())))?;
                roots
                    .add(certificate)
                    .map_err(|e| config_error(format!("sslrootcert {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(config_error(format!(
                    "sslrootcert {} holds no certificate",
                    path.display()
                )));
            }
        }
    }
    Ok(roots)
}

/// Checks the server's certificate as the mode says; handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    mode: TlsMode,
    /// The chain check (`verify-*` only).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            // `require`: encrypted, unauthenticated, as libpq.
            return Ok(ServerCertVerified::assertion());
        };
        let verdict =
            webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match verdict {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.mode == TlsMode::VerifyCa => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres's TLS hook, backed by rustls.
#[derive(Clone)]
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
}

impl RustlsConnect {
    fn new(mode: TlsMode, rootcert: Option<&str>) -> Result<RustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = match mode {
            TlsMode::Off | TlsMode::Require => None,
            TlsMode::VerifyCa | TlsMode::VerifyFull => Some(
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(rootcert)?),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| config_error(format!("TLS roots: {e}")))?,
            ),
        };
        let verifier = Verifier {
            mode,
            webpki,
            provider: Arc::clone(&provider),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsHandshake> {
        // tokio-postgres asks for a connector for every host, a Unix socket's directory
        // included, before it knows whether TLS will be used: a host that is no server name
        // fails only if a handshake is attempted.
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} is not a TLS server name: {e}"),
            )
        });
        Ok(RustlsHandshake {
            connector: tokio_rustls::TlsConnector::from(Arc::clone(&self.config)),
            name,
        })
    }
}

/// One TLS handshake with a named server.
pub(crate) struct RustlsHandshake {
    connector: tokio_rustls::TlsConnector,
    name: io::Result<ServerName<'static>>,
}

impl<S> TlsConnect<S> for RustlsHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name?, stream).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// A TLS session to PostgreSQL.
pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> TlsMode {
        parse(url).unwrap().mode
    }

    #[test]
    fn sslmode_is_read_from_both_forms_and_unknown_modes_are_refused() {
        assert_eq!(mode("host=/tmp user=postgres"), TlsMode::Off);
        assert_eq!(mode("host=/tmp sslmode=prefer"), TlsMode::Off);
        assert_eq!(mode("host=db sslmode=require"), TlsMode::Require);
        assert_eq!(
            mode("postgresql://u@db/ledger?sslmode=verify-full"),
            TlsMode::VerifyFull
        );
        assert_eq!(
            mode("postgresql://u@db/ledger?application_name=x&sslmode=verify-ca"),
            TlsMode::VerifyCa
        );
        let target = parse("postgresql://u@db:6000/ledger?sslmode=require").unwrap();
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(target.config.get_dbname(), Some("ledger"));
        assert!(matches!(
            parse("host=db sslmode=sometimes"),
            Err(LedgerError::PgConfig { reason }) if reason.contains("sslmode=sometimes")
        ));
        assert!(matches!(
            parse("host=db sslmode=verify-full sslrootcert=/nonexistent/root.pem"),
            Err(LedgerError::PgConfig { reason }) if reason.contains("/nonexistent/root.pem")
        ));
    }
}
