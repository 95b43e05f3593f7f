//! The platform settings model (`platform.yml`) and the template renderer.
//!
//! Everything here is pure: text in, text out. Reading template trees from disk, caching and serving belong to
//! the leader. Rendering rules (the contract with existing Pryv templates):
//! - every occurrence of a variable name anywhere in the text is replaced, the longest name winning where
//!   several match at one position;
//! - strings are inserted as-is, every other value as compact JSON;
//! - inserted text is substituted again, so values may name other variables; cycles are errors.

mod error;
mod platform_file;
mod renderer;
mod shape;
mod validate;

pub use error::Error;
pub use platform_file::{Group, PlatformFile, Setting, Zone, is_zone_name};
pub use renderer::{FileContent, Renderer, Vars, value_text};
pub use shape::check_yaml_shape;
pub use validate::validate_rendered;

/// Placeholder our templates use for values an operator must set.
pub const REPLACE_ME: &str = "REPLACE_ME";
/// Value of an internal variable that asks the leader to generate a secret.
pub const SECRET_PLACEHOLDER: &str = "SECRET";
