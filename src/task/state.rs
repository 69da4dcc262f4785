//! Where a task stands. A download's [`Phase`] is broadcast with its
//! pieces; [`State`] is the one answer every API state string comes from
//! (the task API, the status page, Dragonfly's `StatTask`).

use super::object::Landed;
use crate::error::{Error, Result};
use crate::storage::TaskState;

/// Progress of one download, broadcast to its readers.
#[derive(Debug, Clone)]
pub(super) struct Progress {
    /// `pieces[n]`: set once piece `n` is readable from the content file.
    pub(super) pieces: Vec<Option<Landed>>,
    /// Set once the download ends.
    pub(super) phase: Phase,
}

/// Where a running or ended download stands, broadcast with its pieces.
#[derive(Debug, Clone)]
pub(super) enum Phase {
    /// Fetching pieces.
    Fetching,
    /// Every piece stored, recorded and flushed.
    Succeeded,
    /// Ended with this error; what landed is kept.
    Failed(Error),
}

impl Phase {
    pub(super) fn ended(outcome: Result<()>) -> Self {
        match outcome {
            Ok(()) => Self::Succeeded,
            Err(e) => Self::Failed(e),
        }
    }

    pub(super) fn fetching(&self) -> bool {
        matches!(self, Self::Fetching)
    }

    /// How it ended; `None` while it fetches.
    pub(super) fn outcome(&self) -> Option<Result<()>> {
        match self {
            Self::Fetching => None,
            Self::Succeeded => Some(Ok(())),
            Self::Failed(e) => Some(Err(e.clone())),
        }
    }
}

/// Where a task stands: the one answer every state string comes from (the
/// task API, the status page, Dragonfly's `StatTask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A download is fetching its pieces.
    Running,
    /// Every piece is stored, recorded and flushed.
    Succeeded,
    /// Its download failed; what landed is kept.
    Failed,
    /// Some pieces are stored and no download runs.
    Partial,
}

impl State {
    /// A task known from its record: `running` while a download runs
    /// (`downloading`), `succeeded` once it is recorded whole and flushed
    /// (not while `finishing`), `partial` otherwise.
    pub(super) fn of_record(downloading: bool, record: TaskState, finishing: bool) -> Self {
        if downloading {
            Self::Running
        } else if record == TaskState::Succeeded && !finishing {
            Self::Succeeded
        } else {
            Self::Partial
        }
    }

    pub(super) fn of_phase(phase: &Phase) -> Self {
        match phase {
            Phase::Fetching => Self::Running,
            Phase::Succeeded => Self::Succeeded,
            Phase::Failed(_) => Self::Failed,
        }
    }

    /// The API's name (`running`, `succeeded`, `failed`, `partial`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Partial => "partial",
        }
    }

    /// Dragonfly's name for it (`common.v2.Task.state`, as the Go
    /// scheduler's task FSM spells its states): a partial task waits for a
    /// download, `Pending`.
    pub fn dragonfly(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Partial => "Pending",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_string_comes_from_one_state() {
        use TaskState::{Running as R, Succeeded as S};
        let cases = [
            ((true, S, false), State::Running),
            ((true, R, false), State::Running),
            ((false, S, false), State::Succeeded),
            ((false, S, true), State::Partial), // written, not yet flushed
            ((false, R, false), State::Partial),
        ];
        for ((downloading, record, finishing), want) in cases {
            assert_eq!(State::of_record(downloading, record, finishing), want);
        }
        let failed = Phase::ended(Err(Error::internal("x")));
        assert_eq!(State::of_phase(&failed), State::Failed);
        assert_eq!(State::of_phase(&Phase::Fetching), State::Running);
        assert_eq!(State::of_phase(&Phase::ended(Ok(()))), State::Succeeded);
        assert!(failed.outcome().is_some_and(|r| r.is_err()));
        assert!(Phase::Fetching.outcome().is_none());
        let names: Vec<_> = [
            State::Running,
            State::Succeeded,
            State::Failed,
            State::Partial,
        ]
        .iter()
        .map(|s| (s.as_str(), s.dragonfly()))
        .collect();
        assert_eq!(
            names,
            [
                ("running", "Running"),
                ("succeeded", "Succeeded"),
                ("failed", "Failed"),
                ("partial", "Pending")
            ]
        );
        // The API's JSON is the same name.
        assert_eq!(
            serde_json::to_string(&State::Partial).unwrap(),
            "\"partial\""
        );
    }
}
