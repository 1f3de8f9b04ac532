//! The training crate's error type: every variant names what failed and, where there is one, the fix.

use std::path::PathBuf;

/// Errors from recipes, run directories, checkpoints and training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A recipe file could not be read or does not match the schema.
    #[error("{path}: {message}")]
    Recipe {
        /// The recipe file (or `--set` for an override).
        path: String,
        /// What was wrong, with the key path.
        message: String,
    },
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("writing", "reading", …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Loading data failed.
    #[error(transparent)]
    Data(Box<easel_data::DataError>),
    /// A loss or scalar became NaN or infinite.
    #[error("{name} is {value} at step {step}: training stopped before this step was saved. {checkpoint}\nLower the learning rate or check the data, then `easel resume` from that checkpoint.")]
    NonFinite {
        /// The step whose scalars were not finite (1-based: the step being computed).
        step: u64,
        /// The scalar's name.
        name: String,
        /// Its value.
        value: f64,
        /// Where the last good checkpoint is.
        checkpoint: String,
    },
    /// A run directory or checkpoint is not what was expected.
    #[error("{0}")]
    Run(String),
}

impl From<easel_data::DataError> for TrainError {
    fn from(e: easel_data::DataError) -> Self {
        TrainError::Data(Box::new(e))
    }
}

/// Result alias for this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Extension to attach a path and an operation to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| TrainError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
