//! Certificates made in the test, with rcgen: a CA, server and client
//! certificates, good and bad ones.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names`, for `usage`, valid until `not_after`.
    pub fn leaf(
        &self,
        names: &[SanType],
        usage: &[ExtendedKeyUsagePurpose],
        not_after: OffsetDateTime,
    ) -> Leaf {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "not-the-name-that-counts");
        params.subject_alt_names = names.to_vec();
        params.extended_key_usages = usage.to_vec();
        params.not_before = OffsetDateTime::now_utc() - Duration::days(2);
        params.not_after = not_after;
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.leaf(
            &[
                SanType::DnsName("localhost".try_into().expect("a DNS name")),
                SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            ],
            &[ExtendedKeyUsagePurpose::ServerAuth],
            in_days(30),
        )
    }

    /// A client certificate naming `uri`.
    pub fn client(&self, uri: &str) -> Leaf {
        self.leaf(
            &[SanType::URI(uri.try_into().expect("a URI"))],
            &[ExtendedKeyUsagePurpose::ClientAuth],
            in_days(30),
        )
    }
}

pub fn in_days(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(days)
}
