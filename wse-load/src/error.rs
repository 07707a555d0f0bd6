//! [`LoadError`]: why a load stopped, and [`ErrorKind::of_close_before_welcome`], the one
//! rule by which both the loads and the `wse` command judge a close before the welcome.

use std::fmt;

use wse_core::CloseReason;

/// What kind of failure stopped a load: a harness picks its exit code or its retry by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A connection could not be opened or made ready: no server there, a failed upgrade, a
    /// codec the server does not speak, a broken handshake, a close before the welcome that
    /// is no refusal (see [`ErrorKind::of_close_before_welcome`]).
    Connect,
    /// The server refused: `wse.not-authorized`, or an application's own reason on a 1000
    /// close before the welcome (see [`ErrorKind::of_close_before_welcome`]); or it sent a
    /// challenge this side cannot answer (no secret, or no HMAC quest).
    Refused,
    /// Something the load waits for did not come in time: messages or replies were lost, or
    /// the server stalled.
    Timeout,
    /// The server answered, but not as the load expects: an error object, a reply that
    /// differs from the first answer, a message too many, a close under load.
    Answer,
    /// This machine, not the server: `/proc` unreadable, no runtime for the load.
    Local,
}

impl ErrorKind {
    /// What kind of failure a close that came before the welcome is, from its close code and
    /// reason, by the protocol's rule ([`CloseReason::refuses`]): [`ErrorKind::Refused`] when
    /// it refuses the connection, else [`ErrorKind::Connect`]. The loads judge their
    /// handshakes by it, and the `wse` command its connects and so its exit codes.
    pub fn of_close_before_welcome(code: u16, reason: &str) -> Self {
        if CloseReason::refuses(code, reason) {
            Self::Refused
        } else {
            Self::Connect
        }
    }
}

/// Why a load stopped: its [`ErrorKind`] and what happened, in words. Every load is fatal at
/// its first failure (a load that goes on past a lost reply measures nothing meaningful).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    kind: ErrorKind,
    message: String,
}

impl LoadError {
    /// A failure of `kind`, saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What happened, in words.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn connect(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connect, message)
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    pub(crate) fn local(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Local, message)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

/// Most of what goes wrong under load is an answer the load did not expect (or a socket that
/// failed while one was awaited): text errors of the load's own checks convert to
/// [`ErrorKind::Answer`]; the sites that know better say their kind.
impl From<String> for LoadError {
    fn from(message: String) -> Self {
        Self::new(ErrorKind::Answer, message)
    }
}

impl From<&str> for LoadError {
    fn from(message: &str) -> Self {
        Self::new(ErrorKind::Answer, message)
    }
}

/// For harnesses that collect their failures as text (`wse-bench`).
impl From<LoadError> for String {
    fn from(error: LoadError) -> Self {
        error.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_before_the_welcome_is_refused() {
        let refused = [
            (1000, "wse.not-authorized"),
            (1008, "wse.not-authorized"),
            (1000, "app.banned"),
        ];
        for (code, reason) in refused {
            assert_eq!(
                ErrorKind::of_close_before_welcome(code, reason),
                ErrorKind::Refused,
                "{code} {reason:?}"
            );
        }
        let broken = [
            (1000, ""),
            (1005, ""),
            (1006, ""),
            (1011, ""),
            (1011, "app.crashed"),
            (1012, "wse.by-server"),
            (1013, "wse.try-again"),
            (1000, "wse.protocol-error"),
            (1000, "wse.by-server"),
        ];
        for (code, reason) in broken {
            assert_eq!(
                ErrorKind::of_close_before_welcome(code, reason),
                ErrorKind::Connect,
                "{code} {reason:?}"
            );
        }
    }
}
