//! The persisted read side, kept up to date batch by batch, always equals a
//! full rebuild, and loading it gives back the state.

use std::collections::BTreeMap;

use proptest::prelude::*;
use time::macros::datetime;
use time::OffsetDateTime;

use super::persist::{changes, full, Touched};
use super::query::{describe_images, ImageQuery, ImageTypeFilter};
use crate::domain::{
    decide, AccountId, AccountKind, Command, ImageId, ImageState, LedgerState,
    LighthousePermission, NewImage, Policy, Region, TrustMode,
};
use crate::store::ProjectionOp;

const ACCOUNTS: [&str; 4] = ["11", "12", "13", "14"];
const REGIONS: [&str; 2] = ["ap-guangzhou", "ap-shanghai"];

fn policy() -> Policy {
    Policy {
        max_shares_per_image: 2,
        max_accounts_per_call: 2,
        image_quota: 3,
        regions: REGIONS.iter().map(|r| Region::new(*r)).collect(),
        ..Policy::default()
    }
}

fn account(i: u8) -> AccountId {
    AccountId::parse(ACCOUNTS[i as usize % ACCOUNTS.len()]).expect("account")
}

/// Builds a command from four small numbers, against the images made so
/// far, decided at `now` (shares may end a few seconds after it).
fn command(op: u8, a: u8, b: u8, c: u8, images: &[ImageId], now: OffsetDateTime) -> Command {
    let image = |i: u8| {
        images
            .get(i as usize % images.len().max(1))
            .cloned()
            .unwrap_or_else(|| ImageId::parse("img-00000000").expect("id"))
    };
    let region = |i: u8| Region::new(REGIONS[i as usize % REGIONS.len()]);
    let ends = (c % 2 == 1).then(|| now + time::Duration::seconds(i64::from(c % 5)));
    match op % 16 {
        0 => Command::RegisterAccount {
            account_id: account(a),
            kind: if b.is_multiple_of(4) {
                AccountKind::Collaborator
            } else {
                AccountKind::Root
            },
        },
        1 => Command::RegisterImage(NewImage {
            owner_account_id: account(a),
            region: region(b),
            attributes: crate::domain::tests::attributes(&format!("n{}", c % 3)),
            state: ImageState::Normal,
        }),
        2 | 3 => Command::ShareImage {
            caller: account(a),
            image_id: image(b),
            account_ids: vec![account(c), account(c.wrapping_add(1 + b % 2))],
            expires_at: ends,
        },
        9 => Command::ExpireShares {
            image_id: image(b),
            account_ids: vec![account(c)],
        },
        10 => Command::ModifyShareExpiry {
            caller: account(a),
            image_id: image(b),
            account_ids: vec![account(c)],
            expires_at: ends,
        },
        11 => Command::LeaveImageShare {
            caller: account(a),
            image_id: image(b),
        },
        12 => Command::SetImageDisabled {
            caller: account(a),
            image_id: image(b),
            disabled: !c.is_multiple_of(3),
        },
        13 => Command::ModifyDeletionProtection {
            caller: account(a),
            image_id: image(b),
            enabled: c.is_multiple_of(3),
            with_cooldown: c % 3 == 1,
        },
        14 => Command::SetImageDeprecated {
            caller: account(a),
            image_id: image(b),
            deprecated: c.is_multiple_of(2),
        },
        15 => Command::SetTrustedImageOwners {
            caller: account(a),
            mode: [TrustMode::Off, TrustMode::Audit, TrustMode::Enforce][usize::from(c % 3)],
            owner_account_ids: vec![account(b)],
        },
        4 => Command::CancelImageSharing {
            caller: account(a),
            image_id: image(b),
            account_ids: vec![account(c)],
        },
        5 => Command::CopyImage {
            caller: account(a),
            image_id: image(b),
            destination_regions: vec![region(c)],
            image_name: Some(format!("c{}", c % 2)),
        },
        6 => Command::DeleteImage {
            caller: account(a),
            image_id: image(b),
        },
        7 => Command::ModifyLighthouseSharePermission {
            caller: account(a),
            image_id: image(b),
            permission: if c.is_multiple_of(2) {
                LighthousePermission::Share
            } else {
                LighthousePermission::Cancel
            },
        },
        _ => Command::UpdateImageState {
            image_id: image(b),
            state: if c.is_multiple_of(2) {
                ImageState::Normal
            } else {
                ImageState::Createfailed
            },
        },
    }
}

fn apply_ops(table: &mut BTreeMap<Vec<u8>, Vec<u8>>, ops: &[ProjectionOp]) {
    for op in ops {
        match &op.value {
            Some(value) => table.insert(op.key.clone(), value.clone()),
            None => table.remove(&op.key),
        };
    }
}

/// Runs the steps in batches of `batch` commands, keeping the read side by diffs.
fn run(steps: &[(u8, u8, u8, u8)], batch: usize) -> (LedgerState, BTreeMap<Vec<u8>, Vec<u8>>) {
    let policy = policy();
    let mut state = LedgerState::default();
    let mut table = BTreeMap::new();
    let mut images: Vec<ImageId> = Vec::new();
    let mut next = 0u32;
    let mut tick = 0i64;
    for chunk in steps.chunks(batch.max(1)) {
        let mut touched = Touched::default();
        for &(op, a, b, c) in chunk {
            tick += 1;
            let now = datetime!(2026-11-27 12:00:00 UTC) + time::Duration::seconds(tick);
            let cmd = command(op, a, b, c, &images, now);
            let mut ids = || {
                next += 1;
                ImageId::parse(&format!("img-{next:08}")).expect("id")
            };
            if let Ok(decision) = decide(&state, &policy, &cmd, now, &mut ids) {
                for event in &decision.events {
                    touched.record(event);
                    state.apply(event);
                    if let crate::domain::Event::ImageRegistered { image_id, .. }
                    | crate::domain::Event::ImageCopied { image_id, .. } = event
                    {
                        images.push(image_id.clone());
                    }
                }
            }
        }
        apply_ops(&mut table, &changes(&state, &touched).expect("diff"));
    }
    (state, table)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn incremental_projections_equal_a_rebuild(
        steps in proptest::collection::vec((0u8..16, 0u8..4, 0u8..8, 0u8..8), 1..80),
        batch in 1usize..6,
    ) {
        let (state, table) = run(&steps, batch);
        let mut rebuilt = BTreeMap::new();
        apply_ops(&mut rebuilt, &full(&state).expect("full"));
        prop_assert_eq!(&table, &rebuilt);

        // The rules held all along: no image past the share limit or the quota.
        let policy = policy();
        let end = datetime!(2026-11-27 12:00:00 UTC) + time::Duration::seconds(steps.len() as i64);
        for image in state.images().filter(|i| !i.deleted) {
            prop_assert!(image.live_shares(end) <= policy.max_shares_per_image);
        }
        // The state loaded back from the entries is the one replayed.
        let accounts = state.accounts().map(|(id, a)| (id.clone(), a.clone()));
        prop_assert_eq!(LedgerState::restore(accounts, state.images().cloned()), state.clone());
        for (_, used) in state.quota_usage() {
            prop_assert!(used <= policy.image_quota);
        }
    }
}

/// Every account registered, then images registered, shared by their
/// owners, unshared and deleted: many accounts own images and receive shares
/// in the same region.
fn run_sharing(steps: &[(u8, u8, u8, u8)]) -> (LedgerState, OffsetDateTime) {
    let policy = Policy {
        max_shares_per_image: 3,
        max_accounts_per_call: 2,
        image_quota: 20,
        ..policy()
    };
    let mut state = LedgerState::default();
    let mut next = 0u32;
    let mut ids = || {
        next += 1;
        ImageId::parse(&format!("img-{next:08}")).expect("id")
    };
    let start = datetime!(2026-11-27 12:00:00 UTC);
    for i in 0..ACCOUNTS.len() as u8 {
        let decision = decide(
            &state,
            &policy,
            &command(0, i, 1, 0, &[], start),
            start,
            &mut ids,
        )
        .expect("registers");
        decision.events.iter().for_each(|event| state.apply(event));
    }
    for (tick, &(op, a, b, c)) in steps.iter().enumerate() {
        let images: Vec<ImageId> = state
            .images()
            .filter(|image| !image.deleted)
            .map(|image| image.image_id.clone())
            .collect();
        let owner_of = |i: u8| {
            images
                .get(i as usize % images.len().max(1))
                .and_then(|id| state.live_image(id))
                .map(|image| (image.owner_account_id.clone(), image.image_id.clone()))
        };
        // Three commands per second: some images share a creation time.
        let now = start + time::Duration::seconds(tick as i64 / 3);
        let cmd = match (op, owner_of(b)) {
            (0, _) | (_, None) => command(1, a, b, c, &[], now),
            (1, Some((caller, image_id))) => Command::ShareImage {
                caller,
                image_id,
                account_ids: vec![account(c), account(c.wrapping_add(1))],
                // Some shares end a second or two later, and are left
                // unrecorded as ended: the listings must leave them out.
                expires_at: (c % 3 == 0)
                    .then(|| now + time::Duration::seconds(i64::from(1 + a % 2))),
            },
            (2, Some((caller, image_id))) => Command::CancelImageSharing {
                caller,
                image_id,
                account_ids: vec![account(c)],
            },
            (_, Some((caller, image_id))) => Command::DeleteImage { caller, image_id },
        };
        if let Ok(decision) = decide(&state, &policy, &cmd, now, &mut ids) {
            decision.events.iter().for_each(|event| state.apply(event));
        }
    }
    (
        state,
        start + time::Duration::seconds(steps.len() as i64 / 3),
    )
}

/// `DescribeImages` the obvious way, at `now`: collect, filter, sort, cut.
fn describe_naively(
    state: &LedgerState,
    query: &ImageQuery,
    now: OffsetDateTime,
) -> (Vec<(ImageId, bool)>, u32) {
    let (account, region) = (
        query.account_id.as_ref().expect("account"),
        query.region.as_ref().expect("region"),
    );
    let mut all: Vec<_> = state
        .images()
        .filter(|image| !image.deleted && &image.region == region)
        .flat_map(|image| {
            let owned = (&image.owner_account_id == account
                && query.image_type != ImageTypeFilter::Shared)
                .then_some((image, false));
            let shared = (image.shares.get(account).is_some_and(|s| s.live_at(now))
                && query.image_type != ImageTypeFilter::Private)
                .then_some((image, true));
            owned.into_iter().chain(shared)
        })
        .filter(|(image, _)| {
            (query.image_ids.is_empty() || query.image_ids.contains(&image.image_id))
                && image.attributes.image_name.contains(&query.image_name)
        })
        .collect();
    all.sort_by(|(a, _), (b, _)| {
        b.created_time
            .cmp(&a.created_time)
            .then_with(|| a.image_id.cmp(&b.image_id))
    });
    let total = all.len() as u32;
    let page = all
        .into_iter()
        .skip(query.offset as usize)
        .take(query.limit as usize)
        .map(|(image, shared)| (image.image_id.clone(), shared))
        .collect();
    (page, total)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn describe_pages_equal_a_sorted_listing(
        steps in proptest::collection::vec((0u8..4, 0u8..4, 0u8..8, 0u8..8), 1..120),
    ) {
        let (state, end) = run_sharing(&steps);
        let policy = Policy { image_quota: 20, ..policy() };
        let some_id = state.images().next().map(|image| image.image_id.clone());
        for account in 0..ACCOUNTS.len() as u8 {
            if state.account(&super::tests::account(account)).is_none() {
                continue;
            }
            for region in REGIONS {
                for image_type in [ImageTypeFilter::Both, ImageTypeFilter::Private, ImageTypeFilter::Shared] {
                    for (offset, limit) in [(0, 1), (0, 100), (1, 2), (3, 100)] {
                        for (name, ids) in [("", vec![]), ("n1", vec![]), ("", some_id.iter().cloned().collect())] {
                            let query = ImageQuery {
                                account_id: Some(super::tests::account(account)),
                                region: Some(Region::new(region)),
                                image_type,
                                image_ids: ids,
                                image_name: name.into(),
                                conditions: Vec::new(),
                                offset,
                                limit,
                            };
                            // Just after the last command, and much later.
                            for now in [end, end + time::Duration::hours(1)] {
                            let page = describe_images(&state, &policy, &query, now)
                                .expect("describes");
                            let listed: Vec<_> = page
                                .images
                                .iter()
                                .map(|listed| (listed.image.image_id.clone(), listed.shared))
                                .collect();
                            let (expected, total) = describe_naively(&state, &query, now);
                            prop_assert_eq!(&listed, &expected, "{:?}", query);
                            prop_assert_eq!(page.total_count, total, "{:?}", query);
                            }
                        }
                    }
                }
            }
        }
    }
}
