//! What a live client token costs the writer's memory, pinned under the
//! bound a busy server needs (a day's retention at 10,000 tokens a second
//! is 864 million bytes at 1 KiB a token, 55 at 64 bytes). The heap the
//! records hold is counted around the system allocator; the start's cost
//! at half a million tokens is in the soak (docs/PERFORMANCE.md).

use image_ledger::domain::Reply;
use image_ledger::idempotency::{token_key, Slot, TokenRecord, Tokens};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

// stats_alloc counts what the system allocator holds; the crate forbids
// the unsafe code a counting allocator of its own would need.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const TOKENS: u64 = 200_000;

/// 53 bytes when this was written (about 640 when each record was held
/// whole, its key twice); the bound is the one the server promises.
#[test]
fn a_live_token_costs_at_most_64_bytes_once_its_records_are_written() {
    let counted = stats_alloc::Region::new(GLOBAL);
    let mut tokens = Tokens::default();
    for i in 0..TOKENS {
        // Keys and fingerprints of the sizes clients send.
        let key = token_key(Some("100000000001"), &format!("6f1d2c9e-{i:028}"));
        let record = TokenRecord {
            fingerprint: format!("{i:064x}"),
            reply: Reply::Done,
            position: i + 1,
            recorded_at: 1_800_000_000_000_000 + i as i64,
        };
        tokens.insert(key, Slot::Digest, record);
    }
    let before_written = held(&counted.change());
    // The log holds them now: the writer keeps where they are.
    tokens.written(TOKENS);
    let change = counted.change();
    let per_token = held(&change) / TOKENS as isize;
    eprintln!(
        "{TOKENS} live tokens hold {} bytes: {per_token} per token ({} before the log had them)",
        held(&change),
        before_written / TOKENS as isize
    );
    assert_eq!(tokens.len() as u64, TOKENS);
    assert!(per_token <= 64, "a live token holds {per_token} bytes");
    // Each stage's copy of them costs nothing more.
    let copies: Vec<Tokens> = (0..4).map(|_| tokens.clone()).collect();
    let with_copies = held(&counted.change()) / TOKENS as isize;
    assert_eq!(with_copies, per_token, "copies share the records");
    drop(copies);
}

/// Bytes still held after `change` (see tests/state_memory.rs).
fn held(change: &stats_alloc::Stats) -> isize {
    change.bytes_allocated as isize - change.bytes_deallocated as isize
}
