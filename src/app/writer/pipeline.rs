//! The pipeline built in one place: the channels between the stages, each
//! stage made on the state the ledger loaded, their threads started, and
//! joined in order once the command queue closes.

use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use super::append::Appender;
use super::control::Request;
use super::decide::{DecideStart, Decider, StartTokens};
use super::flush::Flusher;
use super::link::WriterLink;
use super::spawn;
use super::sync::Syncer;
use super::timing::StageTiming;
use crate::app::{AppError, WriterOptions};
use crate::domain::{LedgerState, Policy};
use crate::projection::{ProjectionWriter, Touched};
use crate::store::{Head, Store};

/// Decided batches that may wait for the append stage.
const DECIDED_QUEUE: usize = 8;
/// Written batches that may wait for the flush and sync stages.
const WRITTEN_QUEUE: usize = 16;
/// How often the decide stage looks for expired idempotency records.
const EXPIRY_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// What the pipeline starts from: the loaded state, published in `view`
/// and durable at `durable`'s head.
pub(in crate::app) struct Loaded {
    pub(in crate::app) store: Arc<dyn Store>,
    pub(in crate::app) policy: Arc<Policy>,
    pub(in crate::app) view: Arc<ArcSwap<LedgerState>>,
    pub(in crate::app) durable: watch::Sender<Head>,
    pub(in crate::app) tokens: StartTokens,
}

/// Starts every stage; the returned thread (`ledger-decide`) decides the
/// commands of `queue` until it closes, then joins the later stages once
/// they have finished what they hold.
pub(in crate::app) fn start(
    loaded: Loaded,
    link: WriterLink,
    options: &WriterOptions,
    queue: mpsc::Receiver<Request>,
) -> Result<JoinHandle<()>, AppError> {
    let Loaded {
        store,
        policy,
        view,
        durable,
        tokens,
    } = loaded;
    let head = *durable.borrow();
    let state = view.load_full();
    let (to_append, appending) = sync_channel(DECIDED_QUEUE);
    let (to_flush, flushing) = sync_channel(WRITTEN_QUEUE);
    let (to_sync, syncing) = sync_channel(WRITTEN_QUEUE);
    link.written.store(head.position, Ordering::SeqCst);
    let appender = Appender {
        store: Arc::clone(&store),
        control: Arc::clone(&link.control),
        applied: head,
        applied_state: Arc::clone(&state),
        applied_tokens: tokens.loaded(),
        written: Arc::clone(&link.written),
        epoch: 0,
        restarting: false,
        in_turn: false,
        confirmed: confirmed_at_start(store.as_ref()),
        carried: Touched::default(),
        metrics: Arc::clone(&options.metrics),
        failure: None,
        restart: false,
        timing: StageTiming::default(),
    };
    let flusher = Flusher {
        metrics: Arc::clone(&options.metrics),
        store: Arc::clone(&store),
        control: Arc::clone(&link.control),
        timing: StageTiming::default(),
    };
    let syncer = Syncer {
        store: Arc::clone(&store),
        control: Arc::clone(&link.control),
        view,
        durable,
        read_side: ProjectionWriter::start(
            Arc::clone(&store),
            head.position,
            options.settings.read_side_delay(),
            Arc::clone(&options.metrics),
        )
        .map_err(|source| AppError::Start {
            what: "the read side's writer",
            source,
        })?,
        metrics: Arc::clone(&options.metrics),
        unflushed: Touched::default(),
        timing: StageTiming::default(),
    };
    tick_for_expiry(Arc::clone(&link.control))?;
    let decider = Decider::new(
        DecideStart {
            store,
            policy,
            state,
            head,
            tokens,
            control: link.control,
            health: link.health,
            written: link.written,
            stages: to_append,
        },
        options,
    );
    let later = vec![
        spawn("ledger-append", move || appender.run(appending, to_flush))?,
        spawn("ledger-flush", move || flusher.run(flushing, to_sync))?,
        spawn("ledger-sync", move || syncer.run(syncing))?,
    ];
    spawn("ledger-decide", move || {
        let (batches, commands) = decider.run(queue);
        for stage in later {
            if stage.join().is_err() {
                tracing::error!("a writer stage panicked");
            }
        }
        tracing::info!(
            batches,
            commands,
            mean_batch = commands as f64 / batches.max(1) as f64,
            "the writer stopped"
        );
    })
}

/// Wakes the decide stage once an [`EXPIRY_TICK`] until the command queue
/// closes, so idempotency records leave memory as they expire, not only
/// when the next command comes.
fn tick_for_expiry(control: Arc<super::control::Control>) -> Result<(), AppError> {
    spawn("ledger-expiry", move || {
        while control.tick() {
            std::thread::sleep(EXPIRY_TICK);
        }
    })
    .map(drop)
}

/// What of the log is known durable at start: everything a store of its
/// own loaded; nothing of a shared log's, until this replica's first
/// acknowledged commit confirms it.
fn confirmed_at_start(store: &dyn Store) -> u64 {
    if store.shared().is_some() {
        0
    } else {
        u64::MAX
    }
}
