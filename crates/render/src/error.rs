//! The crate's one error type. Messages are lowercase, name what is wrong and, where possible, what to fix.

/// Everything that can go wrong while parsing settings or rendering a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `platform.yml` is not YAML of the expected shape.
    #[error("invalid platform settings: {0}")]
    Platform(String),
    /// Variables whose values name each other in a loop; the list starts and ends with the same name.
    #[error("variables reference each other in a cycle: {}; change one of these values", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// Values nest deeper than the renderer follows.
    #[error("variables nest more than {max} levels deep: {}", .chain.join(" -> "))]
    TooDeep { max: usize, chain: Vec<String> },
    /// A rendered `.json` file does not parse.
    #[error("invalid JSON after substitution: {0}")]
    InvalidJson(String),
    /// A rendered `.yml`/`.yaml` file does not parse.
    #[error("invalid YAML after substitution: {0}")]
    InvalidYaml(String),
    /// A YAML text larger, with a longer line, than accepted.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A YAML text whose values nest deeper than accepted (the parser would take minutes).
    #[error("{0}")]
    NestedTooDeep(String),
    /// The variable names could not be compiled into a matcher (pathologically many or long names).
    #[error("cannot build the variable matcher: {0}")]
    Matcher(String),
}
