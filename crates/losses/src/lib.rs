//! Losses as pure functions on tensors: no state, no files, any device.

pub mod adversarial;

pub use adversarial::bce_with_logits;
