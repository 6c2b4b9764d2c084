//! The one error type of the native core. `py::error` maps each variant onto the
//! exception hierarchy exposed by `routeguard/errors.py`.

use std::fmt;

/// Every failure a kernel can report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// Input had the wrong shape or value (dimension mismatch, empty vector, bad id).
    InvalidInput(String),
    /// A lookup found nothing under the given key.
    NotFound(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::InvalidInput(msg) => write!(f, "invalid input: {msg}"),
            CoreError::NotFound(msg) => write!(f, "not found: {msg}"),
        }
    }
}

impl std::error::Error for CoreError {}

/// Shorthand used by every kernel.
pub type CoreResult<T> = Result<T, CoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_kind() {
        assert_eq!(
            CoreError::InvalidInput("dim 3 != 4".into()).to_string(),
            "invalid input: dim 3 != 4"
        );
        assert_eq!(
            CoreError::NotFound("id 7".into()).to_string(),
            "not found: id 7"
        );
    }
}
