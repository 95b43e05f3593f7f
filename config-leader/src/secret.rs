//! Generation of secrets for `"SECRET"` placeholders. The [`Secret`] newtype itself is shared (`pryv-protocol`).

use rand::Rng;
use rand::distr::Alphanumeric;

pub use pryv_protocol::Secret;

/// Length of generated secrets (alphanumeric: ~190 bits).
pub const GENERATED_LEN: usize = 32;

/// A fresh random alphanumeric secret from the thread-local CSPRNG (seeded by the operating system).
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
    fn generated_secrets_are_alphanumeric_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
