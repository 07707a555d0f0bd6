//! [`LoadError`]: why a load stopped.

use std::fmt;

/// What kind of failure stopped a load: a harness picks its exit code or its retry by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A connection could not be opened or made ready: no server there, a failed upgrade, a
    /// codec the server does not speak, a broken handshake.
    Connect,
    /// The server refused the identity (`wse.not-authorized`) or closed before its welcome.
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
