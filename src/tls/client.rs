//! Client certificates: checked after the handshake rather than during
//! it, so a caller with a bad certificate gets a gRPC status that says
//! what is wrong (expired, unknown CA, not for client use) instead of a
//! closed connection. The handshake still proves the client holds the
//! certificate's key.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// What a connection's client certificate says, for the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// No certificate was presented.
    None,
    /// A certificate the CA issued for client use, valid now: its URI and
    /// DNS names (never the CN).
    Valid(Arc<[String]>),
    /// A certificate that is not accepted, and why.
    Invalid(Arc<str>),
}

/// What tonic puts in each request's extensions for a TLS connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: Option<std::net::SocketAddr>,
    /// Its certificate.
    pub client: ClientCert,
}

/// Accepts any certificate in the handshake, keeping the proof that the
/// client holds its key; [`check`] judges it afterwards.
#[derive(Debug)]
pub(super) struct Deferred {
    inner: Arc<dyn ClientCertVerifier>,
}

impl Deferred {
    pub(super) fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Judges the certificates a client presented with the CA's verifier.
pub(super) fn check(
    verifier: Option<&Arc<dyn ClientCertVerifier>>,
    presented: Option<&[CertificateDer<'static>]>,
) -> ClientCert {
    let (Some(verifier), Some([end_entity, intermediates @ ..])) = (verifier, presented) else {
        return ClientCert::None;
    };
    if let Err(err) = verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
        return ClientCert::Invalid(err.to_string().into());
    }
    match names(end_entity) {
        Ok(names) => ClientCert::Valid(names.into()),
        Err(why) => ClientCert::Invalid(why.into()),
    }
}

/// The URI and DNS subject alternative names of a certificate.
fn names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let Some(san) = parsed
        .subject_alternative_name()
        .map_err(|e| format!("its subject alternative names do not parse: {e}"))?
    else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect())
}
