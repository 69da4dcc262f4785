//! The one error type requests fail with.
//!
//! As in pingora, what the resilience layers need is data on the error: its
//! [`ErrorKind`] says whether to retry, negative-cache or count against a
//! breaker, and its [`Blame`] (pingora's `ErrorSource`) where it was born.
//! Nothing downstream matches on message text. The HTTP status and the gRPC
//! code are decided here, side by side, from kind and blame together
//! ([`Error::http_status`], [`Error::grpc_code`]).

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

/// Where a failure was born, as pingora's `ErrorSource`: with the kind it
/// decides the status (an invalid request is the client's 400; an invalid
/// plugin or origin answer is a 502; a host-side fault is a 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// What the client asked for is wrong.
    Client,
    /// The origin answered wrongly, or not at all.
    Origin,
    /// A plugin failed, or said the request cannot be made (its config).
    Plugin,
    /// This host: disk, metadata store, a full bulkhead, an open breaker.
    Local,
}

impl Blame {
    /// Who is at fault when nothing more is known than the kind.
    pub fn of(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Invalid | ErrorKind::Conflict => Blame::Client,
            ErrorKind::NotFound
            | ErrorKind::Forbidden
            | ErrorKind::Transient
            | ErrorKind::Timeout
            | ErrorKind::Changed
            | ErrorKind::PolicyDenied => Blame::Origin,
            ErrorKind::PluginFailed | ErrorKind::PluginTimeout => Blame::Plugin,
            ErrorKind::Overloaded
            | ErrorKind::CircuitOpen
            | ErrorKind::DiskFull
            | ErrorKind::Internal => Blame::Local,
        }
    }
}

/// A failure with its kind and a one-line reason naming the cause.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub blame: Blame,
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
            blame: Blame::of(kind),
            message: message.into(),
            upstream_status: None,
            retry_after: None,
            final_attempt: false,
        }
    }

    /// The same failure, born elsewhere than its kind says by default.
    pub fn blamed(mut self, blame: Blame) -> Self {
        self.blame = blame;
        self
    }

    /// The HTTP status a client is answered with.
    pub fn http_status(&self) -> u16 {
        match (self.kind, self.blame) {
            (ErrorKind::NotFound, _) => 404,
            (ErrorKind::Forbidden, _) => 403,
            (ErrorKind::Invalid, Blame::Client) => 400,
            (ErrorKind::Invalid, Blame::Origin | Blame::Plugin) => 502,
            (ErrorKind::Invalid, Blame::Local) => 500,
            (ErrorKind::Transient, _) => match self.upstream_status {
                Some(429 | 503) => 503,
                _ => 502,
            },
            (ErrorKind::Timeout | ErrorKind::PluginTimeout, _) => 504,
            (ErrorKind::PluginFailed | ErrorKind::PolicyDenied, _) => 502,
            (ErrorKind::Changed | ErrorKind::Overloaded | ErrorKind::CircuitOpen, _) => 503,
            (ErrorKind::Conflict, _) => 409,
            (ErrorKind::DiskFull, _) => 507,
            (ErrorKind::Internal, _) => 500,
        }
    }

    /// The gRPC code a Dragonfly peer or scheduler is answered with.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match (self.kind, self.blame) {
            (ErrorKind::NotFound, _) => Code::NotFound,
            (ErrorKind::Forbidden, _) => Code::PermissionDenied,
            (ErrorKind::Invalid, Blame::Client) => Code::InvalidArgument,
            (ErrorKind::Invalid, Blame::Origin | Blame::Plugin) => Code::FailedPrecondition,
            (ErrorKind::Invalid, Blame::Local) => Code::Internal,
            (ErrorKind::Transient | ErrorKind::CircuitOpen, _) => Code::Unavailable,
            (ErrorKind::Overloaded | ErrorKind::DiskFull, _) => Code::ResourceExhausted,
            (ErrorKind::Timeout | ErrorKind::PluginTimeout, _) => Code::DeadlineExceeded,
            (ErrorKind::Changed, _) => Code::Aborted,
            (ErrorKind::Conflict | ErrorKind::PolicyDenied, _) => Code::FailedPrecondition,
            (ErrorKind::PluginFailed | ErrorKind::Internal, _) => Code::Internal,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_follows_kind_and_blame() {
        let invalid = Error::new(ErrorKind::Invalid, "x");
        assert_eq!(invalid.blame, Blame::Client);
        assert_eq!(invalid.http_status(), 400);
        assert_eq!(invalid.grpc_code(), tonic::Code::InvalidArgument);
        for blame in [Blame::Plugin, Blame::Origin] {
            let e = invalid.clone().blamed(blame);
            assert_eq!(e.http_status(), 502, "{blame:?}");
            assert_eq!(e.grpc_code(), tonic::Code::FailedPrecondition, "{blame:?}");
        }
        assert_eq!(invalid.clone().blamed(Blame::Local).http_status(), 500);
        let mut busy = Error::new(ErrorKind::Transient, "x");
        assert_eq!(busy.http_status(), 502);
        busy.upstream_status = Some(503);
        assert_eq!(busy.http_status(), 503);
        assert_eq!(Error::new(ErrorKind::DiskFull, "x").http_status(), 507);
        assert_eq!(
            Error::new(ErrorKind::PluginTimeout, "x").blame,
            Blame::Plugin
        );
        assert_eq!(Error::new(ErrorKind::CircuitOpen, "x").blame, Blame::Local);
    }
}
