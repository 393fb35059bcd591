//! `GetImageAccessAsOf` on the wire: the point in time asked for and the
//! access found, each converted both ways, side by side.

use tonic::Status;

use super::convert::{state_message, state_of, time_of, timestamp};
use super::pb;
use super::pb::get_image_access_as_of_request::AsOf as WireAsOf;
use crate::audit::{Access, AccessEntry, AsOf, Role};
use crate::domain::DomainError;

/// The point in time a request asks about.
pub(super) fn as_of_from(wire: Option<WireAsOf>) -> Result<AsOf, Status> {
    match wire {
        Some(WireAsOf::AsOfPosition(p)) => Ok(AsOf::Position(p)),
        Some(WireAsOf::AsOfTime(t)) => {
            Ok(AsOf::Time(time_of(&t).ok_or_else(|| {
                DomainError::InvalidParameter("as_of_time is out of range".into())
            })?))
        }
        None => {
            Err(DomainError::InvalidParameter("give as_of_time or as_of_position".into()).into())
        }
    }
}

/// The inverse of [`as_of_from`].
pub(super) fn as_of_message(as_of: AsOf) -> WireAsOf {
    match as_of {
        AsOf::Position(p) => WireAsOf::AsOfPosition(p),
        AsOf::Time(t) => WireAsOf::AsOfTime(timestamp(t)),
    }
}

/// The reply for an access found.
pub(super) fn access_message(access: Access) -> pb::GetImageAccessAsOfResponse {
    pb::GetImageAccessAsOfResponse {
        image_id: access.image_id,
        position: access.position,
        existed: access.region.is_some(),
        region: access.region.unwrap_or_default(),
        state: access.state.map_or(0, |state| state_message(state) as i32),
        deleted: access.deleted,
        lighthouse_shared: access.lighthouse_shared,
        accounts: access
            .accounts
            .into_iter()
            .map(|entry| pb::AccessEntry {
                account_id: entry.account_id,
                role: match entry.role {
                    Role::Owner => pb::AccessRole::Owner,
                    Role::Recipient => pb::AccessRole::Recipient,
                } as i32,
                since: Some(timestamp(entry.since)),
                until: entry.until.map(timestamp),
            })
            .collect(),
        reason: access.reason.unwrap_or_default(),
        disabled: access.disabled,
        deprecated: access.deprecated,
        untrusted_recipients: access.untrusted_recipients,
    }
}

/// The inverse of [`access_message`].
pub(super) fn access_of(reply: pb::GetImageAccessAsOfResponse) -> Access {
    let time_of = |t: Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(time_of)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    Access {
        image_id: reply.image_id,
        position: reply.position,
        region: reply.existed.then_some(reply.region),
        state: pb::ImageState::try_from(reply.state)
            .ok()
            .and_then(state_of),
        deleted: reply.deleted,
        lighthouse_shared: reply.lighthouse_shared,
        accounts: reply
            .accounts
            .into_iter()
            .map(|entry| AccessEntry {
                account_id: entry.account_id,
                role: if entry.role == pb::AccessRole::Owner as i32 {
                    Role::Owner
                } else {
                    Role::Recipient
                },
                since: time_of(entry.since),
                until: entry.until.as_ref().and_then(super::convert::time_of),
            })
            .collect(),
        reason: (!reply.reason.is_empty()).then_some(reply.reason),
        disabled: reply.disabled,
        deprecated: reply.deprecated,
        untrusted_recipients: reply.untrusted_recipients,
    }
}
