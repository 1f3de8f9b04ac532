//! easel's own CPU kernels, as candle custom ops with their own backward passes.
//!
//! Nothing outside [`crate::ops`] and the layers calls these directly: `ops` dispatches by device
//! and dtype, so CUDA and Metal keep candle's native ops.

pub mod act;
pub mod conv;
pub mod norm;
pub mod optim;
pub mod pad;
pub mod pool;
pub mod real;
