//! Microbenchmarks of the command path's pieces, in isolation, so a
//! regression in one shows up without the noise of a whole server:
//! `cargo bench --bench hot_path`.
//!
//! A plain harness: each case runs for about a second after a warm-up and
//! prints the mean time per operation. `cargo bench --bench hot_path -- NAME`
//! runs only the cases whose name contains NAME.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use image_ledger::domain::{
    decide, AccountId, AccountKind, Command, Event, ImageAttributes, ImageId, ImageSource,
    ImageState, LedgerState, LicenseType, Policy, Region,
};
use image_ledger::grpc::pb::DescribeImagesResponse;
use image_ledger::projection::PageCache;
use image_ledger::projection::{describe_images, ImageQuery};
use image_ledger::store::{AppendBatch, EncodedRecord, EventLogExt, Head, RecordMeta, SledStore};
use time::OffsetDateTime;

/// Runs a case when its name contains the first argument that is not an
/// option (`cargo bench --bench hot_path -- describe`), or when there is none.
fn measure(name: &str, per_iteration: u64, mut f: impl FnMut()) {
    let wanted = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    if wanted.is_some_and(|wanted| !name.contains(&wanted)) {
        return;
    }
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        f();
        iterations += 1;
    }
    let per_op = start.elapsed().as_nanos() as f64 / (iterations * per_iteration) as f64;
    println!(
        "{name:<62} {per_op:>10.0} ns/op  ({} ops)",
        iterations * per_iteration
    );
}

fn account(i: u64) -> AccountId {
    AccountId::parse(&format!("{}", 100_000_000_000 + i)).expect("account id")
}

fn image(i: u64) -> ImageId {
    ImageId::parse(&format!("img-{i:08}")).expect("image id")
}

/// A state with 1,000 accounts and 10,000 images, each shared with 5 accounts.
fn populated() -> LedgerState {
    populated_with(1_000, 10_000)
}

/// A state with `accounts` accounts and `images` images, each shared with 5
/// accounts: every account owns `images / accounts` and is shared five times
/// as many.
fn populated_with(accounts: u64, images: u64) -> LedgerState {
    let mut state = LedgerState::default();
    for a in 0..accounts {
        state.apply(&Event::AccountRegistered {
            account_id: account(a),
            kind: AccountKind::Root,
        });
    }
    for i in 0..images {
        let owner = i % accounts;
        state.apply(&Event::ImageRegistered {
            image_id: image(i),
            owner_account_id: account(owner),
            region: Region::new("ap-guangzhou"),
            attributes: ImageAttributes {
                image_name: format!("image-{i}").into(),
                image_description: "benchmark".into(),
                platform: "Ubuntu".into(),
                os_name: "Ubuntu 24.04".into(),
                image_source: ImageSource::CreateImage,
                license_type: LicenseType::Tencentcloud,
                encrypted: false,
                whole_instance: false,
                supports_cloudinit: true,
            },
            state: ImageState::Normal,
            created_time: OffsetDateTime::UNIX_EPOCH,
        });
        state.apply(&Event::ImageShared {
            expires_at: None,
            image_id: image(i),
            account_ids: (1..=5).map(|k| account((owner + k) % accounts)).collect(),
            shared_time: OffsetDateTime::UNIX_EPOCH,
        });
    }
    state
}

/// Answers `query` as the server does: the page, built and encoded into `out`.
fn describe_and_encode(
    state: &LedgerState,
    policy: &Policy,
    query: &ImageQuery,
    out: &mut Vec<u8>,
) {
    let page =
        describe_images(state, policy, query, time::OffsetDateTime::now_utc()).expect("lists");
    out.clear();
    DescribeImagesResponse::from_page(&page)
        .encode(out)
        .expect("encodes");
    black_box(out);
}

fn share_command(i: u64) -> Command {
    let owner = i % 1_000;
    Command::ShareImage {
        expires_at: None,
        caller: account(owner),
        image_id: image(i % 10_000),
        account_ids: vec![account((owner + 10) % 1_000)],
    }
}

fn main() {
    let policy = Policy::default();
    let state = populated();
    let now = OffsetDateTime::now_utc();
    let mut no_ids = || image(99_999_999);

    let mut i = 0;
    measure("decide ShareImage (10k images)", 1, || {
        i += 1;
        black_box(decide(&state, &policy, &share_command(i), now, &mut no_ids).ok());
    });

    let mut working = state.clone();
    let mut i = 0;
    measure("apply ImageShared + snapshot clone", 1, || {
        i += 1;
        let snapshot = working.clone();
        if let Ok(decision) = decide(&working, &policy, &share_command(i), now, &mut no_ids) {
            for event in &decision.events {
                working.apply(event);
            }
        }
        black_box(snapshot);
    });

    // One recipient that 5,000 images are shared with (as in the share
    // scenario): each share or cancel copies the path to its entry in the
    // recipient's index, since the published snapshot shares it.
    let hot = AccountId::parse("200000000000").expect("account id");
    let mut working = state.clone();
    working.apply(&Event::AccountRegistered {
        account_id: hot.clone(),
        kind: AccountKind::Root,
    });
    for i in 0..5_000 {
        working.apply(&Event::ImageShared {
            expires_at: None,
            image_id: image(i),
            account_ids: vec![hot.clone()],
            shared_time: now,
        });
    }
    let mut i = 0u64;
    measure(
        "apply a share to a recipient of 5,000 + snapshot",
        1,
        || {
            i += 1;
            let snapshot = working.clone();
            let image_id = image(5_000 + (i / 2) % 5_000);
            let event = if i % 2 == 1 {
                Event::ImageShared {
                    expires_at: None,
                    image_id,
                    account_ids: vec![hot.clone()],
                    shared_time: now,
                }
            } else {
                Event::ShareCancelled {
                    image_id,
                    account_ids: vec![hot.clone()],
                }
            };
            working.apply(&event);
            black_box(snapshot);
        },
    );

    // Account 0 owns 10 images and 50 more are shared with it: a page of 20
    // merges both indexes.
    let query = ImageQuery {
        account_id: Some(account(0)),
        region: Some(Region::new("ap-guangzhou")),
        ..ImageQuery::default()
    };
    let listed =
        describe_images(&state, &policy, &query, time::OffsetDateTime::now_utc()).expect("lists");
    assert_eq!((listed.images.len(), listed.total_count), (20, 60));
    measure("describe a page of 20 (query only)", 1, || {
        black_box(describe_images(&state, &policy, &query, time::OffsetDateTime::now_utc()).ok());
    });
    let mut encoded = Vec::with_capacity(8 * 1024);
    measure(
        "describe a page of 20, build and encode the reply",
        1,
        || describe_and_encode(&state, &policy, &query, &mut encoded),
    );

    // Pages of random accounts over a state larger than the caches, as a
    // server under load reads them: here a page's cost is its cache misses
    // (the image map's nodes, each image, its attributes and texts), which
    // the warm cases above never pay.
    let large = populated_with(20_000, 200_000);
    let random_page = |pick: u64| ImageQuery {
        account_id: Some(account(pick)),
        region: Some(Region::new("ap-guangzhou")),
        ..ImageQuery::default()
    };
    let mut pick = 0u64;
    measure("describe a page of 20, random account of 20k", 1, || {
        // A stride coprime with 20,000 visits every account, in no
        // order the prefetcher can follow.
        pick = (pick + 7_919) % 20_000;
        describe_and_encode(&large, &policy, &random_page(pick), &mut encoded);
    });
    // The same pages once the page cache holds them all: the cost of a hit
    // (the listings' stamps, the cache's lookup) and of encoding the reply.
    let pages = PageCache::<DescribeImagesResponse>::new(256 * 1024 * 1024);
    let cached = |query: &ImageQuery| {
        pages
            .reply(&large, query, time::OffsetDateTime::now_utc(), || {
                Ok(DescribeImagesResponse::from_page(&describe_images(
                    &large,
                    &policy,
                    query,
                    time::OffsetDateTime::now_utc(),
                )?))
            })
            .expect("lists")
    };
    for pick in 0..20_000 {
        cached(&random_page(pick));
    }
    measure(
        "describe a page of 20, random account of 20k, page cache hit",
        1,
        || {
            pick = (pick + 7_919) % 20_000;
            encoded.clear();
            cached(&random_page(pick))
                .encode(&mut encoded)
                .expect("encodes");
            black_box(&encoded);
        },
    );
    drop(pages);
    drop(large);

    let event = Event::ImageShared {
        expires_at: None,
        image_id: image(1),
        account_ids: vec![account(2)],
        shared_time: now,
    };
    let mut position = 0;
    measure("encode + hash an envelope", 1, || {
        position += 1;
        let meta = RecordMeta {
            position,
            aggregate_version: 2,
            recorded_at: now,
            actor: Some("100000000001"),
            principal: None,
            client_token: None,
            request_hash: None,
            prev_hash: [7; 32],
        };
        black_box(EncodedRecord::encode(&event, &meta).expect("encodes"));
    });

    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(SledStore::open(dir.path(), 64 * 1024 * 1024).expect("store"));
    let mut head = Head::default();
    let mut versions = std::collections::HashMap::<String, u64>::new();
    for batch_size in [1usize, 64] {
        measure(
            &format!("append a batch of {batch_size} to sled, flushed (per event)"),
            batch_size as u64,
            || {
                let mut batch = AppendBatch {
                    expected_head: head,
                    ..AppendBatch::default()
                };
                for k in 0..batch_size {
                    let id = image((head.position + k as u64) % 10_000);
                    let version = versions.entry(id.to_string()).or_insert(0);
                    *version += 1;
                    let meta = RecordMeta {
                        position: head.position + 1,
                        aggregate_version: *version,
                        recorded_at: now,
                        actor: Some("100000000001"),
                        principal: None,
                        client_token: None,
                        request_hash: None,
                        prev_hash: head.hash,
                    };
                    let event = Event::ImageShared {
                        expires_at: None,
                        image_id: id,
                        account_ids: vec![account(2)],
                        shared_time: now,
                    };
                    let record = EncodedRecord::encode(&event, &meta).expect("encodes");
                    head = Head {
                        position: record.position,
                        hash: record.hash,
                    };
                    batch.records.push(record);
                }
                store.append(&batch).expect("appends");
            },
        );
    }
}
