//! Secrets: a newtype that never prints its value, and the generator used for `"SECRET"` placeholders.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;

/// Length of generated secrets (alphanumeric: ~190 bits).
pub const GENERATED_LEN: usize = 32;

/// A key or password. `Debug` and `Display` print `***` so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for comparison or to send to its owner. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A fresh random alphanumeric secret from the operating system's CSPRNG-seeded generator.
pub fn generate() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(GENERATED_LEN)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }

    #[test]
    fn generated_secrets_are_alphanumeric_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
