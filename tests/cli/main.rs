//! End-to-end tests of the `easel` binary on the tiny recipes (one test binary, a module per area).

mod common;
mod errors;
mod family;
mod runs;
mod sample;
mod tensorboard;
