//! How failures reach the user: a message that names the object, a hint with
//! the next step, and an exit code that scripts can rely on.
//!
//! Domain modules raise their own `thiserror` enums; commands wrap the ones a
//! user must act on in [`UserError`], which carries the exit code and hint.

use std::fmt;
use std::process::ExitCode;

/// The documented exit codes (README, "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    /// Refused by a security check: bad signature, untrusted key, policy.
    Refused = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error with a class (exit code) and an optional next step.
#[derive(Debug)]
pub struct UserError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn refused(message: impl Into<String>) -> Self {
        UserError { exit: Exit::Refused, message: message.into(), hint: None }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        UserError { exit: Exit::Failure, message: message.into(), hint: None }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        UserError { exit: Exit::Usage, message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// Shorthand: `return Err(refused("...").hint("..."))?`-style construction.
pub fn refused(message: impl Into<String>) -> UserError {
    UserError::refused(message)
}

pub fn failed(message: impl Into<String>) -> UserError {
    UserError::failed(message)
}

/// Prints `err` the way every kaws error is printed and returns its exit code.
pub fn report(err: &anyhow::Error) -> Exit {
    let user = err.chain().find_map(|e| e.downcast_ref::<UserError>());
    // Messages quote repository text (file names, user IDs, commit
    // summaries): escaped, so none of it can act on the terminal.
    let esc = |s: String| crate::text::escape_lines(&s).into_owned();
    eprintln!("error: {}", esc(err.to_string()));
    for cause in err.chain().skip(1) {
        // The UserError's own message is already the headline or a cause.
        eprintln!("  because: {}", esc(cause.to_string()));
    }
    match user {
        Some(u) => {
            if let Some(h) = &u.hint {
                eprintln!("hint: {}", esc(h.clone()));
            }
            u.exit
        }
        None => {
            if let Some(aws) = crate::aws::aws_error(err) {
                eprintln!("hint: {}", aws.hint());
            }
            Exit::Failure
        }
    }
}
