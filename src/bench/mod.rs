//! Benchmark tooling: a log filler and a load generator that measures every
//! scenario against a do-nothing gRPC call on the same server.

mod fill;
mod load;

pub use fill::{account, fill, FillPlan, FillReport};
pub use load::{run, BenchConfig, BenchReport, Scenario, ScenarioResult};
