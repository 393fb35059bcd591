//! The `ImageLedger` service: decode, call the ledger, encode.

use tonic::{Request, Response, Status};

use super::authenticate::Witness;
use super::consistency::reached;
use super::controls::{lineage_message, trusted_owners_message};
use super::convert::{image_refs, timestamp, AuthorizeQuery, Commanded};
use super::pb;
use super::pb::image_ledger_server::ImageLedger;
use crate::app::{Committed, Ledger};
use crate::auth::Caller;
use crate::domain::{self, AccountId, DomainError, ImageId, Reply};
use crate::projection::{describe_images, ImageQuery, PageCache};

/// The gRPC face of a [`Ledger`].
pub struct LedgerService {
    ledger: Ledger,
    pages: PageCache<pb::DescribeImagesResponse>,
}

impl LedgerService {
    /// Serves `ledger`, keeping `DescribeImages` pages in `pages`.
    pub fn new(ledger: Ledger, pages: PageCache<pb::DescribeImagesResponse>) -> Self {
        Self { ledger, pages }
    }

    async fn run<T>(&self, request: Request<T>) -> Result<Committed, Status>
    where
        Commanded: TryFrom<T, Error = DomainError>,
    {
        let caller = caller_of(&request);
        let Commanded {
            command,
            mut options,
        } = Commanded::try_from(request.into_inner())?;
        if let Some(actor) = command.actor() {
            on_span(actor);
            confined(caller.as_ref(), actor)?;
        }
        options.principal = caller.map(|called| called.caller.principal);
        Ok(self.ledger.commit(command, options).await?)
    }

    /// Runs a command whose reply is its position alone.
    async fn positioned<T, R>(&self, request: Request<T>, reply: impl FnOnce(u64) -> R) -> Answer<R>
    where
        Commanded: TryFrom<T, Error = DomainError>,
    {
        let position = self.run(request).await?.position;
        Ok(Response::new(reply(position)))
    }
}

/// Refuses a call that acts for an account its principal's `accounts`
/// does not list; the refusal is counted and logged with authentication's.
fn confined(called: Option<&Called>, account: &AccountId) -> Result<(), Status> {
    match called {
        Some(Called { caller, witness }) if !caller.may_act_for(account) => {
            let detail = format!(
                "principal {} may not act for account {account}: its [auth] entry lists the accounts it may",
                caller.principal
            );
            if let Some(witness) = witness {
                witness.refused(crate::auth::ACCOUNT_NOT_ALLOWED, &detail);
            }
            Err(super::refusal(
                tonic::Code::PermissionDenied,
                detail,
                crate::auth::ACCOUNT_NOT_ALLOWED,
            ))
        }
        _ => Ok(()),
    }
}

/// An authenticated call's caller, and where a refusal of it is told.
struct Called {
    caller: Caller,
    witness: Option<Witness>,
}

/// The caller of a call, if it was authenticated.
fn caller_of<T>(request: &Request<T>) -> Option<Called> {
    let extensions = request.extensions();
    Some(Called {
        caller: extensions.get::<Caller>().cloned()?,
        witness: extensions.get::<Witness>().cloned(),
    })
}

/// Names the account a call acts for on the call's span (see
/// `metrics::grpc`), once its id is known to be well formed.
fn on_span(account: &AccountId) {
    tracing::Span::current().record("account", account.as_str());
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageLedger for LedgerService {
    async fn register_account(
        &self,
        request: Request<pb::RegisterAccountRequest>,
    ) -> Answer<pb::RegisterAccountResponse> {
        self.positioned(request, |position| pb::RegisterAccountResponse { position })
            .await
    }

    async fn register_image(
        &self,
        request: Request<pb::RegisterImageRequest>,
    ) -> Answer<pb::RegisterImageResponse> {
        let Committed { reply, position } = self.run(request).await?;
        let image_id = match reply {
            Reply::ImageRegistered { image_id } => image_id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::RegisterImageResponse {
            image_id,
            position,
        }))
    }

    async fn update_image_state(
        &self,
        request: Request<pb::UpdateImageStateRequest>,
    ) -> Answer<pb::UpdateImageStateResponse> {
        self.positioned(request, |position| pb::UpdateImageStateResponse {
            position,
        })
        .await
    }

    async fn share_image(
        &self,
        request: Request<pb::ShareImageRequest>,
    ) -> Answer<pb::ShareImageResponse> {
        self.positioned(request, |position| pb::ShareImageResponse { position })
            .await
    }

    async fn cancel_image_sharing(
        &self,
        request: Request<pb::CancelImageSharingRequest>,
    ) -> Answer<pb::CancelImageSharingResponse> {
        self.positioned(request, |position| pb::CancelImageSharingResponse {
            position,
        })
        .await
    }

    async fn copy_image(
        &self,
        request: Request<pb::CopyImageRequest>,
    ) -> Answer<pb::CopyImageResponse> {
        let Committed { reply, position } = self.run(request).await?;
        let images = match reply {
            Reply::ImagesCopied { images } => image_refs(&images),
            _ => Vec::new(),
        };
        Ok(Response::new(pb::CopyImageResponse { images, position }))
    }

    async fn delete_image(
        &self,
        request: Request<pb::DeleteImageRequest>,
    ) -> Answer<pb::DeleteImageResponse> {
        self.positioned(request, |position| pb::DeleteImageResponse { position })
            .await
    }

    async fn modify_image_attribute(
        &self,
        request: Request<pb::ModifyImageAttributeRequest>,
    ) -> Answer<pb::ModifyImageAttributeResponse> {
        self.positioned(request, |position| pb::ModifyImageAttributeResponse {
            position,
        })
        .await
    }

    async fn modify_lighthouse_share_permission(
        &self,
        request: Request<pb::ModifyLighthouseSharePermissionRequest>,
    ) -> Answer<pb::ModifyLighthouseSharePermissionResponse> {
        self.positioned(request, |position| {
            pb::ModifyLighthouseSharePermissionResponse { position }
        })
        .await
    }

    async fn authorize_image_use(
        &self,
        request: Request<pb::AuthorizeImageUseRequest>,
    ) -> Answer<pb::AuthorizeImageUseResponse> {
        let caller = caller_of(&request);
        let (metadata, _, request) = request.into_parts();
        let min_position = request.min_position;
        let query = AuthorizeQuery::try_from(request)?;
        on_span(&query.account_id);
        confined(caller.as_ref(), &query.account_id)?;
        // A region outside the list is bad input, not a denial.
        self.ledger.check_region(&query.region)?;
        reached(&self.ledger, min_position, &metadata).await?;
        let state = self.ledger.state();
        let verdict = domain::authorize(
            &state,
            self.ledger.configured_policy(),
            &query.account_id,
            &query.image_id,
            &query.region,
            query.usage,
            time::OffsetDateTime::now_utc(),
        );
        Ok(Response::new(match verdict {
            Ok(allowed) => pb::AuthorizeImageUseResponse {
                allowed: true,
                reason: String::new(),
                audit_reason: allowed
                    .would_refuse
                    .map(|refusal| refusal.reason().to_owned())
                    .unwrap_or_default(),
            },
            Err(err) => pb::AuthorizeImageUseResponse {
                allowed: false,
                reason: err.reason().to_owned(),
                audit_reason: String::new(),
            },
        }))
    }

    async fn describe_images(
        &self,
        request: Request<pb::DescribeImagesRequest>,
    ) -> Answer<pb::DescribeImagesResponse> {
        let caller = caller_of(&request);
        let (metadata, _, request) = request.into_parts();
        let min_position = request.min_position;
        let query = ImageQuery::try_from(request)?;
        if let Some(account) = &query.account_id {
            on_span(account);
            confined(caller.as_ref(), account)?;
        }
        reached(&self.ledger, min_position, &metadata).await?;
        let state = self.ledger.state();
        let now = time::OffsetDateTime::now_utc();
        let reply = self.pages.reply(&state, &query, now, || {
            let page = describe_images(&state, self.ledger.configured_policy(), &query, now)?;
            Ok(pb::DescribeImagesResponse::from_page(&page))
        })?;
        Ok(Response::new(reply))
    }

    async fn describe_image_share_permission(
        &self,
        request: Request<pb::DescribeImageSharePermissionRequest>,
    ) -> Answer<pb::DescribeImageSharePermissionResponse> {
        let principal = caller_of(&request);
        let (metadata, _, request) = request.into_parts();
        let caller = AccountId::parse(&request.account_id)?;
        on_span(&caller);
        confined(principal.as_ref(), &caller)?;
        let image_id = ImageId::parse(&request.image_id)?;
        reached(&self.ledger, request.min_position, &metadata).await?;
        let state = self.ledger.state();
        let image = domain::share_permission_view(&state, &caller, &image_id)?;
        let mut shares: Vec<_> = image.shares.iter().collect();
        shares.sort_by(|(a_id, a), (b_id, b)| {
            a.created_time
                .cmp(&b.created_time)
                .then_with(|| a_id.cmp(b_id))
        });
        Ok(Response::new(pb::DescribeImageSharePermissionResponse {
            shares: shares
                .into_iter()
                .map(|(account, share)| pb::SharePermission {
                    account_id: account.to_string(),
                    created_time: Some(timestamp(share.created_time)),
                    expires_at: share.expires_at.map(timestamp),
                })
                .collect(),
            lighthouse_shared: image.lighthouse_shared,
        }))
    }

    async fn describe_image_quota(
        &self,
        request: Request<pb::DescribeImageQuotaRequest>,
    ) -> Answer<pb::DescribeImageQuotaResponse> {
        let caller = caller_of(&request);
        let (metadata, _, request) = request.into_parts();
        let account = AccountId::parse(&request.account_id)?;
        on_span(&account);
        confined(caller.as_ref(), &account)?;
        let region = domain::Region::new(request.region);
        self.ledger.check_region(&region)?;
        reached(&self.ledger, request.min_position, &metadata).await?;
        let state = self.ledger.state();
        let policy = state.policy_or(self.ledger.configured_policy());
        domain::registered(&state, &account)?;
        Ok(Response::new(pb::DescribeImageQuotaResponse {
            quota: policy.image_quota,
            used: state.images_used(&account, &region),
        }))
    }

    async fn modify_image_share_expiry(
        &self,
        request: Request<pb::ModifyImageShareExpiryRequest>,
    ) -> Answer<pb::ModifyImageShareExpiryResponse> {
        self.positioned(request, |position| pb::ModifyImageShareExpiryResponse {
            position,
        })
        .await
    }

    async fn leave_image_share(
        &self,
        request: Request<pb::LeaveImageShareRequest>,
    ) -> Answer<pb::LeaveImageShareResponse> {
        self.positioned(request, |position| pb::LeaveImageShareResponse { position })
            .await
    }

    async fn disable_image(
        &self,
        request: Request<pb::DisableImageRequest>,
    ) -> Answer<pb::DisableImageResponse> {
        self.positioned(request, |position| pb::DisableImageResponse { position })
            .await
    }

    async fn enable_image(
        &self,
        request: Request<pb::EnableImageRequest>,
    ) -> Answer<pb::EnableImageResponse> {
        self.positioned(request, |position| pb::EnableImageResponse { position })
            .await
    }

    async fn modify_image_deletion_protection(
        &self,
        request: Request<pb::ModifyImageDeletionProtectionRequest>,
    ) -> Answer<pb::ModifyImageDeletionProtectionResponse> {
        self.positioned(request, |position| {
            pb::ModifyImageDeletionProtectionResponse { position }
        })
        .await
    }

    async fn deprecate_image(
        &self,
        request: Request<pb::DeprecateImageRequest>,
    ) -> Answer<pb::DeprecateImageResponse> {
        self.positioned(request, |position| pb::DeprecateImageResponse { position })
            .await
    }

    async fn undeprecate_image(
        &self,
        request: Request<pb::UndeprecateImageRequest>,
    ) -> Answer<pb::UndeprecateImageResponse> {
        self.positioned(request, |position| pb::UndeprecateImageResponse {
            position,
        })
        .await
    }

    async fn set_trusted_image_owners(
        &self,
        request: Request<pb::SetTrustedImageOwnersRequest>,
    ) -> Answer<pb::SetTrustedImageOwnersResponse> {
        self.positioned(request, |position| pb::SetTrustedImageOwnersResponse {
            position,
        })
        .await
    }

    async fn describe_trusted_image_owners(
        &self,
        request: Request<pb::DescribeTrustedImageOwnersRequest>,
    ) -> Answer<pb::DescribeTrustedImageOwnersResponse> {
        let caller = caller_of(&request);
        let (metadata, _, request) = request.into_parts();
        let account = AccountId::parse(&request.account_id)?;
        on_span(&account);
        confined(caller.as_ref(), &account)?;
        reached(&self.ledger, request.min_position, &metadata).await?;
        let state = self.ledger.state();
        let account = domain::registered(&state, &account)?;
        Ok(Response::new(trusted_owners_message(
            account.trusted_owners.as_deref(),
        )))
    }

    async fn get_image_lineage(
        &self,
        request: Request<pb::GetImageLineageRequest>,
    ) -> Answer<pb::GetImageLineageResponse> {
        let principal = caller_of(&request);
        let (metadata, _, request) = request.into_parts();
        let caller = AccountId::parse(&request.account_id)?;
        on_span(&caller);
        confined(principal.as_ref(), &caller)?;
        let image_id = ImageId::parse(&request.image_id)?;
        reached(&self.ledger, request.min_position, &metadata).await?;
        let state = self.ledger.state();
        let lineage = domain::lineage(&state, &caller, &image_id, time::OffsetDateTime::now_utc())?;
        Ok(Response::new(lineage_message(lineage)))
    }
}
