//! Fills a data directory with a lawful log through the normal command path
//! (so every event is decided, chained and group-committed exactly as in
//! production).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image_ledger::app::{AppError, CommandOptions, Ledger, WriterOptions};
use image_ledger::domain::{
    AccountId, AccountKind, Command, ImageAttributes, ImageId, ImageSource, ImageState,
    LicenseType, NewImage, Policy, Region, Reply,
};
use image_ledger::progress::{Progress, Unit};
use image_ledger::store::{Location, Store};

/// The shape of a generated log.
#[derive(Debug, Clone)]
pub struct FillPlan {
    /// Events to reach (the log head when done is at least this).
    pub events: u64,
    /// Accounts to register first.
    pub accounts: u64,
    /// Images to register next; the rest of the log shares and cancels them.
    pub images: u64,
    /// Commands in flight at once (feeds group commit).
    pub concurrency: usize,
    /// How many regions images are spread over (1: all in the first region).
    pub regions: usize,
}

/// What a fill did.
#[derive(Debug, Clone)]
pub struct FillReport {
    /// Events in the log at the end.
    pub events: u64,
    /// Time spent.
    pub elapsed: Duration,
}

/// The id of the `i`-th generated account.
pub fn account(i: u64) -> AccountId {
    // Twelve digits, like real root account ids.
    AccountId::parse(&format!("{:012}", 100_000_000_000 + i)).unwrap_or_else(|_| unreachable!())
}

/// The attributes of the `i`-th generated image.
pub fn attributes(i: u64) -> ImageAttributes {
    ImageAttributes {
        image_name: format!("image-{i}").into(),
        image_description: "benchmark image".into(),
        platform: "Ubuntu".into(),
        os_name: "Ubuntu Server 24.04 LTS 64-bit".into(),
        image_source: ImageSource::CreateImage,
        license_type: LicenseType::Tencentcloud,
        encrypted: false,
        whole_instance: false,
        supports_cloudinit: true,
    }
}

/// Fills the store at `location` (which may already hold a log made by
/// this plan) until it holds `plan.events` events, with a bar on stderr
/// when it is a terminal.
pub fn fill(location: &Location, plan: &FillPlan, policy: Policy) -> Result<FillReport, AppError> {
    let opened = location.open()?;
    if location.database_url.is_none() {
        // A ledger with history has a signing key; a server refuses one
        // without.
        let key = image_ledger::audit::LedgerKey::default_path(&location.data_dir);
        image_ledger::audit::LedgerKey::load_or_create(&key).map_err(|err| AppError::Start {
            what: "the fill's signing key",
            source: std::io::Error::other(err.to_string()),
        })?;
    }
    fill_store(opened.store, plan, policy)
}

/// [`fill`] on any store: a PostgreSQL database, for instance.
pub fn fill_store(
    store: Arc<dyn Store>,
    plan: &FillPlan,
    policy: Policy,
) -> Result<FillReport, AppError> {
    let started = Instant::now();
    let regions: Vec<Region> = policy
        .regions
        .iter()
        .take(plan.regions.max(1))
        .cloned()
        .collect();
    let ledger = Ledger::open(
        store,
        policy,
        WriterOptions {
            max_batch: 1024,
            queue_depth: plan.concurrency.max(1) * 2,
            ..WriterOptions::default()
        },
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| AppError::Start {
            what: "the fill's runtime",
            source,
        })?;
    let next = Arc::new(AtomicU64::new(0));
    let images: Arc<Mutex<Vec<(ImageId, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let plan = Arc::new(plan.clone());
    let regions = Arc::new(regions);
    let progress = Progress::on_terminal("filling", Unit::Events, Some(plan.events));
    // Commands taken and not yet answered. Each adds at most one event, so a
    // task takes one only while the head plus these stays below the target:
    // the log ends at its target instead of up to a concurrency's worth of
    // commands (and the next round's cancels) past it.
    let in_flight = Arc::new(AtomicU64::new(0));
    let filled = runtime.block_on(async {
        // Accounts and images come first and in order of need, so they run
        // as phases; the share phase is the bulk.
        for phase in 0..3u8 {
            // Tasks that finished a phase took one index past it; start each
            // phase at its own first index so none is skipped.
            let first = match phase {
                0 => 0,
                1 => plan.accounts,
                _ => plan.accounts + plan.images,
            };
            next.store(first, Ordering::Relaxed);
            let mut tasks = Vec::new();
            for _ in 0..plan.concurrency.max(1) {
                let ledger = ledger.clone();
                let next = Arc::clone(&next);
                let images = Arc::clone(&images);
                let plan = Arc::clone(&plan);
                let regions = Arc::clone(&regions);
                let progress = progress.clone();
                let in_flight = Arc::clone(&in_flight);
                tasks.push(tokio::spawn(async move {
                    loop {
                        let head = ledger.durable_head().position;
                        if head >= plan.events {
                            return Ok::<(), AppError>(());
                        }
                        let (taken, ahead) = InFlight::take(&in_flight);
                        if head + ahead >= plan.events {
                            // The commands in flight may reach the target;
                            // look again once some are answered.
                            drop(taken);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                        progress.set(head);
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let command = match phase {
                            0 if k < plan.accounts => Command::RegisterAccount {
                                account_id: account(k),
                                kind: AccountKind::Root,
                            },
                            1 if k < plan.accounts + plan.images => {
                                let i = k - plan.accounts;
                                let owner = i % plan.accounts;
                                Command::RegisterImage(NewImage {
                                    owner_account_id: account(owner),
                                    region: regions[(i / plan.accounts) as usize % regions.len()]
                                        .clone(),
                                    attributes: attributes(i),
                                    state: ImageState::Normal,
                                })
                            }
                            2 => {
                                let s = k - plan.accounts - plan.images;
                                let (image, owner) = {
                                    let list = images.lock().map_err(|_| AppError::ShuttingDown)?;
                                    if list.is_empty() {
                                        return Ok(());
                                    }
                                    list[(s % list.len() as u64) as usize].clone()
                                };
                                let round = s / plan.images.max(1);
                                let target =
                                    (owner + 1 + (round / 2) % (plan.accounts - 1)) % plan.accounts;
                                let account_ids = vec![account(target)];
                                if round.is_multiple_of(2) {
                                    Command::ShareImage {
                                        caller: account(owner),
                                        image_id: image,
                                        account_ids,
                                        expires_at: None,
                                    }
                                } else {
                                    Command::CancelImageSharing {
                                        caller: account(owner),
                                        image_id: image,
                                        account_ids,
                                    }
                                }
                            }
                            _ => return Ok(()),
                        };
                        match ledger.execute(command, CommandOptions::default()).await {
                            Ok(Reply::ImageRegistered { image_id }) => {
                                let owner = (k - plan.accounts) % plan.accounts;
                                images
                                    .lock()
                                    .map_err(|_| AppError::ShuttingDown)?
                                    .push((image_id, owner));
                            }
                            Ok(_) | Err(AppError::Domain(_)) => {}
                            Err(err) => return Err(err),
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.map_err(|e| AppError::Start {
                    what: "a fill task",
                    source: std::io::Error::other(e),
                })??;
            }
            if phase == 1 {
                let mut list = images.lock().map_err(|_| AppError::ShuttingDown)?;
                list.sort();
            }
        }
        Ok::<(), AppError>(())
    });
    progress.finish();
    filled?;
    let events = ledger.durable_head().position;
    ledger.shutdown();
    Ok(FillReport {
        events,
        elapsed: started.elapsed(),
    })
}

/// One command taken and not yet answered: counted in `in_flight` from
/// `take` until dropped, whichever way its task goes on.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    /// Counts one more command; also returns how many were in flight before it.
    fn take(in_flight: &'a AtomicU64) -> (Self, u64) {
        let before = in_flight.fetch_add(1, Ordering::SeqCst);
        (Self(in_flight), before)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fill with far more commands in flight than its share phase needs
    /// stops exactly at its target: here after one share of every image.
    #[test]
    fn a_fill_stops_at_its_target_with_every_image_shared_once(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let plan = FillPlan {
            events: 5 + 2 * 20,
            accounts: 5,
            images: 20,
            concurrency: 64,
            regions: 1,
        };
        let policy = Policy::default();
        let region = policy.regions.iter().next().cloned().ok_or("no region")?;
        let report = fill(&Location::dir(dir.path()), &plan, policy.clone())?;
        assert_eq!(report.events, 45);

        let store: Arc<dyn Store> = Location::dir(dir.path()).open()?.store;
        let ledger = Ledger::open(store, policy, WriterOptions::default())?;
        let state = ledger.state();
        assert_eq!(ledger.durable_head().position, 45);
        for k in 0..5 {
            let owned: Vec<&ImageId> = state
                .owned_in_region(&account(k), &region)
                .map(|image| &image.image_id)
                .collect();
            assert_eq!(owned.len(), 4, "account {k} owns 4 images");
            // Image i of owner k is shared with account k + 1, and only with it.
            for image in state.owned_in_region(&account(k), &region) {
                let with: Vec<&AccountId> = image.shares.keys().collect();
                assert_eq!(with, vec![&account((k + 1) % 5)], "{}", image.image_id);
            }
            assert_eq!(state.shared_count(&account(k), &region), 4);
        }
        ledger.shutdown();
        Ok(())
    }
}
