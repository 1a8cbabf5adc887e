//! The one error type of the core and its `Result` alias.
//!
//! Every message names the argument, what was expected and what was received, so that the
//! bindings can pass it through unchanged. All of them are about values (Rust's types already
//! rule out wrong types), so the bindings raise every one as a `ValueError`.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

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
    /// A label map element is not one of the classes `0..classes`.
    LabelOutOfRange {
        /// The offending byte.
        value: u8,
        /// The number of classes C.
        classes: usize,
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
        /// The valid names, quoted and comma-separated (built by `mining`, which owns them).
        expected: String,
        /// The name that was received.
        got: String,
    },
    /// The sizes of the inputs call for more memory than may or can be allocated.
    TooLarge {
        /// Name of the argument whose sizes call for it.
        argument: &'static str,
        /// What needs how much memory, in words.
        need: String,
        /// Why that is refused, and what to do instead.
        reason: String,
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
            Error::LabelOutOfRange {
                value,
                classes,
                image,
                proposal,
                pixel,
            } => write!(
                f,
                "masks must contain only labels 0 to {} (num_classes = {classes}), got {value} at image {image}, proposal {proposal}, flat pixel {pixel}",
                classes.saturating_sub(1)
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
            Error::UnknownStrategy { expected, got } => {
                write!(f, "strategy must be one of {expected}, got '{got}'")
            }
            Error::TooLarge {
                argument,
                need,
                reason,
            } => write!(f, "{argument}: {need}, {reason}"),
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
