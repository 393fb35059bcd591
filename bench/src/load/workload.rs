//! What the scenarios send: the preloaded images found through the API,
//! and the request loop of one task.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use image_ledger::domain::Policy;
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::image_ledger_client::ImageLedgerClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{BenchConfig, BoxError, Scenario};
use crate::cloud::{bench_key, Call, Connection};
use crate::fill::account;

/// The account that receives every share of the share scenario; it takes
/// no part in the preloaded shares, so its shares never collide with them.
pub(super) const RECIPIENT: &str = "999999999999";

/// The region the filler puts images in when told to use one region.
pub(super) fn bench_region() -> String {
    Policy::default()
        .regions
        .iter()
        .next()
        .map(|r| r.to_string())
        .unwrap_or_default()
}

pub(super) struct Workload {
    pub(super) region: String,
    /// (image id, owner account index)
    pub(super) images: Vec<(String, u64)>,
    /// Whether each image is shared with [`RECIPIENT`] now; carried across
    /// scenarios so a write scenario picks up where the last one left off.
    pub(super) shared: Vec<AtomicBool>,
    /// The fewest and the most images a preloaded account lists.
    pub(super) listed: (u64, u64),
    /// The cloud API door, when the server serves one.
    pub(super) cloud: Option<std::net::SocketAddr>,
}

/// Finds the preloaded images and registers the share scenario's recipient.
pub(super) async fn discover(
    config: &BenchConfig,
    channel: Channel,
    cloud: Option<std::net::SocketAddr>,
) -> Result<Workload, BoxError> {
    let mut client = ImageLedgerClient::new(channel);
    let region = bench_region();
    let registered = client
        .register_account(pb::RegisterAccountRequest {
            account_id: RECIPIENT.into(),
            kind: pb::AccountKind::Root as i32,
            client_token: String::new(),
        })
        .await;
    registered?;
    let mut images = Vec::new();
    let mut listed = (u64::MAX, 0);
    for k in 0..config.accounts {
        // Its own images and those shared with it, in one listing.
        let all = list_images(
            &mut client,
            &account(k).to_string(),
            &region,
            pb::ImageType::Unspecified,
        )
        .await?;
        let count = all.len() as u64;
        listed = (listed.0.min(count), listed.1.max(count));
        let owned = all
            .into_iter()
            .filter(|image| image.image_type == pb::ImageType::PrivateImage as i32);
        images.extend(owned.map(|image| (image.image_id, k)));
    }
    if images.is_empty() {
        return Err("the server holds no preloaded images".into());
    }
    // A server driven before (by --addr, or a reused --data-dir) may still
    // share some images with the recipient: start from what it holds.
    let already: HashSet<String> =
        list_images(&mut client, RECIPIENT, &region, pb::ImageType::SharedImage)
            .await?
            .into_iter()
            .map(|image| image.image_id)
            .collect();
    let shared = images
        .iter()
        .map(|(id, _)| AtomicBool::new(already.contains(id)))
        .collect();
    Ok(Workload {
        region,
        images,
        shared,
        listed,
        cloud,
    })
}

/// Every image of one type that `account` sees in `region`, page by page.
pub(super) async fn list_images(
    client: &mut ImageLedgerClient<Channel>,
    account: &str,
    region: &str,
    image_type: pb::ImageType,
) -> Result<Vec<pb::Image>, BoxError> {
    const PAGE: u32 = 100;
    let mut images = Vec::new();
    loop {
        let page = client
            .describe_images(pb::DescribeImagesRequest {
                account_id: account.to_owned(),
                region: region.to_owned(),
                image_type: image_type as i32,
                offset: u32::try_from(images.len()).unwrap_or(u32::MAX),
                limit: PAGE,
                ..Default::default()
            })
            .await?
            .into_inner();
        let got = page.images.len();
        images.extend(page.images);
        if got < PAGE as usize {
            return Ok(images);
        }
    }
}

/// The page size of the `describe` scenario.
pub(super) const PAGE_SIZE: u32 = 20;

/// A `DescribeImages` reply as the load generator reads it: each image stays
/// the bytes of its encoded message instead of being decoded into strings.
/// The two processes share the machine's cores, so a client that decoded
/// every field would lower the measured rate for reasons that are not the
/// server's; what is checked is the number of images against the total.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct PageView {
    /// Each image of the page, still encoded.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub(super) images: Vec<bytes::Bytes>,
    /// How many images match in all.
    #[prost(uint32, tag = "2")]
    pub(super) total_count: u32,
}

impl PageView {
    /// Whether this is a complete first page: as many images as the page
    /// size or the total allows, none of them empty (every listed image
    /// has an id).
    pub(super) fn is_full_first_page(&self) -> bool {
        self.images.len() == PAGE_SIZE.min(self.total_count) as usize
            && self.images.iter().all(|image| !image.is_empty())
    }
}

/// Calls `DescribeImages`, reading the reply as a [`PageView`].
pub(super) async fn describe_page(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: pb::DescribeImagesRequest,
) -> Result<PageView, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the channel is not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<pb::DescribeImagesRequest, PageView>::default();
    let path = http::uri::PathAndQuery::from_static("/imageledger.v1.ImageLedger/DescribeImages");
    Ok(grpc
        .unary(tonic::Request::new(request), path, codec)
        .await?
        .into_inner())
}

/// One request loop. Returns the latencies (µs) of calls completed inside
/// the window and the number of failed calls.
pub(super) async fn worker(
    scenario: Scenario,
    task: usize,
    tasks: usize,
    channel: Channel,
    workload: Arc<Workload>,
    start: Instant,
    end: Instant,
) -> (Vec<u32>, u64) {
    let mut ledger = ImageLedgerClient::new(channel.clone());
    let mut pages = tonic::client::Grpc::new(channel.clone());
    let mut health = HealthClient::new(channel);
    let mut rng = StdRng::seed_from_u64(task as u64);
    // This task's own images for writes, so no two tasks write one image.
    let own: Vec<usize> = (task..workload.images.len()).step_by(tasks).collect();
    let mut next_own = 0usize;
    let mut latencies = Vec::new();
    let mut errors = 0;
    // HTTP/1.1 carries one request at a time: a connection per task,
    // opened before the window.
    let mut door = match (scenario.is_cloud(), workload.cloud) {
        (true, Some(addr)) => match Connection::open(addr).await {
            Ok(connection) => Some(connection),
            Err(_) => return (latencies, 1),
        },
        _ => None,
    };
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let kind = match scenario {
            Scenario::Mixed => match rng.random_range(0..20) {
                0 | 1 => Scenario::Share,
                n if n % 2 == 0 => Scenario::Authorize,
                _ => Scenario::Describe,
            },
            other => other,
        };
        let ok = match kind {
            Scenario::Health => health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok(),
            Scenario::Share => {
                if own.is_empty() {
                    break;
                }
                let i = own[next_own % own.len()];
                next_own += 1;
                let (image, owner) = &workload.images[i];
                let owner = account(*owner).to_string();
                let shared = workload.shared[i].load(Ordering::Relaxed);
                let result = if shared {
                    ledger
                        .cancel_image_sharing(pb::CancelImageSharingRequest {
                            account_id: owner,
                            image_id: image.clone(),
                            account_ids: vec![RECIPIENT.into()],
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                } else {
                    ledger
                        .share_image(pb::ShareImageRequest {
                            account_id: owner,
                            image_id: image.clone(),
                            account_ids: vec![RECIPIENT.into()],
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                };
                if result.is_ok() {
                    workload.shared[i].store(!shared, Ordering::Relaxed);
                }
                result.is_ok()
            }
            Scenario::Authorize | Scenario::AuthorizeApplied => {
                let (image, owner) = &workload.images[rng.random_range(0..workload.images.len())];
                let min_position = u64::from(kind == Scenario::AuthorizeApplied);
                ledger
                    .authorize_image_use(pb::AuthorizeImageUseRequest {
                        account_id: account(*owner).to_string(),
                        image_id: image.clone(),
                        region: workload.region.clone(),
                        r#use: pb::ImageUse::CreateInstance as i32,
                        min_position,
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().allowed)
            }
            Scenario::CloudDescribe | Scenario::CloudShare => {
                let Some(door) = door.as_mut() else { break };
                if kind == Scenario::CloudShare && own.is_empty() {
                    break;
                }
                let image = own.get(next_own % own.len().max(1)).copied().unwrap_or(0);
                next_own += 1;
                cloud_call(kind, door, &workload, &mut rng, image).await
            }
            Scenario::Describe | Scenario::Mixed => {
                let (_, owner) = &workload.images[rng.random_range(0..workload.images.len())];
                let request = pb::DescribeImagesRequest {
                    account_id: account(*owner).to_string(),
                    region: workload.region.clone(),
                    limit: PAGE_SIZE,
                    ..Default::default()
                };
                describe_page(&mut pages, request)
                    .await
                    .is_ok_and(|page| page.is_full_first_page())
            }
        };
        let done = Instant::now();
        if now >= start && done <= end {
            if ok {
                latencies.push(u32::try_from((done - now).as_micros()).unwrap_or(u32::MAX));
            } else {
                errors += 1;
            }
        }
    }
    (latencies, errors)
}

/// One request of a cloud scenario: a page of `DescribeImages` for a
/// random owner, or the SHARE or CANCEL of image `own` (this task's) with
/// [`RECIPIENT`], signed with the acting account's key.
async fn cloud_call(
    kind: Scenario,
    door: &mut Connection,
    workload: &Workload,
    rng: &mut StdRng,
    own: usize,
) -> bool {
    let region = workload.region.as_str();
    match kind {
        Scenario::CloudShare => {
            let (image, owner) = &workload.images[own];
            let shared = workload.shared[own].load(Ordering::Relaxed);
            let body = serde_json::json!({
                "ImageId": image,
                "AccountIds": [RECIPIENT],
                "Permission": if shared { "CANCEL" } else { "SHARE" },
            });
            let call = Call::cvm("ModifyImageSharePermission", region, &body);
            let ok = door
                .call_raw(&bench_key(*owner), &call)
                .await
                .is_ok_and(|answer| !contains(&answer, b"\"Error\""));
            if ok {
                workload.shared[own].store(!shared, Ordering::Relaxed);
            }
            ok
        }
        _ => {
            let (_, owner) = &workload.images[rng.random_range(0..workload.images.len())];
            let body = serde_json::json!({ "Limit": PAGE_SIZE });
            let call = Call::cvm("DescribeImages", region, &body);
            // As `describe` counts encoded images, count them by their ids.
            door.call_raw(&bench_key(*owner), &call)
                .await
                .is_ok_and(|answer| {
                    let total = total_count(&answer).unwrap_or(0);
                    !contains(&answer, b"\"Error\"")
                        && count(&answer, b"\"ImageId\"") == PAGE_SIZE.min(total) as usize
                })
        }
    }
}

/// `TotalCount` of a `DescribeImages` answer, read off its text.
fn total_count(answer: &[u8]) -> Option<u32> {
    let key = b"\"TotalCount\":";
    let at = memchr::memmem::find(answer, key)? + key.len();
    let digits: Vec<u8> = answer[at..]
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(haystack, needle).count()
}
