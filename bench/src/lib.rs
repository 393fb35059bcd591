//! Benchmark tooling for image-ledger, apart from the product: a log
//! filler that writes through the normal write path ([`fill`]), and a load
//! generator that measures every scenario against a do-nothing gRPC call
//! on the same server ([`run`]), one table of what a region-sized log
//! costs ([`scale`]), and a soak that tries the server's bounds
//! under abuse and faults ([`soak`]).

pub mod cloud;
mod fill;
mod load;
pub mod otlp;
mod soak;

pub use fill::{account, attributes, fill, fill_store, FillPlan, FillReport};
pub use load::scale::{scale, ScaleReport};
pub use load::server::rss_of;
pub use load::{preload_events, run, BenchConfig, BenchReport, BoxError, Scenario, ScenarioResult};
pub use soak::{soak, SoakConfig};
