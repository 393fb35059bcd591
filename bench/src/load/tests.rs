//! The load generator's arithmetic and parsing: windows, baselines,
//! medians, thread names, page views and the fill target.

use std::collections::BTreeMap;
use std::time::Duration;

use image_ledger::grpc::pb;

use super::server::thread_kind;
use super::windows::{bracketing_baselines, median, plan_windows, summarize, Sample};
use super::workload::PageView;
use super::*;

fn sample(calls: usize, seconds: u64) -> Sample {
    Sample {
        latencies: (0..calls).map(|i| i as u32).collect(),
        errors: 0,
        window: Duration::from_secs(seconds),
        server_cpu: Some(Duration::from_millis(calls as u64)),
        client_cpu: None,
        server_threads: BTreeMap::from([
            (
                "ledger-append".to_owned(),
                Duration::from_millis(calls as u64 / 4),
            ),
            (
                "tokio-rt-worker".to_owned(),
                Duration::from_millis(calls as u64 / 2),
            ),
        ]),
    }
}

/// A reply as the server writes it: each image as field 1, then the total.
fn reply(images: &[pb::Image], total_count: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for image in images {
        prost::encoding::message::encode(1, image, &mut out);
    }
    prost::encoding::uint32::encode(2, &total_count, &mut out);
    out
}

fn images(n: usize) -> Vec<pb::Image> {
    (0..n)
        .map(|i| pb::Image {
            image_id: format!("img-{i:08}"),
            image_name: format!("image {i}"),
            ..Default::default()
        })
        .collect()
}

#[test]
fn a_page_view_keeps_each_image_encoded_and_checks_the_count() -> Result<(), prost::DecodeError> {
    use prost::Message;
    let full = images(20);
    let view = PageView::decode(reply(&full, 35).as_slice())?;
    assert_eq!(view.total_count, 35);
    assert_eq!(view.images.len(), 20);
    assert_eq!(view.images[7].as_ref(), full[7].encode_to_vec().as_slice());
    assert!(view.is_full_first_page());

    let short = PageView::decode(reply(&images(19), 35).as_slice())?;
    assert!(!short.is_full_first_page());
    let all = PageView::decode(reply(&images(3), 3).as_slice())?;
    assert!(all.is_full_first_page());
    let none = PageView::decode(reply(&[], 0).as_slice())?;
    assert!(none.is_full_first_page());
    let hollow = PageView::decode(reply(&[pb::Image::default()], 1).as_slice())?;
    assert!(!hollow.is_full_first_page());
    Ok(())
}

#[test]
fn threads_are_grouped_by_name_without_their_number() {
    assert_eq!(thread_kind("sled-io-3"), "sled-io");
    assert_eq!(thread_kind("sled-io-12"), "sled-io");
    assert_eq!(thread_kind("tokio-rt-worker"), "tokio-rt-worker");
    assert_eq!(thread_kind("ledger-append"), "ledger-append");
    assert_eq!(thread_kind("worker-"), "worker-");
    assert_eq!(thread_kind("image-ledger"), "image-ledger");
}

#[test]
fn every_scenario_window_has_a_health_window_on_each_side() {
    let plan = plan_windows(&[Scenario::Share, Scenario::Describe], 2);
    let names: Vec<&str> = plan.iter().map(|(_, s)| s.name()).collect();
    assert_eq!(
        names,
        [
            "health", "share", "health", "describe", "health", "share", "health", "describe",
            "health"
        ]
    );
    let slots: Vec<Option<usize>> = plan.iter().map(|(w, _)| w.slot).collect();
    assert_eq!(
        slots,
        [
            None,
            Some(0),
            None,
            Some(1),
            None,
            Some(0),
            None,
            Some(1),
            None
        ]
    );
    let starts: Vec<usize> = plan
        .iter()
        .filter(|(w, _)| w.round_starts)
        .map(|(w, _)| w.round)
        .collect();
    assert_eq!(starts, [1, 2]);
    // Only the baseline: one window per round.
    let alone = plan_windows(&[], 3);
    assert_eq!(alone.len(), 3);
    assert!(alone
        .iter()
        .all(|(w, s)| *s == Scenario::Health && w.slot.is_none()));
}

#[test]
fn a_baseline_is_the_mean_of_the_health_windows_around_the_scenario() {
    // H0 S1 H1 D1 H2 S2 H3 D2 H4, health rising steadily: share follows
    // H0 and H2, describe H1 and H3.
    let health = [100.0, 110.0, 120.0, 130.0, 140.0];
    assert_eq!(bracketing_baselines(&health, &[0, 2]), vec![105.0, 125.0]);
    assert_eq!(bracketing_baselines(&health, &[1, 3]), vec![115.0, 135.0]);
    // A run cut short after its last scenario window keeps the one before.
    assert_eq!(
        bracketing_baselines(&health[..4], &[1, 3]),
        vec![115.0, 130.0]
    );
}

#[test]
fn the_median_of_odd_even_and_empty_lists() {
    assert_eq!(median(&[0.3, 0.1, 0.2]), 0.2);
    assert_eq!(median(&[0.4, 0.1, 0.3, 0.2]), 0.25);
    assert_eq!(median(&[]), 0.0);
}

#[test]
fn each_round_is_compared_with_its_own_baseline() {
    // Baselines of 100 and 50 calls/s; the scenario does 50 then 40:
    // ratios 0.5 and 0.8, whatever the pooled rates would say.
    let result = summarize(
        Scenario::Share,
        vec![sample(100, 2), sample(80, 2)],
        &[100.0, 50.0],
    );
    assert_eq!(result.round_ratios, vec![0.5, 0.8]);
    assert!((result.ratio - 0.65).abs() < 1e-12);
    assert_eq!(result.ops, 180);
    assert_eq!(result.ops_per_sec, 45.0);
    assert_eq!(result.server_cpu_per_call, Some(Duration::from_millis(1)));
    assert_eq!(result.client_cpu_per_call, None);
    // Thread CPU summed over the rounds, most first.
    assert_eq!(
        result.server_cpu_by_thread,
        vec![
            ("tokio-rt-worker".to_owned(), Duration::from_millis(90)),
            ("ledger-append".to_owned(), Duration::from_millis(45)),
        ]
    );
    // Percentiles over the calls of both rounds (latencies 0..100 and 0..80).
    assert_eq!(result.p50, Duration::from_micros(44));
}

#[test]
fn the_log_is_filled_to_at_least_the_target_ending_on_a_round_of_shares() {
    let config = |accounts, images, log_events| BenchConfig {
        binary: "image-ledger".into(),
        addr: None,
        data_dir: None,
        database_url: None,
        replicas: 1,
        accounts,
        images,
        log_events,
        scenarios: Vec::new(),
        seconds: 1.0,
        rounds: 1,
        concurrency: 64,
        connections: 4,
        cache_mb: Some(16),
        page_cache_mb: Some(16),
        tls: false,
        otlp_endpoint: None,
    };
    // Accounts, images, one round of shares.
    assert_eq!(preload_events(&config(1_000, 10_000, 0)), 21_000);
    assert_eq!(preload_events(&config(1_000, 10_000, 21_000)), 21_000);
    // One more event needs a round of cancels and one of shares.
    assert_eq!(preload_events(&config(1_000, 10_000, 21_001)), 41_000);
    // 98.9 rounds asked: 99, the last of them shares.
    assert_eq!(preload_events(&config(1_000, 10_000, 1_000_000)), 1_001_000);
    // 98 rounds asked, which would end on cancels: 99.
    assert_eq!(preload_events(&config(1_000, 10_000, 991_000)), 1_001_000);
    assert_eq!(preload_events(&config(20, 200, 500)), 820);
}
