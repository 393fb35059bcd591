//! Encoded `DescribeImages` pages, sent again while what they show is
//! unchanged: each door keeps its own, of its own encoding (protobuf for
//! gRPC, JSON for the cloud API).
//!
//! Building a page walks the account's listings and looks up each image on
//! the page: data scattered over the heap, so a page costs a chain of cache
//! misses per image before it is even encoded. Consoles and schedulers ask
//! for the same first pages over and over, so the encoded reply is kept with
//! the stamps of the listings it was cut from
//! ([`LedgerState::listing_stamps`]). A stamp names one content of a
//! listing (its entries and every field a page carries), so while the state
//! read has the same stamps the cached bytes are exactly the reply the query
//! would build; when they differ the page is built again and replaces it.
//!
//! Only unfiltered queries are kept (no `image_ids`, no `image_name`): the
//! ones asked repeatedly. The cache is bounded by the bytes of its replies
//! (`--page-cache-mb`); when full, quick_cache's S3-FIFO policy drops pages
//! read once before pages read again.

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::Weighter;

use super::{ImageQuery, ImageTypeFilter};
use crate::domain::{AccountId, DomainError, LedgerState, ListingStamps, Region};

/// An encoded page: what it costs to keep.
pub trait EncodedPage: Clone + Send + Sync + 'static {
    /// Its size in bytes.
    fn encoded_bytes(&self) -> u64;
}

impl EncodedPage for bytes::Bytes {
    fn encoded_bytes(&self) -> u64 {
        self.len() as u64
    }
}

/// What names one page of one account's listings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    account: AccountId,
    region: Region,
    image_type: ImageTypeFilter,
    offset: u32,
    limit: u32,
}

/// A reply and the stamps of the listings it was cut from.
#[derive(Debug, Clone)]
struct CachedPage<R> {
    stamps: ListingStamps,
    reply: R,
}

/// Bytes a cached page holds: its reply plus the key and bookkeeping.
#[derive(Debug, Clone, Copy)]
struct ByBytes;

/// Counted for an entry on top of its reply's bytes.
const ENTRY_OVERHEAD: u64 = 128;

impl<R: EncodedPage> Weighter<PageKey, CachedPage<R>> for ByBytes {
    fn weight(&self, _key: &PageKey, page: &CachedPage<R>) -> u64 {
        page.reply.encoded_bytes() + ENTRY_OVERHEAD
    }
}

/// A reply of 20 typical images, for sizing the cache's table.
const TYPICAL_PAGE: u64 = 4096;

/// The encoded pages of `DescribeImages`; see the module docs.
pub struct PageCache<R: EncodedPage> {
    /// `None` when caching is off (a capacity of 0).
    pages: Option<Cache<PageKey, CachedPage<R>, ByBytes, foldhash::fast::RandomState>>,
    /// Hits and misses.
    metrics: std::sync::Arc<crate::metrics::LedgerMetrics>,
}

impl<R: EncodedPage> PageCache<R> {
    /// A cache holding up to `capacity_bytes` of replies; 0 turns it off.
    pub fn new(capacity_bytes: u64) -> Self {
        let pages = (capacity_bytes > 0).then(|| {
            let items = usize::try_from((capacity_bytes / TYPICAL_PAGE).max(16)).unwrap_or(16);
            Cache::with(
                items,
                capacity_bytes,
                ByBytes,
                foldhash::fast::RandomState::default(),
                DefaultLifecycle::default(),
            )
        });
        Self {
            pages,
            metrics: std::sync::Arc::default(),
        }
    }

    /// The same cache, counting its hits and misses in `metrics`.
    pub fn counting(self, metrics: std::sync::Arc<crate::metrics::LedgerMetrics>) -> Self {
        Self { metrics, ..self }
    }

    /// The reply to `query` against `state`: the cached one when the
    /// listings it reads are unchanged, else what `build` returns (kept for
    /// next time when it succeeds). `build` must answer `query` from
    /// `state`.
    ///
    /// A cached page skips the query's checks, which cannot have changed:
    /// it was built by a query that passed them, the policy is fixed for
    /// the process and an account, once registered, stays registered.
    ///
    /// While a share the listing holds has ended (at `now`) without the
    /// ledger having recorded it yet, the page is built and not kept: its
    /// stamps have not changed, but what it shows has.
    pub fn reply(
        &self,
        state: &LedgerState,
        query: &ImageQuery,
        now: time::OffsetDateTime,
        build: impl FnOnce() -> Result<R, DomainError>,
    ) -> Result<R, DomainError> {
        let Some((pages, key)) = self.pages.as_ref().zip(PageKey::of(query)) else {
            return build();
        };
        if key.image_type.lists_shared() && state.has_ended_share(&key.account, &key.region, now) {
            return build();
        }
        let stamps = stamps_read(state, &key);
        if let Some(page) = pages.get(&key) {
            if page.stamps == stamps {
                self.metrics.page_hits.inc();
                return Ok(page.reply);
            }
        }
        self.metrics.page_misses.inc();
        // Errors are not kept: a key that failed (an unknown account, a
        // region not served, a limit too large) builds, and fails, again.
        let reply = build()?;
        pages.insert(
            key,
            CachedPage {
                stamps,
                reply: reply.clone(),
            },
        );
        Ok(reply)
    }
}

impl PageKey {
    /// The key of an unfiltered query; `None` for one that is filtered or
    /// incomplete (which is never cached).
    fn of(query: &ImageQuery) -> Option<Self> {
        if query.is_filtered() {
            return None;
        }
        Some(Self {
            account: query.account_id.clone()?,
            region: query.region.clone()?,
            image_type: query.image_type,
            offset: query.offset,
            limit: query.limit,
        })
    }
}

/// The stamps of the listings the query behind `key` reads; a listing it
/// does not read counts as unchanged.
fn stamps_read(state: &LedgerState, key: &PageKey) -> ListingStamps {
    let stamps = state.listing_stamps(&key.account, &key.region);
    ListingStamps {
        owned: stamps.owned.filter(|_| key.image_type.lists_owned()),
        shared: stamps.shared.filter(|_| key.image_type.lists_shared()),
    }
}

#[cfg(test)]
mod tests;
