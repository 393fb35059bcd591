//! The `AuditLog` service: the log, history, point-in-time access and signed heads.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::{envelope_message, envelope_messages};
use super::feed::Feed;
use super::pb;
use super::pb::audit_log_server::AuditLog;
use super::subscriptions::{peer_of, Subscriptions};
use super::tail::Tail;
use crate::app::Ledger;
use crate::audit::LedgerKey;
use crate::domain::{DomainError, ImageId};

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
        let log = self.ledger.log();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut next = from;
            while next <= to {
                let end = to.min(next + CHUNK - 1);
                let batch = log
                    .read_range(next, end)
                    .await
                    .map(envelope_messages)
                    .map_err(Status::from);
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
            self.ledger.log(),
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
        let events = self.ledger.log().image_history(image).await?;
        Ok(Response::new(pb::GetImageHistoryResponse {
            events: events
                .into_iter()
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
        let as_of = super::access::as_of_from(request.as_of)?;
        if self.ledger.state().any_image(&image).is_none() {
            return Err(DomainError::ImageNotFound(format!("image {image} does not exist")).into());
        }
        let access = self.ledger.log().access_as_of(image, as_of).await?;
        Ok(Response::new(super::access::access_message(access)))
    }

    async fn get_ledger_head(
        &self,
        _request: Request<pb::GetLedgerHeadRequest>,
    ) -> Result<Response<pb::GetLedgerHeadResponse>, Status> {
        let signed = self.ledger.log().signed_head(Arc::clone(&self.key)).await?;
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
