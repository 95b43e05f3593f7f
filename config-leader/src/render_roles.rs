//! `platform.yml` and the template platform file: reading them, building the renderer of a platform, and
//! rendering every role to collect every problem. One place for what `store`, `settings` and `check` need.
// Blocking: reads platform.yml; called on blocking threads (store renders, settings work) and by CLI commands.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use pryv_render::{PlatformFile, Renderer, Vars};

use crate::config::Internals;
use crate::error::Error;
use crate::tree;

/// Reads and parses a platform file (`platform.yml` or a template platform file).
pub fn load(path: &Path) -> Result<PlatformFile, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the text of the platform file at `path` (named in the error).
pub fn parse(path: &Path, text: &str) -> Result<PlatformFile, Error> {
    PlatformFile::parse(text).map_err(|source| Error::Platform {
        path: path.to_owned(),
        source,
    })
}

/// The renderer of `platform` with the internal variables (`path` names the file in the error).
pub fn renderer(
    path: &Path,
    platform: &PlatformFile,
    internals: &Internals,
) -> Result<Renderer, Error> {
    Renderer::new(&Vars::new(platform, &internals.0)).map_err(|source| Error::Platform {
        path: path.to_owned(),
        source,
    })
}

/// Renders every role of `templates` with `renderer`; one sentence per problem, empty when all render.
pub fn render_all(
    renderer: &Renderer,
    templates: &Path,
    links: &tree::LinkPolicy,
) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    for role in tree::roles(templates)? {
        match tree::render_role(renderer, templates, links, &role) {
            Ok((_, errors)) => problems.extend(errors.iter().map(ToString::to_string)),
            Err(err) => problems.push(err.to_string()),
        }
    }
    Ok(problems)
}
