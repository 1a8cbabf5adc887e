//! The one error type of the core and its `Result` alias.
//!
//! Every message names the argument, what was expected and what was received, so that the
//! bindings can pass it through unchanged.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Whether an error is about a value (Python `ValueError`) or a type (Python `TypeError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value is out of range, has the wrong shape or is otherwise invalid.
    Value,
    /// A value has the wrong type.
    Type,
}

/// Everything that can go wrong in the core.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// An argument does not have the expected shape or length.
    Shape {
        /// Name of the argument.
        argument: &'static str,
        /// What was expected, in words.
        expected: String,
        /// What was received.
        got: String,
    },
    /// A mask element is neither 0 nor 1.
    NonBinaryMask {
        /// The offending byte.
        value: u8,
        /// Image index (N axis).
        image: usize,
        /// Proposal index (K axis).
        proposal: usize,
        /// Flat pixel index (P axis).
        pixel: usize,
    },
    /// A score is NaN or infinite.
    NonFiniteScore {
        /// The offending score.
        value: f64,
        /// Image index (N axis).
        image: usize,
        /// Proposal index (K axis).
        proposal: usize,
    },
    /// The mining strategy name is not one of the valid choices.
    UnknownStrategy {
        /// The name that was received.
        got: String,
    },
    /// A scalar parameter is out of its valid range.
    InvalidParameter {
        /// Name of the argument.
        argument: &'static str,
        /// What was expected, in words.
        expected: String,
        /// What was received.
        got: String,
    },
}

impl Error {
    /// Whether this error maps to a value error or a type error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        // Everything the core can see is already typed by Rust; all of its errors are about values.
        ErrorKind::Value
    }

    /// Name of the argument the error is about.
    #[must_use]
    pub fn argument(&self) -> &'static str {
        match self {
            Error::Shape { argument, .. } | Error::InvalidParameter { argument, .. } => argument,
            Error::NonBinaryMask { .. } => "masks",
            Error::NonFiniteScore { .. } => "scores",
            Error::UnknownStrategy { .. } => "strategy",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape {
                argument,
                expected,
                got,
            } => write!(f, "{argument} must have shape {expected}, got {got}"),
            Error::NonBinaryMask {
                value,
                image,
                proposal,
                pixel,
            } => write!(
                f,
                "masks must contain only 0 and 1, got {value} at image {image}, proposal {proposal}, flat pixel {pixel}"
            ),
            Error::NonFiniteScore {
                value,
                image,
                proposal,
            } => write!(
                f,
                "scores must be finite, got {} at image {image}, proposal {proposal}",
                python_float(*value)
            ),
            Error::UnknownStrategy { got } => write!(
                f,
                "strategy must be one of {}, got '{got}'",
                crate::mining::Strategy::NAMES
                    .iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Error::InvalidParameter {
                argument,
                expected,
                got,
            } => write!(f, "{argument} must be {expected}, got {got}"),
        }
    }
}

impl std::error::Error for Error {}

/// Formats a non-finite float the way Python's `repr` does (`nan`, `inf`, `-inf`).
fn python_float(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{value:?}")
    }
}
