//! `platform.yml` and the template platform file: reading them, building the renderer of a platform or of one
//! variant (role, zone, own variables), and rendering every role of every variant to collect every problem.
//! One place for what `store`, `settings` and `check` need.
// Blocking: reads platform.yml; called on blocking threads (store renders, settings work) and by CLI commands.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use pryv_render::{PlatformFile, Renderer, Vars};

use crate::config::{FollowerEntry, Internals};
use crate::error::Error;
use crate::tree;
use crate::variant::Variant;

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

/// The renderer of one variant: internals < platform `vars` < its zone's overrides < its own variables.
/// A zone the platform does not have, an override of a setting `vars` does not have (in its zone or its own
/// variables) is an error: a typo would otherwise serve the platform's value where the zone's was meant.
pub fn variant_renderer(
    path: &Path,
    platform: &PlatformFile,
    internals: &Internals,
    variant: &Variant,
) -> Result<Renderer, Error> {
    let problem = |message: String| Error::Platform {
        path: path.to_owned(),
        source: pryv_render::Error::Platform(message),
    };
    if let Some(zone) = variant.zone() {
        let prefix = format!("zones.{zone}");
        if let Some(first) = platform
            .zone_problems()
            .into_iter()
            .find(|p| p.starts_with(&prefix) && p[prefix.len()..].starts_with(['.', ':']))
        {
            return Err(problem(first));
        }
    }
    if let Some(name) = variant.own().keys().find(|n| !platform.has_setting(n)) {
        return Err(problem(format!(
            "variant {variant}: the follower's variable {name} is not a setting of vars; a follower only \
             overrides settings of vars"
        )));
    }
    let vars =
        Vars::layered(platform, &internals.0, variant.zone(), variant.own()).map_err(|source| {
            Error::Platform {
                path: path.to_owned(),
                source,
            }
        })?;
    Renderer::new(&vars).map_err(|source| Error::Platform {
        path: path.to_owned(),
        source,
    })
}

/// Every problem of `platform` for these followers, one sentence each, naming the zone, the follower and
/// the setting: the zones' overrides, each role rendered plain, in every zone, and for every follower with
/// variables of its own (each distinct variant once).
pub fn render_variants(
    path: &Path,
    platform: &PlatformFile,
    internals: &Internals,
    (templates, links): (&Path, &tree::LinkPolicy),
    followers: &[FollowerEntry],
) -> Result<Vec<String>, Error> {
    let problems = zone_problems(platform, followers);
    if !problems.is_empty() {
        // Renders with a missing zone or setting would only repeat these.
        return Ok(problems);
    }
    render_every_variant(path, platform, internals, (templates, links), followers)
}

/// What is wrong with the zones of `platform` and the followers' zones and variables, without rendering:
/// overrides of settings `vars` lacks, followers in a zone the platform does not have, variables of no setting.
pub fn zone_problems(platform: &PlatformFile, followers: &[FollowerEntry]) -> Vec<String> {
    let mut problems: Vec<String> = platform.zone_problems();
    for follower in followers {
        if let Some(zone) = &follower.zone
            && !platform.zones.contains_key(zone)
        {
            problems.push(format!(
                "follower {} is in zone {zone:?}, which platform.yml's zones do not have; add zones.{zone} or \
                 fix the follower's zone",
                follower.label()
            ));
        }
        for name in follower.variables.keys() {
            if !platform.has_setting(name) {
                problems.push(format!(
                    "follower {}: its variable {name} is not a setting of vars; a follower only overrides settings \
                     of vars (add it there first, or fix the name)",
                    follower.label()
                ));
            }
        }
    }
    problems
}

fn render_every_variant(
    path: &Path,
    platform: &PlatformFile,
    internals: &Internals,
    (templates, links): (&Path, &tree::LinkPolicy),
    followers: &[FollowerEntry],
) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let roles = tree::roles(templates)?;
    let mut variants: std::collections::BTreeSet<Variant> = std::collections::BTreeSet::new();
    for role in &roles {
        variants.insert(Variant::plain(role));
        for zone in platform.zones.keys() {
            variants.insert(Variant::new(role, Some(zone), Default::default()));
        }
    }
    variants.extend(
        followers
            .iter()
            .filter(|f| roles.contains(&f.role))
            .map(|f| f.variant.clone()),
    );
    let mut renderers: std::collections::HashMap<String, Renderer> =
        std::collections::HashMap::new();
    for variant in &variants {
        let label = variant_label(variant, followers);
        if !renderers.contains_key(variant.vars_key()) {
            match variant_renderer(path, platform, internals, variant) {
                Ok(renderer) => {
                    renderers.insert(variant.vars_key().to_owned(), renderer);
                }
                Err(err) => {
                    problems.push(format!("{label}{err}"));
                    continue;
                }
            }
        }
        let Some(renderer) = renderers.get(variant.vars_key()) else {
            continue;
        };
        match tree::render_role(renderer, templates, links, variant.role()) {
            Ok((_, errors)) => problems.extend(errors.iter().map(|e| format!("{label}{e}"))),
            Err(err) => problems.push(format!("{label}{err}")),
        }
    }
    Ok(problems)
}

/// How a problem names the variant it comes from: nothing for the plain role (as before zones), the zone,
/// or the followers with those variables.
fn variant_label(variant: &Variant, followers: &[FollowerEntry]) -> String {
    if variant.is_plain() {
        return String::new();
    }
    if variant.own().is_empty() {
        return format!("zone {}: ", variant.zone().unwrap_or_default());
    }
    let names: Vec<&str> = followers
        .iter()
        .filter(|f| &f.variant == variant)
        .map(FollowerEntry::label)
        .collect();
    format!("follower {} ({variant}): ", names.join(", "))
}
