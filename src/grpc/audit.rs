//! The `AuditLog` service: the log, history, point-in-time access and signed heads.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::timestamp;
use super::feed::Feed;
use super::pb;
use super::pb::audit_log_server::AuditLog;
use super::subscriptions::{peer_of, Subscriptions};
use super::tail::Tail;
use crate::app::Ledger;
use crate::audit::{self, AuditError, LedgerKey};
use crate::domain::{DomainError, ImageId};
use crate::store::{try_scan, Envelope, Store, StoreError};

/// The reason of a read that met a damaged record.
pub const DAMAGED_RECORD_REASON: &str = "DataLoss.DamagedRecord";

/// Records read from the store per step of a stream.
const CHUNK: u64 = 512;
/// Default and largest `limit` of `ReadEvents`.
const DEFAULT_READ: u32 = 1_000;
const MAX_READ: u32 = 10_000;

/// The gRPC face of the audit tooling.
pub struct AuditService {
    ledger: Ledger,
    key: Arc<LedgerKey>,
    stopping: watch::Receiver<bool>,
    subscriptions: Arc<Subscriptions>,
    /// The last durable records, read once for every live subscriber.
    tail: Arc<Tail>,
}

impl AuditService {
    /// Serves the log of `ledger`, signing heads with `key`, within the caps
    /// of `subscriptions`; open streams end when `stopping` turns true.
    /// Starts the task that follows the log's tail (on the current runtime).
    pub fn new(
        ledger: Ledger,
        key: Arc<LedgerKey>,
        stopping: watch::Receiver<bool>,
        subscriptions: Arc<Subscriptions>,
    ) -> Self {
        let tail = Tail::start(&ledger, stopping.clone());
        Self {
            ledger,
            key,
            stopping,
            subscriptions,
            tail,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::EventEnvelope, Status>> + Send>>;

/// The stored record as the `EventEnvelope` message.
pub fn envelope_message(envelope: Envelope, raw: &[u8]) -> pb::EventEnvelope {
    pb::EventEnvelope {
        position: envelope.position,
        aggregate_id: envelope.aggregate_id,
        aggregate_version: envelope.aggregate_version,
        event_type: envelope.event_type,
        schema_version: envelope.schema_version,
        recorded_at: Some(timestamp(envelope.recorded_at)),
        actor: envelope.actor.unwrap_or_default(),
        client_token: envelope.client_token.unwrap_or_default(),
        request_hash: envelope.request_hash.unwrap_or_default(),
        payload_json: envelope.payload.get().to_owned(),
        prev_hash: envelope.prev_hash,
        hash: envelope.hash,
        raw: String::from_utf8_lossy(raw).into_owned(),
        principal: envelope.principal.flatten().unwrap_or_default(),
    }
}

/// Reads records `from..=to` off the async workers.
pub(super) async fn read_range(
    store: Arc<dyn Store>,
    from: u64,
    to: u64,
) -> Result<Vec<pb::EventEnvelope>, Status> {
    let read = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let mut out = Vec::new();
        try_scan(
            store.as_ref(),
            from,
            |position, bytes| -> Result<bool, StoreError> {
                if position > to {
                    return Ok(false);
                }
                let envelope = Envelope::decode(bytes).map_err(|err| {
                    StoreError::Corrupt(format!("the record at position {position}: {err}"))
                })?;
                out.push(envelope_message(envelope, bytes));
                Ok(true)
            },
        )?;
        Ok(out)
    })
    .await
    .map_err(|e| super::status::internal("a reader task failed", &e))?;
    read.map_err(|err| match err {
        // Reading it again will not help: name the damage.
        StoreError::Corrupt(what) => {
            tracing::error!(%what, "a damaged record was read");
            super::refusal(
                tonic::Code::DataLoss,
                format!(
                    "{what}; the log is damaged there: restore it from a backup \
                     (audit verify names every damaged record)"
                ),
                DAMAGED_RECORD_REASON,
            )
        }
        err => Status::from(crate::app::AppError::Storage(err)),
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| super::status::internal("a reader task failed", &e))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl AuditLog for AuditService {
    type ReadEventsStream = EventStream;
    type SubscribeStream = EventStream;

    async fn read_events(
        &self,
        request: Request<pb::ReadEventsRequest>,
    ) -> Result<Response<Self::ReadEventsStream>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_READ,
            n if n > MAX_READ => {
                return Err(DomainError::InvalidParameter(format!(
                    "limit is {n}; it must be at most {MAX_READ}"
                ))
                .into())
            }
            n => n,
        };
        let from = request.from_position.max(1);
        let to = self
            .ledger
            .durable_head()
            .position
            .min(from.saturating_add(u64::from(limit)) - 1);
        let store = Arc::clone(self.ledger.store());
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut next = from;
            while next <= to {
                let end = to.min(next + CHUNK - 1);
                let batch = read_range(Arc::clone(&store), next, end).await;
                let failed = batch.is_err();
                for item in batch.map_or_else(|e| vec![Err(e)], |v| v.into_iter().map(Ok).collect())
                {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                if failed {
                    return;
                }
                next = end + 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let open = self.subscriptions.admit(peer_of(&request))?;
        let feed = Feed::new(
            request.into_inner().from_position,
            Arc::clone(self.ledger.store()),
            Arc::clone(&self.tail),
            self.stopping.clone(),
            Arc::clone(&self.subscriptions),
            open,
        );
        Ok(Response::new(Box::pin(feed.into_stream())))
    }

    async fn get_image_history(
        &self,
        request: Request<pb::GetImageHistoryRequest>,
    ) -> Result<Response<pb::GetImageHistoryResponse>, Status> {
        let image = ImageId::parse(&request.into_inner().image_id)?;
        let store = Arc::clone(self.ledger.store());
        let limit = self.ledger.durable_head().position;
        let events = blocking(move || audit::image_history(store.as_ref(), &image)).await?;
        Ok(Response::new(pb::GetImageHistoryResponse {
            events: events
                .into_iter()
                .filter(|record| record.envelope.position <= limit)
                .map(|record| envelope_message(record.envelope, &record.raw))
                .collect(),
        }))
    }

    async fn get_image_access_as_of(
        &self,
        request: Request<pb::GetImageAccessAsOfRequest>,
    ) -> Result<Response<pb::GetImageAccessAsOfResponse>, Status> {
        let request = request.into_inner();
        let image = ImageId::parse(&request.image_id)?;
        let durable = self.ledger.durable_head().position;
        let as_of = super::access::as_of_from(request.as_of)?;
        if self.ledger.state().any_image(&image).is_none() {
            return Err(DomainError::ImageNotFound(format!("image {image} does not exist")).into());
        }
        let store = Arc::clone(self.ledger.store());
        let access =
            blocking(move || audit::access_as_of(store.as_ref(), &image, as_of, durable)).await?;
        Ok(Response::new(super::access::access_message(access)))
    }

    async fn get_ledger_head(
        &self,
        _request: Request<pb::GetLedgerHeadRequest>,
    ) -> Result<Response<pb::GetLedgerHeadResponse>, Status> {
        let head = self.ledger.durable_head();
        let store = Arc::clone(self.ledger.store());
        let key = Arc::clone(&self.key);
        let signed = blocking(move || key.sign_head_of(store.as_ref(), head)).await?;
        let json = serde_json::to_string(&signed)
            .map_err(|e| super::status::internal("cannot encode the head", &e))?;
        Ok(Response::new(pb::GetLedgerHeadResponse {
            position: signed.position,
            hash: signed.hash,
            recorded_at: signed.recorded_at.unwrap_or_default(),
            signature: signed.signature,
            public_key: signed.public_key,
            signed_head_json: json,
        }))
    }

    async fn get_ledger_public_key(
        &self,
        _request: Request<pb::GetLedgerPublicKeyRequest>,
    ) -> Result<Response<pb::GetLedgerPublicKeyResponse>, Status> {
        Ok(Response::new(pb::GetLedgerPublicKeyResponse {
            public_key: self.key.public_hex(),
        }))
    }
}
