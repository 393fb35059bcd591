//! `min_position`: a query that names a log position (one a mutating reply
//! gave) is answered from a state that includes it. The server waits for
//! the position within the call's deadline (`grpc-timeout`), or
//! [`DEFAULT_WAIT`] without one, and fails just before the deadline, so
//! the caller hears why rather than a bare DEADLINE_EXCEEDED. A query
//! without one is linearizable: it waits, the same way, for the head read
//! after it arrived.
//!
//! A position past the log's head (read after the call arrived) cannot
//! have come from a reply, which is sent only once its position is
//! written: it is refused at once rather than waited for. The wait is
//! capped at [`MAX_WAIT`] whatever the deadline.

use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::Status;

use super::status::{position_not_reached, position_not_written};
use crate::app::Ledger;

/// How long a query waits for its position when the call has no deadline.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// The longest a query waits for its position, whatever its deadline.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Returns once the ledger's published state includes `min_position`, or,
/// when it is 0, every write acknowledged before the call (see
/// [`Ledger::fence`]).
pub(super) async fn reached(
    ledger: &Ledger,
    min_position: u64,
    metadata: &MetadataMap,
) -> Result<(), Status> {
    let min_position = match min_position {
        0 => ledger.fence().await.map_err(Status::from)?,
        wanted => {
            ledger.readable().map_err(Status::from)?;
            if ledger.durable_head().position >= wanted {
                return Ok(());
            }
            // Every position a reply gave is written, here or, with
            // replicas, in the database: its head, read now, is at least
            // that.
            let written = ledger.fence().await.map_err(Status::from)?;
            if wanted > written {
                return Err(position_not_written(wanted, written));
            }
            wanted
        }
    };
    if ledger.durable_head().position >= min_position {
        return Ok(());
    }
    let budget = deadline(metadata)
        .map_or(DEFAULT_WAIT, |deadline| {
            // Answer before the deadline cuts the call off.
            deadline.saturating_sub((deadline / 5).min(Duration::from_millis(100)))
        })
        .min(MAX_WAIT);
    if ledger
        .reaches(min_position, budget)
        .await
        .map_err(Status::from)?
    {
        Ok(())
    } else {
        Err(position_not_reached(
            min_position,
            ledger.durable_head().position,
        ))
    }
}

/// The call's deadline from its `grpc-timeout` header, if it has one.
fn deadline(metadata: &MetadataMap) -> Option<Duration> {
    deadline_of(metadata.as_ref())
}

/// The deadline a request's `grpc-timeout` header gives, if it has one.
pub fn deadline_of(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_read_in_every_unit_grpc_allows() {
        let of = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().expect("ascii"));
            deadline(&metadata)
        };
        assert_eq!(of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(of("4S"), Some(Duration::from_secs(4)));
        assert_eq!(of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(of("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(of("5x"), None);
        assert_eq!(of("m"), None);
        assert_eq!(deadline(&MetadataMap::new()), None);
    }
}
