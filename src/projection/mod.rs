//! The read side: list queries over the in-memory state, and the projections
//! persisted in the store with their rebuild.

pub mod persist;
pub mod query;

#[cfg(test)]
mod tests;

pub use persist::Touched;
pub use query::{describe_images, ImagePage, ImageQuery, ImageTypeFilter, ListedImage};
