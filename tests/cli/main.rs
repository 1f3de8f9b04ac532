//! End-to-end tests of the `easel` binary on the tiny recipes (one test binary, a module per area).

mod common;
mod errors;
mod eval;
mod export;
mod family;
mod latent;
mod runs;
mod sample;
mod style;
mod tensorboard;
mod transfer;
