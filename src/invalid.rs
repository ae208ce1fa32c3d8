//! Bad input, named: the field it was found in and what is wrong with it, limit included.

use std::fmt;

/// Bad input: the field it was found in and what is wrong with it, limit included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending field, as the caller named it (`value`, `scopes[2]`, `events[7].member`).
    pub field: String,
    /// What is wrong, naming the limit.
    pub message: String,
}

impl Invalid {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A script's reason for refusing an event as it writes it, `<field>: <detail>` (the field
    /// `value` when it names none).
    pub fn from_reason(why: &str) -> Self {
        let (field, message) = why.split_once(": ").unwrap_or(("value", why));
        Self::new(field, message)
    }

    /// The same message about another field (for example `at` for a period computed from it).
    #[must_use]
    pub fn renamed(mut self, field: &str) -> Self {
        self.field = field.to_owned();
        self
    }

    /// The same error, found inside `outer` (for example `events[3]`).
    #[must_use]
    pub fn within(mut self, outer: &str) -> Self {
        self.field = format!("{outer}.{}", self.field);
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Invalid {}
