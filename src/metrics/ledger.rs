//! What the ledger's stages count as they commit, and what the gRPC
//! services count of subscriptions and the page cache.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A stage of the commit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// `append`, `flush` or `sync`.
    pub stage: &'static str,
}

/// The ledger's own counters. Without a registry (the default) they count
/// all the same and nobody reads them.
#[derive(Debug)]
pub struct LedgerMetrics {
    /// Records made durable.
    pub events: Counter,
    /// Commands whose events were made durable.
    pub commands: Counter,
    /// Commands per group commit.
    pub batch_size: Histogram,
    /// Seconds each commit stage took, per group commit.
    pub stage_seconds: Family<StageLabel, Histogram>,
    /// Idempotency records the writer holds.
    pub tokens: Gauge,
    /// Open `Subscribe` streams.
    pub subscriptions: Gauge,
    /// How many `Subscribe` streams the server admits at once.
    pub subscriptions_max: Gauge,
    /// `DescribeImages` pages served from the page cache, and built.
    pub page_hits: Counter,
    /// See `page_hits`.
    pub page_misses: Counter,
    /// The position the stored read side was last written at.
    pub read_side_position: Gauge,
    /// Damaged records the scrub found in its last pass (or the current
    /// one, when more).
    pub damaged_records: Gauge,
    /// How far the scrub's current pass got.
    pub scrub_position: Gauge,
    /// Times this replica found its history forked from the database's.
    pub chain_forks: Counter,
    /// Shares whose end the sweep recorded.
    pub shares_ended: Counter,
    /// Shares that had ended but were not recorded yet, at the sweep's last look.
    pub shares_ended_unrecorded: Gauge,
}

/// Group-commit sizes: 1 to 4,096 commands.
fn batch_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 2.0, 13,
    ))
}

/// Commit stages: 50 µs to about 3 s.
fn stage_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

impl LedgerMetrics {
    /// New counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "ledger_events_committed",
            "Records made durable",
            metrics.events.clone(),
        );
        registry.register(
            "ledger_commands_committed",
            "Commands whose events were made durable",
            metrics.commands.clone(),
        );
        registry.register(
            "ledger_group_commit_commands",
            "Commands per group commit",
            metrics.batch_size.clone(),
        );
        registry.register(
            "ledger_commit_stage_seconds",
            "Seconds each stage of a group commit took (append, flush to the OS, sync to the disk)",
            metrics.stage_seconds.clone(),
        );
        registry.register(
            "ledger_idempotency_records",
            "Idempotency records (client tokens) the writer holds",
            metrics.tokens.clone(),
        );
        registry.register(
            "ledger_subscriptions_open",
            "Open Subscribe streams",
            metrics.subscriptions.clone(),
        );
        registry.register(
            "ledger_subscriptions_max",
            "Subscribe streams the server admits at once (--max-subscriptions)",
            metrics.subscriptions_max.clone(),
        );
        registry.register(
            "ledger_page_cache_hits",
            "DescribeImages pages served from the page cache",
            metrics.page_hits.clone(),
        );
        registry.register(
            "ledger_page_cache_misses",
            "DescribeImages pages built (not in the cache, or changed)",
            metrics.page_misses.clone(),
        );
        registry.register(
            "ledger_damaged_records",
            "Damaged records the background scrub found in its last pass (or the current one, when more)",
            metrics.damaged_records.clone(),
        );
        registry.register(
            "ledger_scrub_position",
            "How far the background scrub's current pass over the log got",
            metrics.scrub_position.clone(),
        );
        registry.register(
            "ledger_shares_ended",
            "Shares whose end the share-expiry sweep recorded (ShareExpired)",
            metrics.shares_ended.clone(),
        );
        registry.register(
            "ledger_shares_ended_unrecorded",
            "Shares past their end not yet recorded as ended, at the sweep's last look (normally 0; they count as ended all the same)",
            metrics.shares_ended_unrecorded.clone(),
        );
        registry.register(
            "ledger_chain_forks",
            "Times this replica found its history was not the database's (records lost in a failover) and reloaded",
            metrics.chain_forks.clone(),
        );
        metrics
    }

    /// Counters nobody reads (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            events: Counter::default(),
            commands: Counter::default(),
            batch_size: batch_buckets(),
            stage_seconds: Family::new_with_constructor(stage_buckets),
            tokens: Gauge::default(),
            subscriptions: Gauge::default(),
            subscriptions_max: Gauge::default(),
            page_hits: Counter::default(),
            page_misses: Counter::default(),
            read_side_position: Gauge::default(),
            damaged_records: Gauge::default(),
            scrub_position: Gauge::default(),
            chain_forks: Counter::default(),
            shares_ended: Counter::default(),
            shares_ended_unrecorded: Gauge::default(),
        }
    }

    /// Records how long `stage` took.
    pub fn stage(&self, stage: &'static str, took: std::time::Duration) {
        self.stage_seconds
            .get_or_create(&StageLabel { stage })
            .observe(took.as_secs_f64());
    }
}

impl Default for LedgerMetrics {
    fn default() -> Self {
        Self::unregistered()
    }
}
