//! The one mapping from errors to gRPC statuses.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::AppError;
use crate::audit::AuditError;
use crate::domain::DomainError;
use crate::store::{Chain, StoreError};

/// The `domain` of every `ErrorInfo` this service sends.
pub const ERROR_DOMAIN: &str = "imageledger";

/// The reason code of storage failures.
pub const INTERNAL_REASON: &str = "InternalError";

/// The reason code of a command refused while the store takes no writes.
pub const UNWRITABLE_REASON: &str = "ResourceUnavailable.StoreNotWritable";
/// The reason of a call to a replica whose history forked from the
/// database's, while it reloads.
pub const FORKED_REASON: &str = "ResourceUnavailable.ReplicaForked";

/// The reason code of a read that met a damaged record.
pub const DAMAGED_RECORD_REASON: &str = "DataLoss.DamagedRecord";

/// The reason code of a query whose `min_position` was not reached in time.
pub const POSITION_NOT_REACHED_REASON: &str = "ResourceUnavailable.PositionNotReached";

/// A query's `min_position` that the ledger has not applied within the
/// call's deadline: UNAVAILABLE, since a retry (here, later, or on a
/// replica that is further along) may succeed.
pub fn position_not_reached(wanted: u64, at: u64) -> Status {
    with_reason(
        Code::Unavailable,
        format!(
            "min_position {wanted} is not applied here yet (this server is at {at}); retry later"
        ),
        POSITION_NOT_REACHED_REASON,
    )
}

/// The reason code of a `min_position` past every position written.
pub const POSITION_NOT_WRITTEN_REASON: &str = "InvalidParameterValue.PositionNotWritten";

/// A query's `min_position` past every position the log holds: no reply
/// gave it, so waiting would wait for nothing (OUT_OF_RANGE, as for a
/// read past the end of a file).
pub fn position_not_written(wanted: u64, head: u64) -> Status {
    with_reason(
        Code::OutOfRange,
        format!(
            "min_position {wanted} is past every position written (the log's head is {head}); \
             give a position a reply returned"
        ),
        POSITION_NOT_WRITTEN_REASON,
    )
}

/// The gRPC code of a domain error.
pub fn code_of(err: &DomainError) -> Code {
    use DomainError::*;
    match err {
        ImageIdMalformed(_)
        | AccountIdMalformed(_)
        | InvalidParameter(_)
        | LimitExceeded(_)
        | TooLarge(_)
        | RegionNotFound(_) => Code::InvalidArgument,
        ImageNotFound(_) | AccountNotFound(_) => Code::NotFound,
        NotOwner(_) | UntrustedOwner(_) => Code::PermissionDenied,
        ShareLimitExceeded(_) | ImageQuotaExceeded(_) => Code::ResourceExhausted,
        DuplicateName(_) | IdempotencyMismatch(_) => Code::AlreadyExists,
        ShareWithSelf(_)
        | NotMasterAccount(_)
        | AlreadyShared(_)
        | NotShared(_)
        | ImageNotNormal(_)
        | ByolNotShareable(_)
        | EncryptedNotSupported(_)
        | WholeInstanceNotSupported(_)
        | StillShared(_)
        | DeleteInTransientState(_)
        | DeleteSharedImage(_)
        | ModifySharedImage(_)
        | ExportSharedImage(_)
        | InvalidCopyRegion(_)
        | LighthouseAlreadyShared(_)
        | LighthouseUnableToShare(_)
        | ImageDisabled(_)
        | ImageDeprecated(_)
        | DeletionProtected(_)
        | DeletionCooldown(_) => Code::FailedPrecondition,
    }
}

/// A status with `reason` in its `ErrorInfo`, for refusals made outside
/// the domain (authentication, for one).
pub fn refusal(code: Code, message: String, reason: &str) -> Status {
    with_reason(code, message, reason)
}

fn with_reason(code: Code, message: String, reason: &str) -> Status {
    // The call's span (`metrics::grpc`) says why, for logs and traces.
    tracing::Span::current().record("reason", reason);
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::<String, String>::new()),
    )
}

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        with_reason(code_of(&err), err.to_string(), err.reason())
    }
}

impl From<AppError> for Status {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Domain(err) => err.into(),
            AppError::Storage(err) => {
                tracing::error!(err = %Chain(&err), "storage failure");
                match err {
                    // Retrying meets the same damage: the log says where.
                    StoreError::Corrupt(_) => with_reason(
                        Code::Internal,
                        "the ledger's store is damaged; see the server log".into(),
                        INTERNAL_REASON,
                    ),
                    StoreError::Conflict { .. } | StoreError::Backend { .. } => with_reason(
                        Code::Unavailable,
                        "the ledger could not complete the request because of a storage \
                         failure; retry it (a command with the client_token it carried, if any)"
                            .into(),
                        INTERNAL_REASON,
                    ),
                }
            }
            AppError::Damaged(what) => {
                tracing::error!(%what, "a damaged record was read");
                with_reason(
                    Code::DataLoss,
                    format!(
                        "{what}; the log is damaged there: restore it from a backup \
                         (audit verify names every damaged record)"
                    ),
                    DAMAGED_RECORD_REASON,
                )
            }
            AppError::Audit(err) => err.into(),
            // Said once in the log when writes began to fail, not per call.
            AppError::Unwritable(err) => {
                tracing::debug!(err = %Chain(&err), "refused: the store does not take writes");
                with_reason(
                    Code::Unavailable,
                    "the ledger's store does not take writes at the moment (on sled a full \
                     disk or an I/O error, on PostgreSQL a database that cannot be reached or \
                     refuses writes; health says NOT_SERVING meanwhile); nothing was changed: \
                     retry it later"
                        .into(),
                    UNWRITABLE_REASON,
                )
            }
            AppError::Forked => with_reason(
                Code::Unavailable,
                "this replica held history the database lost in a failover and is reloading \
                 it from the database; retry it here shortly or on another replica (a command \
                 with the client_token it carried, if any)"
                    .into(),
                FORKED_REASON,
            ),
            AppError::ShuttingDown => with_reason(
                Code::Unavailable,
                "the ledger is shutting down; retry it on another replica or once it is back \
                 (a command with the client_token it carried, if any)"
                    .into(),
                INTERNAL_REASON,
            ),
            AppError::Start { .. } => {
                tracing::error!(err = %Chain(&err), "the ledger cannot run a command");
                with_reason(
                    Code::Unavailable,
                    "the ledger could not run the request; retry it (a command with the \
                     client_token it carried, if any)"
                        .into(),
                    INTERNAL_REASON,
                )
            }
        }
    }
}

/// A failure of the server itself (a task that panicked, a reply that
/// cannot be encoded): logged with its cause, answered as INTERNAL without it.
pub fn internal(what: &str, err: &dyn std::fmt::Display) -> Status {
    tracing::error!(%err, "{what}");
    with_reason(
        Code::Internal,
        "the ledger failed to answer; see the server log".into(),
        INTERNAL_REASON,
    )
}

impl From<AuditError> for Status {
    fn from(err: AuditError) -> Self {
        match err {
            AuditError::Store(StoreError::Corrupt(what)) => AppError::Damaged(what).into(),
            AuditError::Store(err) => AppError::Storage(err).into(),
            AuditError::Usage(what) => DomainError::InvalidParameter(what).into(),
            AuditError::Invalid { .. }
            | AuditError::Line { .. }
            | AuditError::Projections(_)
            | AuditError::Key(_)
            | AuditError::Io { .. }
            | AuditError::Task(_) => {
                tracing::error!(%err, "audit read failed");
                with_reason(
                    Code::Internal,
                    "the ledger could not read its log; see the server log".into(),
                    INTERNAL_REASON,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_hide_their_cause_from_the_caller() {
        let status = Status::from(AppError::Storage(StoreError::backend(
            "cannot sync sled's log file",
            std::io::Error::other("No space left on device (os error 28) at /srv/ledger/db"),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("/srv"), "{}", status.message());
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, INTERNAL_REASON);
        assert_eq!(info.domain, ERROR_DOMAIN);

        let corrupt = Status::from(AppError::Storage(StoreError::Corrupt("hash".into())));
        assert_eq!(corrupt.code(), Code::Internal);
        let stopping = Status::from(AppError::ShuttingDown);
        assert_eq!(stopping.code(), Code::Unavailable);
    }

    /// Runs one registration on a ledger whose store fails as `fail` asks,
    /// and returns the status the caller gets.
    async fn status_of_failed_write(
        fail: impl FnOnce(&crate::store::Faulty<crate::store::MemoryStore>),
    ) -> Status {
        use crate::app::{CommandOptions, Ledger, WriterOptions};
        use crate::domain::{AccountId, AccountKind, Command, Policy};
        let store =
            std::sync::Arc::new(crate::store::Faulty::new(crate::store::MemoryStore::new()));
        let ledger = Ledger::open(store.clone(), Policy::default(), WriterOptions::default())
            .expect("ledger opens");
        fail(&store);
        let command = Command::RegisterAccount {
            account_id: AccountId::parse("1001").expect("account id"),
            kind: AccountKind::Root,
        };
        let result = ledger.execute(command, CommandOptions::default()).await;
        ledger.shutdown();
        Status::from(result.expect_err("the write fails"))
    }

    #[tokio::test]
    async fn a_corrupt_store_reaches_the_caller_as_internal_without_its_details() {
        let status = status_of_failed_write(|store| store.corrupt_next_append()).await;
        assert_eq!(status.code(), Code::Internal);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, INTERNAL_REASON);
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert!(
            !status.message().contains("injected"),
            "{}",
            status.message()
        );
        assert!(!status.message().contains("head"), "{}", status.message());
    }

    #[tokio::test]
    async fn a_failed_write_reaches_the_caller_as_unavailable_without_its_cause() {
        for fail in [
            crate::store::Faulty::fail_next_appends,
            crate::store::Faulty::fail_next_flushes,
            crate::store::Faulty::fail_next_syncs,
        ] {
            let status = status_of_failed_write(|store| fail(store, 1)).await;
            assert_eq!(status.code(), Code::Unavailable);
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, INTERNAL_REASON);
            assert!(!status.message().contains("/srv"), "{}", status.message());
            assert!(
                !status.message().contains("injected"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn every_domain_error_keeps_its_reason_and_message() {
        let err = DomainError::ShareLimitExceeded("image img-aaaaaaaa is full".into());
        let status = Status::from(err);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "image img-aaaaaaaa is full");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "OverQuota");
    }
}
