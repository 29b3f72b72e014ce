//! The errors that end a command, and their exit statuses (docs/cli.md, "Exit status").
//!
//! Each module returns its own error type; the commands ([`crate::serve::run`],
//! [`crate::snapshot::run`]) wrap them here, naming the flag they came from, and `main.rs` prints
//! one line and exits with [`Error::exit_code`]. [`Error`]'s `Display` is the whole line, the
//! cause included: print it, don't walk `source()` as well (the cause would show twice).

use crate::ebpf;
use crate::http::{BindError, WebConfigError};
use crate::names::file::NamesFileError;
use crate::netns::CollectorError;

/// Exit status of bad flags, environment variables or configuration files.
pub const EXIT_USAGE: u8 = 2;
/// Exit status of a runtime failure that prevents the command from running or finishing.
pub const EXIT_RUNTIME: u8 = 1;

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag or environment variable is invalid (one line, naming it).
    #[error("{0}")]
    Flags(String),
    /// `--web.config.file` could not be read or is invalid.
    #[error("--web.config.file: {0}")]
    WebConfig(#[source] WebConfigError),
    /// `--names.file` could not be read or is invalid.
    #[error("--names.file: {0}")]
    NamesFile(#[source] NamesFileError),
    /// The namespace collector could not be set up.
    #[error(transparent)]
    Collector(#[from] CollectorError),
    /// A `--web.listen-address` could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// `--ebpf on` and the probes cannot be attached.
    #[error("--ebpf on: {0}")]
    Ebpf(#[source] ebpf::Failure),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// `top` could not read the daemon or draw its view.
    #[error("{0}")]
    Top(String),
}

impl Error {
    /// The process exit status for this error: [`EXIT_USAGE`] for bad input, else
    /// [`EXIT_RUNTIME`].
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Flags(_) | Error::WebConfig(_) | Error::NamesFile(_) => EXIT_USAGE,
            Error::Collector(_)
            | Error::Bind(_)
            | Error::Ebpf(_)
            | Error::Runtime(_)
            | Error::Signals(_)
            | Error::Top(_) => EXIT_RUNTIME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_two_runtime_failures_one() {
        assert_eq!(Error::Flags("--x: bad".into()).exit_code(), 2);
        let io = || std::io::Error::other("no");
        assert_eq!(Error::Runtime(io()).exit_code(), 1);
        assert_eq!(Error::Signals(io()).exit_code(), 1);
    }
}
