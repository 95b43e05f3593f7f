//! Bounds checked before a YAML text reaches the parser: its size, the length of a line, and how deep its
//! values nest. The YAML parser takes minutes on a value nested 100,000 levels deep before it refuses it;
//! this scan is linear and names the line.

use crate::Error;

/// Largest `platform.yml` (or rendered YAML file) accepted.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Longest line (a single value written on one line).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Deepest nesting of flow collections (`[`, `{`) and of block indentation levels.
pub const MAX_DEPTH: usize = 64;

/// Refuses a text too large, with a line too long, or nested too deep, naming the line.
pub fn check_yaml_shape(text: &str) -> Result<(), Error> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge(format!(
            "{} bytes, more than the {} MiB a YAML file may have",
            text.len(),
            MAX_DOCUMENT_BYTES / (1024 * 1024)
        )));
    }
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.len() > MAX_LINE_BYTES {
            return Err(Error::TooLarge(format!(
                "line {number} is {} bytes long, more than {} KiB; split the value",
                line.len(),
                MAX_LINE_BYTES / 1024
            )));
        }
        let content = line.trim_start_matches([' ', '-']);
        if flow == 0 && !content.is_empty() && !content.starts_with('#') {
            let indent = line.len() - content.len();
            while indents.last().is_some_and(|&last| last >= indent) {
                indents.pop();
            }
            indents.push(indent);
            if indents.len() > MAX_DEPTH {
                return Err(too_deep(number));
            }
        }
        flow = flow_depth_after(line, flow).ok_or_else(|| too_deep(number))?;
    }
    Ok(())
}

fn too_deep(line: usize) -> Error {
    Error::NestedTooDeep(format!(
        "line {line}: values nested more than {MAX_DEPTH} levels deep; flatten the value"
    ))
}

/// The flow depth at the end of `line`, starting from `depth` (quotes and comments skipped); `None` past
/// [`MAX_DEPTH`].
fn flow_depth_after(line: &str, mut depth: usize) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' if matches!(previous, ' ' | '[' | '{' | ',' | ':') => quote = Some(c),
                '#' if previous == ' ' => break,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return None;
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        previous = c;
    }
    Some(depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_long_and_large_texts_are_refused_naming_the_line() {
        assert!(check_yaml_shape("a:\n  b: [1, {c: [2]}]\n  d: '[[[[ not nesting'\n").is_ok());
        let deep = format!("a: 1\nb: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let err = check_yaml_shape(&deep).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("nested"), "{err}");
        let block: String = (0..100)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(
            check_yaml_shape(&block)
                .unwrap_err()
                .to_string()
                .contains("nested")
        );
        let long = format!("a: {}\n", "x".repeat(MAX_LINE_BYTES + 1));
        assert!(
            check_yaml_shape(&long)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        let large = "a: b\n".repeat(MAX_DOCUMENT_BYTES / 4);
        assert!(matches!(check_yaml_shape(&large), Err(Error::TooLarge(_))));
    }
}
