//! The page cache against the pages built from the state: same bytes, and
//! rebuilt exactly when a listing the page reads changed.

use std::cell::Cell;

use prost::Message;

use time::OffsetDateTime;

use super::PageCache;
use crate::domain::tests::attributes;
use crate::domain::{
    AccountId, AccountKind, DomainError, Event, ImageId, ImageRef, ImageState, LedgerState, Policy,
    Region,
};
use crate::grpc::pb::DescribeImagesResponse;
use crate::projection::{describe_images, ImageQuery, ImageTypeFilter};

const GZ: &str = "ap-guangzhou";
const SH: &str = "ap-shanghai";
const ACCOUNTS: [u64; 3] = [1, 2, 3];
const FILTERS: [ImageTypeFilter; 3] = [
    ImageTypeFilter::Both,
    ImageTypeFilter::Private,
    ImageTypeFilter::Shared,
];
/// (offset, limit) of the pages read; 0 is the default limit.
const PAGES: [(u32, u32); 3] = [(0, 0), (1, 2), (5, 20)];

fn account(n: u64) -> AccountId {
    AccountId::parse(&n.to_string()).expect("account id")
}

fn image(n: u32) -> ImageId {
    ImageId::parse(&format!("img-{n:08}")).expect("image id")
}

fn registered(n: u32, owner: u64, region: &str) -> Event {
    Event::ImageRegistered {
        image_id: image(n),
        owner_account_id: account(owner),
        region: Region::new(region),
        attributes: attributes(&format!("image {n}")),
        state: ImageState::Normal,
        created_time: at(n),
    }
}

fn at(n: u32) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + i64::from(n)).expect("time")
}

fn shared(n: u32, with: &[u64]) -> Event {
    Event::ImageShared {
        expires_at: None,
        image_id: image(n),
        account_ids: with.iter().copied().map(account).collect(),
        shared_time: at(100 + n),
    }
}

fn renamed(n: u32, name: &str) -> Event {
    Event::ImageAttributesModified {
        image_id: image(n),
        image_name: Some(name.into()),
        image_description: None,
    }
}

fn query(account_n: u64, region: &str, filter: ImageTypeFilter, page: (u32, u32)) -> ImageQuery {
    ImageQuery {
        account_id: Some(account(account_n)),
        region: Some(Region::new(region)),
        image_type: filter,
        offset: page.0,
        limit: page.1,
        ..ImageQuery::default()
    }
}

/// A state where `accounts` are registered.
fn with_accounts(accounts: &[u64]) -> LedgerState {
    let mut state = LedgerState::default();
    for &n in accounts {
        state.apply(&Event::AccountRegistered {
            account_id: account(n),
            kind: AccountKind::Root,
        });
    }
    state
}

/// The page built from the state, encoded: what a reply must be.
fn built(state: &LedgerState, query: &ImageQuery) -> Result<DescribeImagesResponse, DomainError> {
    let page = describe_images(
        state,
        &Policy::default(),
        query,
        time::OffsetDateTime::now_utc(),
    )?;
    Ok(DescribeImagesResponse::from_page(&page))
}

/// Asks the cache, checks the reply against the built page, and says
/// whether the cache had to build it.
fn ask(cache: &PageCache<DescribeImagesResponse>, state: &LedgerState, query: &ImageQuery) -> bool {
    let called = Cell::new(false);
    let reply = cache
        .reply(state, query, time::OffsetDateTime::now_utc(), || {
            called.set(true);
            built(state, query)
        })
        .expect("lists");
    let (reply, expected) = (
        reply.encode_to_vec(),
        built(state, query).expect("lists").encode_to_vec(),
    );
    let decoded = |bytes: &[u8]| DescribeImagesResponse::decode(bytes).expect("decodes");
    assert_eq!(decoded(&reply), decoded(&expected), "{query:?}");
    assert_eq!(reply, expected, "{query:?}");
    called.get()
}

/// An account's listing in a region, read with a filter.
type Read = (u64, &'static str, ImageTypeFilter);

/// Every (account, region, filter) whose pages were built on this pass.
fn rebuilt(cache: &PageCache<DescribeImagesResponse>, state: &LedgerState) -> Vec<Read> {
    let mut out = Vec::new();
    for account_n in ACCOUNTS {
        for region in [GZ, SH] {
            for filter in FILTERS {
                let builds: Vec<bool> = PAGES
                    .iter()
                    .map(|&page| ask(cache, state, &query(account_n, region, filter, page)))
                    .collect();
                // The pages of one listing are built again together or not at all.
                assert!(
                    builds.iter().all(|&b| b == builds[0]),
                    "{account_n} {region} {filter:?}: {builds:?}"
                );
                if builds[0] {
                    out.push((account_n, region, filter));
                }
                // Asked again at once, every page comes from the cache.
                for page in PAGES {
                    assert!(!ask(cache, state, &query(account_n, region, filter, page)));
                }
            }
        }
    }
    out
}

#[test]
fn each_change_rebuilds_exactly_the_pages_that_show_it() {
    use ImageTypeFilter::{Both, Private, Shared};
    let mut state = with_accounts(&ACCOUNTS);
    for event in [
        registered(0, 1, GZ),
        registered(1, 1, GZ),
        registered(2, 2, GZ),
    ] {
        state.apply(&event);
    }
    let cache = PageCache::<DescribeImagesResponse>::new(1 << 20);
    assert_eq!(
        rebuilt(&cache, &state).len(),
        ACCOUNTS.len() * 2 * FILTERS.len()
    );

    let steps: Vec<(Event, Vec<Read>)> = vec![
        // The recipient's listing gains it; the owner's shows no shares.
        (shared(2, &[1]), vec![(1, GZ, Both), (1, GZ, Shared)]),
        // A new name shows in the owner's listing and every recipient's.
        (
            renamed(2, "renamed"),
            vec![
                (1, GZ, Both),
                (1, GZ, Shared),
                (2, GZ, Both),
                (2, GZ, Private),
            ],
        ),
        (
            Event::ImageStateChanged {
                image_id: image(0),
                from: ImageState::Normal,
                to: ImageState::Syncing,
            },
            vec![(1, GZ, Both), (1, GZ, Private)],
        ),
        // Lighthouse's access shows in no listing.
        (Event::LighthouseShared { image_id: image(0) }, vec![]),
        (
            Event::LighthouseShareCancelled { image_id: image(0) },
            vec![],
        ),
        // Another region's listing only.
        (registered(3, 3, SH), vec![(3, SH, Both), (3, SH, Private)]),
        (
            Event::ImageCopied {
                image_id: image(4),
                owner_account_id: account(3),
                region: Region::new(GZ),
                copied_from: ImageRef {
                    image_id: image(3),
                    region: Region::new(SH),
                },
                attributes: attributes("copy of 3"),
                state: ImageState::Syncing,
                created_time: at(4),
            },
            vec![(3, GZ, Both), (3, GZ, Private)],
        ),
        (
            Event::ShareCancelled {
                image_id: image(2),
                account_ids: vec![account(1)],
            },
            vec![(1, GZ, Both), (1, GZ, Shared)],
        ),
        (
            Event::ImageDeleted { image_id: image(1) },
            vec![(1, GZ, Both), (1, GZ, Private)],
        ),
        (
            shared(4, &[1, 2]),
            vec![
                (1, GZ, Both),
                (1, GZ, Shared),
                (2, GZ, Both),
                (2, GZ, Shared),
            ],
        ),
        (
            renamed(4, "copy"),
            vec![
                (1, GZ, Both),
                (1, GZ, Shared),
                (2, GZ, Both),
                (2, GZ, Shared),
                (3, GZ, Both),
                (3, GZ, Private),
            ],
        ),
    ];
    for (event, expected) in steps {
        state.apply(&event);
        assert_eq!(rebuilt(&cache, &state), expected, "after {event:?}");
    }
}

#[test]
fn a_page_of_one_copy_of_the_state_is_never_sent_for_another() {
    let mut older = with_accounts(&[1, 2]);
    older.apply(&registered(0, 2, GZ));
    older.apply(&shared(0, &[1]));
    // The writer's copy moves on; the published one stays.
    let mut newer = older.clone();
    newer.apply(&renamed(0, "newer"));
    let mut other = older.clone();
    other.apply(&renamed(0, "other"));

    let cache = PageCache::<DescribeImagesResponse>::new(1 << 20);
    let q = query(1, GZ, ImageTypeFilter::Both, (0, 0));
    assert!(ask(&cache, &newer, &q));
    assert!(ask(&cache, &older, &q));
    assert!(ask(&cache, &other, &q), "one change is not another");
    assert!(!ask(&cache, &other, &q));
    assert!(ask(&cache, &newer, &q));

    // A state rebuilt from the same aggregates has new stamps, so nothing
    // cached before is taken for it, though it lists the same images.
    let restored = LedgerState::restore(
        newer.accounts().map(|(id, a)| (id.clone(), a.clone())),
        newer.images().cloned(),
    );
    assert_eq!(restored, newer);
    assert!(ask(&cache, &restored, &q));
}

#[test]
fn filtered_queries_failures_and_a_cache_of_zero_always_build() {
    let mut state = with_accounts(&[1]);
    state.apply(&registered(0, 1, GZ));
    let cache = PageCache::<DescribeImagesResponse>::new(1 << 20);
    let by_name = ImageQuery {
        image_name: "image".into(),
        ..query(1, GZ, ImageTypeFilter::Both, (0, 0))
    };
    let by_id = ImageQuery {
        image_ids: vec![image(0)],
        ..query(1, GZ, ImageTypeFilter::Both, (0, 0))
    };
    for q in [&by_name, &by_id] {
        assert!(ask(&cache, &state, q));
        assert!(ask(&cache, &state, q));
    }

    // An account that is not registered fails each time, not from a cached answer.
    let unknown = query(9, GZ, ImageTypeFilter::Both, (0, 0));
    for _ in 0..2 {
        let called = Cell::new(false);
        let result = cache.reply(&state, &unknown, time::OffsetDateTime::now_utc(), || {
            called.set(true);
            built(&state, &unknown)
        });
        assert!(
            matches!(result, Err(DomainError::AccountNotFound(_))),
            "{result:?}"
        );
        assert!(called.get());
    }

    let off = PageCache::<DescribeImagesResponse>::new(0);
    let q = query(1, GZ, ImageTypeFilter::Both, (0, 0));
    assert!(ask(&off, &state, &q));
    assert!(ask(&off, &state, &q));
}

#[test]
fn the_cache_holds_no_more_than_its_capacity() {
    let mut state = with_accounts(&[1]);
    for n in 0..40 {
        state.apply(&registered(n, 1, GZ));
    }
    let capacity = 16 * 1024;
    let cache = PageCache::<DescribeImagesResponse>::new(capacity);
    for offset in 0..200 {
        ask(
            &cache,
            &state,
            &query(1, GZ, ImageTypeFilter::Both, (offset, 20)),
        );
    }
    let held = cache.pages.as_ref().expect("on").weight();
    assert!(held <= capacity, "{held} > {capacity}");
    assert!(held > capacity / 2, "{held}: it fills up");
}
