//! The machine's compose file: the shared model (`pryv-compose`), also used by the leader's preview.

pub use pryv_compose::*;
