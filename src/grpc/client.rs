//! A typed client of the `AuditLog` service, for the command line's remote
//! audit commands: domain types in, domain types out, no proto type past
//! this module.

use std::io::Write;
use std::net::SocketAddr;

use thiserror::Error;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::access::{access_of, as_of_message};
use super::pb;
use super::pb::audit_log_client::AuditLogClient;
use crate::audit::{Access, AsOf, Record};
use crate::domain::ImageId;
use crate::store::{Envelope, StoreError};

/// Why a remote audit call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error(transparent)]
    Connect(#[from] tonic::transport::Error),
    /// The server answered with an error status.
    #[error(transparent)]
    Call(#[from] tonic::Status),
    /// What it sent could not be written out.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A record it sent does not decode or match its hash.
    #[error(transparent)]
    Record(#[from] StoreError),
}

/// Records asked for per `ReadEvents` call while exporting.
const EXPORT_PAGE: u32 = 10_000;

/// A connection to a running server's `AuditLog` service.
pub struct AuditClient {
    inner: AuditLogClient<InterceptedService<Channel, Bearer>>,
}

impl AuditClient {
    /// Connects over plaintext HTTP/2, sending `bearer`'s token.
    pub async fn connect(addr: SocketAddr, bearer: Bearer) -> Result<Self, ClientError> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|err| ClientError::Call(tonic::Status::invalid_argument(err.to_string())))?
            .connect()
            .await?;
        Ok(Self::new(channel, bearer))
    }

    /// A client on a connection made elsewhere.
    pub fn new(channel: Channel, bearer: Bearer) -> Self {
        Self {
            inner: AuditLogClient::with_interceptor(channel, bearer),
        }
    }

    /// Writes records `from..=to` (to the head when `to` is `None`) as JSON
    /// lines, exactly as stored. Returns how many were written.
    pub async fn export(
        &mut self,
        from: u64,
        to: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<u64, ClientError> {
        let mut next = from.max(1);
        let mut written = 0;
        loop {
            let mut stream = self
                .inner
                .read_events(pb::ReadEventsRequest {
                    from_position: next,
                    limit: EXPORT_PAGE,
                })
                .await?
                .into_inner();
            let mut got = 0;
            while let Some(record) = stream.message().await? {
                if to.is_some_and(|to| record.position > to) {
                    return Ok(written);
                }
                out.write_all(record.raw.as_bytes())?;
                out.write_all(b"\n")?;
                next = record.position + 1;
                written += 1;
                got += 1;
            }
            if got == 0 {
                return Ok(written);
            }
        }
    }

    /// Every event of one image, oldest first.
    pub async fn image_history(&mut self, image: &ImageId) -> Result<Vec<Record>, ClientError> {
        let reply = self
            .inner
            .get_image_history(pb::GetImageHistoryRequest {
                image_id: image.to_string(),
            })
            .await?;
        reply
            .into_inner()
            .events
            .into_iter()
            .map(|event| {
                let raw = event.raw.into_bytes();
                let envelope = Envelope::decode(&raw)?;
                Ok(Record { envelope, raw })
            })
            .collect()
    }

    /// Who could use an image at a moment.
    pub async fn access_as_of(
        &mut self,
        image: &ImageId,
        as_of: AsOf,
    ) -> Result<Access, ClientError> {
        let reply = self
            .inner
            .get_image_access_as_of(pb::GetImageAccessAsOfRequest {
                image_id: image.to_string(),
                as_of: Some(as_of_message(as_of)),
            })
            .await?;
        Ok(access_of(reply.into_inner()))
    }

    /// Writes each record from `from` on as a JSON line, as the server
    /// appends them, until `count` are written (for ever when `None`).
    pub async fn follow(
        &mut self,
        from: u64,
        count: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<u64, ClientError> {
        let mut stream = self
            .inner
            .subscribe(pb::SubscribeRequest {
                from_position: from.max(1),
            })
            .await?
            .into_inner();
        let mut written = 0;
        while count.is_none_or(|count| written < count) {
            let Some(record) = stream.message().await? else {
                break;
            };
            out.write_all(record.raw.as_bytes())?;
            out.write_all(b"\n")?;
            // A follower is read as it goes (`| jq`, `> file` and tail).
            out.flush()?;
            written += 1;
        }
        Ok(written)
    }

    /// The hex public key that signs this ledger's heads.
    pub async fn public_key(&mut self) -> Result<String, ClientError> {
        let reply = self
            .inner
            .get_ledger_public_key(pb::GetLedgerPublicKeyRequest {})
            .await?;
        Ok(reply.into_inner().public_key)
    }

    /// The position of the durable log's head.
    pub async fn head_position(&mut self) -> Result<u64, ClientError> {
        let reply = self
            .inner
            .get_ledger_head(pb::GetLedgerHeadRequest {})
            .await?;
        Ok(reply.into_inner().position)
    }

    /// The signed head of the durable log, as the JSON `audit verify
    /// --against-head` reads.
    pub async fn signed_head_json(&mut self) -> Result<String, ClientError> {
        let reply = self
            .inner
            .get_ledger_head(pb::GetLedgerHeadRequest {})
            .await?;
        Ok(reply.into_inner().signed_head_json)
    }
}

/// Adds `authorization: Bearer …` to every call, when there is a token.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// The interceptor for `token` (none: calls go without credentials).
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        match token {
            None => Ok(Self(None)),
            Some(token) => format!("Bearer {}", token.trim())
                .parse()
                .map(|value| Self(Some(value)))
                .map_err(|_| "the bearer token has characters a header cannot carry".to_owned()),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
