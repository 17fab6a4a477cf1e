use std::fmt;

use crate::bindings::bizon::destination::types;

/// An error from `open`, `check_connection` or `finalize`; the host reports
/// its message and stops the pipeline.
///
/// Any `std::error::Error` converts into it, so `?` works on I/O, JSON and
/// Arrow errors. It does not implement `std::error::Error` itself: that
/// blanket conversion would otherwise conflict with `From<T> for T`.
pub struct Error {
    message: String,
}

impl Error {
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Self::msg(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

/// Why a write did not succeed; the variant tells the host what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// A passing failure: the host retries the whole batch with backoff.
    Retryable(String),
    /// The batch cannot be written: the host stops the pipeline.
    Fatal(String),
    /// These rows (index within the batch, reason) were refused; the rest of
    /// the batch was written.
    Rejected(Vec<(u64, String)>),
}

impl WriteError {
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self::Retryable(message.to_string())
    }

    pub fn fatal(message: impl fmt::Display) -> Self {
        Self::Fatal(message.to_string())
    }

    pub fn rejected<R: Into<String>>(rows: impl IntoIterator<Item = (u64, R)>) -> Self {
        Self::Rejected(rows.into_iter().map(|(row, reason)| (row, reason.into())).collect())
    }
}

/// A failure the plugin did not classify is not worth retrying blindly: a
/// plugin that knows better returns [`WriteError::retryable`] itself.
impl From<Error> for WriteError {
    fn from(error: Error) -> Self {
        Self::Fatal(error.message)
    }
}

impl<E: std::error::Error> From<E> for WriteError {
    fn from(error: E) -> Self {
        Self::fatal(error)
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable(message) => write!(f, "retryable: {message}"),
            Self::Fatal(message) => write!(f, "fatal: {message}"),
            Self::Rejected(rows) => write!(f, "{} rows rejected", rows.len()),
        }
    }
}

impl From<WriteError> for types::WriteError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Retryable(message) => Self::Retryable(message),
            WriteError::Fatal(message) => Self::Fatal(message),
            WriteError::Rejected(rows) => Self::Rejected(
                rows.into_iter()
                    .map(|(row, reason)| types::RejectedRow { row, reason })
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_turns_foreign_errors_into_fatal_write_errors() {
        fn parse() -> Result<u64, WriteError> {
            Ok("x".parse::<u64>()?)
        }
        assert!(matches!(parse(), Err(WriteError::Fatal(m)) if m.contains("invalid digit")));
    }

    #[test]
    fn rejected_rows_reach_the_wire_type_in_order() {
        let wire: types::WriteError = WriteError::rejected([(1, "bad"), (3, "worse")]).into();
        let types::WriteError::Rejected(rows) = wire else {
            panic!("expected rejected rows")
        };
        let rows: Vec<_> = rows.into_iter().map(|r| (r.row, r.reason)).collect();
        assert_eq!(rows, [(1, "bad".to_string()), (3, "worse".to_string())]);
    }
}
