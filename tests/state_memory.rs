//! The in-memory state's size per aggregate, pinned under a bound so a
//! regression shows: at region scale (a million images) every byte per
//! aggregate is a megabyte on every replica.
//!
//! The state is built by applying events of the shape `image-ledger-bench
//! fill` writes (ten images per account, about one live share per image),
//! and the heap it holds is counted around the system allocator. Times
//! stay in the benchmark (docs/PERFORMANCE.md).

use image_ledger::domain::{AccountKind, Event, ImageId, ImageState, LedgerState, Region};
use image_ledger_bench::{account, attributes};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use time::OffsetDateTime;

// stats_alloc counts what the system allocator holds; the crate forbids
// the unsafe code a counting allocator of its own would need.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The allocator's counts are global: the tests of this file take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const ACCOUNTS: u64 = 20_000;
const IMAGES: u64 = 200_000;

fn image(i: u64) -> ImageId {
    ImageId::from_number(i)
}

fn registered(i: u64, region: &Region, at: OffsetDateTime) -> Event {
    Event::ImageRegistered {
        image_id: image(i),
        owner_account_id: account(i % ACCOUNTS),
        region: region.clone(),
        attributes: attributes(i),
        state: ImageState::Normal,
        created_time: at,
    }
}

/// 220,000 aggregates (20,000 accounts, 200,000 images, 180,000 of them
/// shared with one account), as the fill leaves them.
fn fill() -> LedgerState {
    let region = Region::new("ap-guangzhou");
    let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid in the test");
    let mut state = LedgerState::default();
    for i in 0..ACCOUNTS {
        state.apply(&Event::AccountRegistered {
            account_id: account(i),
            kind: AccountKind::Root,
        });
    }
    for i in 0..IMAGES {
        let at = start + time::Duration::seconds(i as i64);
        state.apply(&registered(i, &region, at));
    }
    for i in 0..IMAGES {
        if i % 10 == 9 {
            continue;
        }
        state.apply(&Event::ImageShared {
            image_id: image(i),
            account_ids: vec![account((i + 1) % ACCOUNTS)],
            shared_time: start,
            expires_at: None,
        });
    }
    state
}

/// 467 bytes when this was written (560 with image ids as text, 1,161
/// before the listings and shares were made compact); the bound leaves a
/// sixth for drift between versions.
/// The process-wide numbers of the listings' keys are counted by whichever
/// of these tests numbers them first.
#[test]
fn the_state_holds_at_most_this_many_bytes_per_aggregate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let counted = stats_alloc::Region::new(GLOBAL);
    let state = fill();
    let change = counted.change();
    let held = held(&change);
    let aggregates = (ACCOUNTS + IMAGES) as isize;
    let per_aggregate = held / aggregates;
    eprintln!("the state holds {held} bytes: {per_aggregate} per aggregate");
    assert_eq!(state.images().count() as u64, IMAGES);
    assert!(
        per_aggregate <= 560,
        "the state holds {per_aggregate} bytes per aggregate"
    );
    drop(state);
}

/// Bytes still held after `change`. stats_alloc adds what a reallocation
/// grows (or shrinks) to the bytes allocated (or deallocated) as well as
/// to `bytes_reallocated`, so those two alone are the balance.
fn held(change: &stats_alloc::Stats) -> isize {
    change.bytes_allocated as isize - change.bytes_deallocated as isize
}

/// The same aggregates as a start restores them from the read side: the
/// state a server holds once serving. 476 bytes when this was written,
/// about as many as built by events; the bound leaves a sixth for drift.
#[test]
fn the_restored_state_holds_at_most_this_many_bytes_per_aggregate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let counted = stats_alloc::Region::new(GLOBAL);
    let built = fill();
    let accounts: Vec<_> = built
        .accounts()
        .map(|(id, account)| (id.clone(), account.clone()))
        .collect();
    let images: Vec<_> = built.images().cloned().collect();
    drop(built);
    let state = LedgerState::restore(accounts, images);
    let change = counted.change();
    let held = held(&change);
    let per_aggregate = held / (ACCOUNTS + IMAGES) as isize;
    eprintln!("the restored state holds {held} bytes: {per_aggregate} per aggregate");
    assert_eq!(state.images().count() as u64, IMAGES);
    assert!(
        per_aggregate <= 560,
        "the restored state holds {per_aggregate} bytes per aggregate"
    );
}
