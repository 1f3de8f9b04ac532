//! Training steps: one module per kind of training, each owning its networks and optimisers.

pub mod classifier;
pub mod gan;
pub mod lapgan;
pub mod sr;
pub mod style;
