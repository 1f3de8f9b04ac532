//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while opening a dataset or making batches.
///
/// Every message says *what* failed, *where* (a path, a file, a config key or
/// a URL) and *how to fix it*, so it can be shown to a user as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A `[data]` value is out of range or does not fit the chosen source.
    #[error("data.{key}: {problem} — {fix}")]
    Config {
        /// The key under `[data]`, e.g. `channels` or `hub.timeout_secs`.
        key: String,
        /// What is wrong with its value.
        problem: String,
        /// What to set instead.
        fix: String,
    },
    /// A file or folder the source needs does not exist.
    #[error("{what} not found: {path} — {fix}")]
    NotFound {
        /// What was looked for, e.g. `MNIST file`.
        what: String,
        /// Where it was looked for (may name alternatives, e.g. `x(.gz)`).
        path: String,
        /// How to provide it.
        fix: String,
    },
    /// The operating system refused to read a file or folder.
    #[error("cannot read {path}: {err} — {fix}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
        /// What to check.
        fix: String,
    },
    /// A file exists but its contents are not what its format requires
    /// (wrong magic number, truncated, undecodable image, …).
    #[error("{path}: {problem} — {fix}")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// How to repair or avoid it.
        fix: String,
    },
    /// A folder holds no usable images or batch files.
    #[error("{path}: {problem} — {fix}")]
    Empty {
        /// The folder.
        path: PathBuf,
        /// What was expected there.
        problem: String,
        /// How to fill it or where to point instead.
        fix: String,
    },
    /// Fetching a dataset file from the Hugging Face hub failed (offline,
    /// unreachable, stalled, not found, …).
    #[error("{what}: {problem}\n  tried: {tried}\n  cache: {cache}\n  fix: {fix}")]
    Hub {
        /// The dataset and file that were wanted.
        what: String,
        /// Why it could not be had.
        problem: String,
        /// The URL or cache lookup that was tried.
        tried: String,
        /// The cache folder that was looked in / downloaded to.
        cache: PathBuf,
        /// How to get going anyway.
        fix: String,
    },
    /// `Dataset::get` was asked for an index past the end.
    #[error("sample index {index} is out of range: the dataset has {len} samples")]
    OutOfRange {
        /// The index asked for.
        index: usize,
        /// The dataset's length.
        len: usize,
    },
    /// The loader cannot make batches (bad batch size, a worker died, …).
    #[error("data loader: {problem} — {fix}")]
    Loader {
        /// What went wrong.
        problem: String,
        /// What to change.
        fix: String,
    },
}

impl DataError {
    pub(crate) fn config(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        DataError::Config {
            key: key.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        DataError::Corrupt {
            path: path.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn io(
        path: impl Into<PathBuf>,
        err: std::io::Error,
        fix: impl Into<String>,
    ) -> Self {
        DataError::Io {
            path: path.into(),
            err,
            fix: fix.into(),
        }
    }
}
