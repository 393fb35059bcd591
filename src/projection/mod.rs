//! The read side, in one place: the state rebuilt from the log (replay),
//! the projections stored beside the log (persist) and the thread that
//! writes them behind it (writer), the state loaded at start (load), and
//! the list queries over the in-memory state (query). Each backend's
//! storage of them is the store's ([`crate::store::ProjectionStore`]).

mod codec;
mod load;
mod page_cache;
pub mod persist;
pub mod query;
mod replay;
mod writer;

#[cfg(test)]
mod tests;

pub use load::load_state;
pub use page_cache::{EncodedPage, PageCache};
pub use persist::Touched;
pub use query::{describe_images, Condition, ImagePage, ImageQuery, ImageTypeFilter, ListedImage};
#[cfg(test)]
pub(crate) use replay::state_at;
pub use replay::{
    catch_up, check_projections, head_at, rebuild_projections, replay_log, ProjectionCheck,
};
pub(crate) use replay::{catch_up_to, check_record};
pub use writer::{ProjectionWriter, MAX_EVENTS};
