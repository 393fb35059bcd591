//! The one way a command reaches a server: the address (`host:port` or a
//! URL), TLS (the CA that issued the server's certificate, and a client
//! certificate for a server that checks them), and the plain answer a
//! plaintext client gets from a TLS port. Every remote command's
//! arguments flatten [`TlsArgs`] and connect through [`channel`], so none
//! can lack them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{source_chain, Failure};

/// How long the check for a TLS port may take.
const PROBE: Duration = Duration::from_secs(2);

/// TLS towards the server.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Speak TLS, trusting the server certificates this CA (PEM) issued.
    #[arg(long, env = "IMAGE_LEDGER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: present this client certificate (PEM) to a server
    /// that checks them.
    #[arg(
        long,
        env = "IMAGE_LEDGER_CLIENT_CERT",
        requires_all = ["tls_ca", "client_key"]
    )]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "IMAGE_LEDGER_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// A connection to the server at `addr`, given up after `timeout` to
/// connect (and, with `call_timeout`, for each call). Over plaintext, a
/// server that answers in TLS is named as such before any call.
pub async fn channel(
    addr: &str,
    tls: &TlsArgs,
    timeout: Duration,
    call_timeout: bool,
) -> Result<Channel, Failure> {
    let scheme = if tls.tls_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|err| Failure::BadInput(format!("--addr {addr:?}: {err}")))?
        .connect_timeout(timeout);
    if call_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    match &tls.tls_ca {
        Some(ca) => {
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|err| Failure::BadInput(format!("--tls-ca: {err}")))?;
        }
        None => {
            if let Some(authority) = endpoint.uri().authority() {
                if speaks_tls(authority.as_str()).await {
                    return Err(Failure::Unreachable(format!(
                        "{addr} speaks TLS: pass --tls-ca (or IMAGE_LEDGER_TLS_CA) with the CA \
                         that issued its certificate"
                    )));
                }
            }
        }
    }
    endpoint
        .connect()
        .await
        .map_err(|err| Failure::Unreachable(format!("cannot reach {addr}: {}", source_chain(&err))))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|err| Failure::BadInput(format!("cannot read {}: {err}", path.display())))
}

/// Whether the server at `authority` answers the start of a plaintext
/// HTTP/2 connection with a TLS record (rustls sends an alert): it
/// speaks TLS. A plaintext server answers with its settings frame, and
/// one that cannot be reached is left to the real connection to report.
async fn speaks_tls(authority: &str) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut first = [0u8; 1];
        let read = stream.read(&mut first).await.ok()?;
        // 0x15: an alert record; 0x16: a handshake record.
        Some(read == 1 && matches!(first[0], 0x15 | 0x16))
    };
    matches!(tokio::time::timeout(PROBE, probe).await, Ok(Some(true)))
}
