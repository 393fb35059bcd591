//! The actions of the door: which API version serves which, and the
//! helpers every action shares (the acting account, the region check,
//! running a command as the key's principal, dry runs).

mod images;
mod lifecycle;
mod shares;

use std::sync::Arc;

use super::envelope::{ApiError, Fields};
use super::params::Params;
use crate::app::{CommandOptions, Committed, Ledger};
use crate::auth::CloudKey;
use crate::domain::{Command, ImageId, LedgerState, Region};
use crate::projection::PageCache;

pub use images::JsonPage;

/// The two APIs this door speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// CVM, version 2017-03-12.
    Cvm,
    /// Lighthouse, version 2020-03-24.
    Lighthouse,
}

impl Api {
    /// The API of a credential scope's service and `X-TC-Version`:
    /// `Err` with the code for an unknown pair.
    pub fn of(service: &str, version: &str) -> Result<Self, ApiError> {
        match (service, version) {
            ("cvm", "2017-03-12") => Ok(Api::Cvm),
            ("lighthouse", "2020-03-24") => Ok(Api::Lighthouse),
            ("cvm" | "lighthouse", _) => Err(ApiError::new(
                "NoSuchVersion",
                format!(
                    "the version {version:?} of {service} is not served here (cvm: 2017-03-12, lighthouse: 2020-03-24)"
                ),
            )),
            _ => Err(ApiError::new(
                "AuthFailure.InvalidAuthorization",
                format!("the credential's service {service:?} is not served here (cvm, lighthouse)"),
            )),
        }
    }

    /// The service name, as metrics and logs give it.
    pub fn service(self) -> &'static str {
        match self {
            Api::Cvm => "cvm",
            Api::Lighthouse => "lighthouse",
        }
    }

    /// The actions served, by name.
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Api::Cvm => &[
                "DescribeImages",
                "DescribeImageSharePermission",
                "ModifyImageSharePermission",
                "DeleteImages",
                "ModifyImageAttribute",
                "SyncImages",
                "DescribeImageQuota",
            ],
            Api::Lighthouse => &["ModifyImageSharePermission"],
        }
    }

    /// The action's name as served (a `'static` for metrics), or
    /// `InvalidAction`.
    pub fn action(self, name: &str) -> Result<&'static str, ApiError> {
        self.actions()
            .iter()
            .find(|served| **served == name)
            .copied()
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidAction",
                    format!(
                        "the action {name:?} is not served for {} here (it serves {})",
                        self.service(),
                        self.actions().join(", ")
                    ),
                )
            })
    }
}

/// One authenticated call.
pub struct Call<'a> {
    /// The API.
    pub api: Api,
    /// The action, one of [`Api::actions`].
    pub action: &'static str,
    /// `X-TC-Region`, checked against the configured regions.
    pub region: Region,
    /// The key that signed it: its account acts.
    pub key: &'a CloudKey,
    /// The JSON body.
    pub body: &'a [u8],
}

/// Runs `call` on `ledger` and returns the reply's fields; `pages` keeps
/// the door's `DescribeImages` pages.
pub async fn run(
    ledger: &Ledger,
    pages: &PageCache<JsonPage>,
    call: &Call<'_>,
) -> Result<Fields, ApiError> {
    match (call.api, call.action) {
        (Api::Cvm, "DescribeImages") => {
            linearizable(ledger).await?;
            images::describe_images(ledger, pages, call)
        }
        (Api::Cvm, "DescribeImageSharePermission") => {
            linearizable(ledger).await?;
            shares::describe(ledger, call)
        }
        (Api::Cvm, "ModifyImageSharePermission") => shares::modify(ledger, call).await,
        (Api::Cvm, "DeleteImages") => lifecycle::delete_images(ledger, call).await,
        (Api::Cvm, "ModifyImageAttribute") => lifecycle::modify_attribute(ledger, call).await,
        (Api::Cvm, "SyncImages") => lifecycle::sync_images(ledger, call).await,
        (Api::Cvm, "DescribeImageQuota") => {
            linearizable(ledger).await?;
            lifecycle::quota(ledger, call)
        }
        (Api::Lighthouse, "ModifyImageSharePermission") => shares::lighthouse(ledger, call).await,
        (api, action) => Err(ApiError::new(
            "InvalidAction",
            format!("the action {action:?} is not served for {}", api.service()),
        )),
    }
}

impl Call<'_> {
    /// The body's parameters, of those `takes` names.
    fn params(&self, takes: &[&str]) -> Result<Params, ApiError> {
        Params::parse(self.body, self.action, takes)
    }

    /// Runs `command` as the key's principal.
    async fn commit(
        &self,
        ledger: &Ledger,
        command: Command,
        dry_run: bool,
    ) -> Result<Committed, ApiError> {
        let options = CommandOptions {
            client_token: None,
            dry_run,
            principal: Some(Arc::clone(&self.key.principal)),
        };
        Ok(ledger.commit(command, options).await?)
    }

    /// Runs `commands` as one (`Command::Together`): every one applied or
    /// none, in one commit. A dry run that would succeed answers
    /// `DryRunOperation`, as Tencent does.
    async fn commit_all(
        &self,
        ledger: &Ledger,
        mut commands: Vec<Command>,
        dry_run: bool,
    ) -> Result<Committed, ApiError> {
        let command = match commands.len() {
            1 => commands.remove(0),
            _ => Command::Together { commands },
        };
        let committed = self.commit(ledger, command, dry_run).await?;
        if dry_run {
            return Err(ApiError::new(
                "DryRunOperation",
                "the request would have succeeded; DryRun is set, so nothing was changed",
            ));
        }
        Ok(committed)
    }

    /// Refuses an image that lives in another region than the call's, as
    /// Tencent does (to it the image is not there). Images that do not
    /// exist are left to the rules, which name them.
    fn in_region(&self, state: &LedgerState, image_id: &ImageId) -> Result<(), ApiError> {
        match state.live_image(image_id) {
            Some(image) if image.region != self.region => Err(ApiError::new(
                "InvalidImageId.NotFound",
                format!(
                    "the image {image_id} is not in the region {} (sharing is per region: call the image's own region)",
                    self.region
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// How long a query waits for the state to include every write
/// acknowledged before it (this API has no deadline header).
const LINEARIZABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Returns once the state includes every write any replica acknowledged
/// before the call (on a shared log: the database's head read after it
/// arrived; see `Ledger::fence`), as the gRPC queries without
/// `min_position` do.
async fn linearizable(ledger: &Ledger) -> Result<(), ApiError> {
    let position = ledger.fence().await?;
    if ledger.reaches(position, LINEARIZABLE_WAIT).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            "ResourceUnavailable",
            format!(
                "this replica has not caught up with the log's position {position} in {} s; retry",
                LINEARIZABLE_WAIT.as_secs()
            ),
        ))
    }
}

/// Parses image ids, refusing an empty list or one with duplicates.
fn image_ids(name: &str, raw: &[String]) -> Result<Vec<ImageId>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::new(
            "InvalidParameterValue",
            format!("`{name}` is empty; name at least one image"),
        ));
    }
    let mut ids: Vec<ImageId> = Vec::with_capacity(raw.len());
    for id in raw {
        let id = ImageId::parse(id)?;
        if ids.contains(&id) {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!("`{name}` names {id} twice"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}
