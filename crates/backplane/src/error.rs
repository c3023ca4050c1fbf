//! What can go wrong with the backplane, classified so a caller can decide: retry later
//! ([`BackplaneError::Unavailable`], [`BackplaneError::Io`]), tell its client
//! ([`BackplaneError::KeyReused`], [`BackplaneError::TooLarge`]), or stop and have an
//! operator look ([`BackplaneError::Corrupt`], [`BackplaneError::Config`]).

use std::path::PathBuf;

use crate::log::LogError;

/// Why a backplane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    /// Redis did not answer or refused the command; the operation may be retried.
    #[error("Redis is unavailable ({0}); check that it runs and that backplane.redis points at it")]
    Unavailable(#[source] redis::RedisError),
    /// The file system refused (the embedded backend's files under data_dir).
    #[error("{path}: {source}; check the disk and the permissions of data_dir")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The idempotency key was used, within the window, for an append with another body.
    #[error(
        "this idempotency key was already used with a different body; use a new key for a new request"
    )]
    KeyReused,
    /// Stored data is not what the backplane wrote: a damaged segment, or a Redis key
    /// written by something else.
    #[error("{what} is damaged: {why}; restore it from a backup or move it away")]
    Corrupt {
        /// The file or key.
        what: String,
        /// What was found.
        why: String,
    },
    /// A record over the size limit.
    #[error("a record of {size} bytes is over the {limit}-byte limit; send smaller records")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An earlier write failed, so the embedded stream refuses appends rather than risk a
    /// gap; restart lintas once the disk is fixed.
    #[error(
        "the stream stopped accepting appends after a write failed ({0}); fix the disk and restart lintas"
    )]
    Stopped(String),
    /// The `[backplane]` settings cannot be used as they are.
    #[error("{key}: {message}")]
    Config {
        /// The setting to fix, e.g. `backplane.password_env`.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

impl BackplaneError {
    /// Whether the same operation may succeed if tried again later.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Io { .. })
    }
}

impl From<redis::RedisError> for BackplaneError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(e)
    }
}

impl From<LogError> for BackplaneError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io { path, source } => Self::Io { path, source },
            LogError::Corrupt {
                path,
                position,
                reason,
            } => Self::Corrupt {
                what: path.display().to_string(),
                why: format!("{reason} at byte {position}"),
            },
            LogError::TooLarge { size } => Self::TooLarge {
                size,
                limit: crate::MAX_RECORD,
            },
            LogError::Failed(why) => Self::Stopped(why),
        }
    }
}
