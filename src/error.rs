//! The one error type requests fail with.
//!
//! As in pingora, what the resilience layers need is data on the error: its
//! [`ErrorKind`] says whom to blame and whether to retry, negative-cache or
//! count against a breaker. Nothing downstream matches on message text. The
//! gateway maps a kind to a status in one place (`gateway::error`).

use std::fmt;
use std::time::Duration;

/// What failed, in the terms of DESIGN.md's error taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist at the origin.
    NotFound,
    /// The origin refused our credentials.
    Forbidden,
    /// The request, the origin's answer or a config is wrong; retrying won't help.
    Invalid,
    /// The origin failed in a way that may pass.
    Transient,
    /// The origin did not answer in time.
    Timeout,
    /// A plugin trapped, ran out of memory or broke its contract.
    PluginFailed,
    /// A plugin call exceeded its deadline and was killed.
    PluginTimeout,
    /// The object changed at the origin while it was being downloaded; the
    /// task restarts on the new version.
    Changed,
    /// The request conflicts with what the task is doing (deleting a task
    /// that is being read).
    Conflict,
    /// Too many calls at once (a bulkhead is full); refused at once, not
    /// queued.
    Overloaded,
    /// The origin's circuit breaker is open: it failed repeatedly and is
    /// not being called until its next probe.
    CircuitOpen,
    /// The origin led somewhere its policy forbids: a redirect off its
    /// base path or allowlist, a name resolving outside it. The origin's
    /// fault (502), not worth retrying, not a breaker failure.
    PolicyDenied,
    /// The disk (or the quota) has no room for the object: refused before
    /// the download starts, or a write failed with ENOSPC/EDQUOT (507).
    DiskFull,
    /// A host-side failure (disk, metadata store).
    Internal,
}

impl ErrorKind {
    /// Whether trying again later could succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Timeout)
    }
}

/// A failure with its kind and a one-line reason naming the cause.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub upstream_status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// Not retried even if its kind could pass: the attempt already used
    /// the whole deadline the client waits for (a plugin call that waited
    /// out its deadline on a silent origin).
    pub final_attempt: bool,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            upstream_status: None,
            retry_after: None,
            final_attempt: false,
        }
    }

    /// Whether the retry layer may try again.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable() && !self.final_attempt
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Prefixes the message with context, keeping the kind.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(status) = self.upstream_status
            && !self.message.contains(&status.to_string())
        {
            write!(f, " (upstream {status})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<crate::storage::StorageError> for Error {
    fn from(e: crate::storage::StorageError) -> Self {
        let kind = if e.is_disk_full() {
            ErrorKind::DiskFull
        } else {
            ErrorKind::Internal
        };
        Error::new(kind, e.to_string())
    }
}

/// Whether an I/O error means the disk or the quota is out of space.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
}

impl Error {
    /// A failed disk operation: [`ErrorKind::DiskFull`] when it ran out of
    /// space, else [`ErrorKind::Internal`].
    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> Self {
        let kind = if is_disk_full(e) {
            ErrorKind::DiskFull
        } else {
            ErrorKind::Internal
        };
        Error::new(kind, format!("{what}: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
