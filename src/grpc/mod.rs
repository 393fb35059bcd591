//! The gRPC layer: generated types, conversions, the services and the one
//! error-to-status mapping.

mod access;
mod audit;
pub mod authenticate;
mod client;
mod codec_errors;
mod consistency;
mod controls;
mod convert;
mod feed;
mod page;
mod service;
mod status;
mod subscriptions;
mod tail;
mod transport;

/// Types generated from `proto/imageledger/v1/ledger.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("imageledger.v1");

    pub use super::page::DescribeImagesResponse;

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("imageledger_descriptor");
}

pub use crate::listener::FIRST_BYTES_TIMEOUT;
pub use audit::AuditService;
pub use client::{AuditClient, Bearer, ClientError};
pub use codec_errors::{explain_codec_errors, MALFORMED_MESSAGE_REASON, REQUEST_TOO_LARGE_REASON};
pub use consistency::{deadline_of, DEFAULT_WAIT};
pub use convert::{envelope_message, state_message, state_of, time_of, timestamp, Commanded};
pub use service::LedgerService;
pub use status::{
    code_of, refusal, DAMAGED_RECORD_REASON, ERROR_DOMAIN, INTERNAL_REASON,
    POSITION_NOT_REACHED_REASON, UNWRITABLE_REASON,
};
pub use subscriptions::{Subscriptions, TOO_MANY_SUBSCRIPTIONS};
pub use transport::{SmallFrames, Unvectored};
