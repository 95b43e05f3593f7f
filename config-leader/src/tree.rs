//! Reading a role's template tree from disk and rendering it into wire entries. The renderer itself is pure
//! (`pryv-render`); this module owns the file walking, the stable order and the base64 of binary files.

use std::path::{Path, PathBuf};

use base64::Engine;
use pryv_protocol::{BASE64, ConfFile};
use pryv_render::{FileContent, Renderer};

use crate::error::Error;

/// Folders nested deeper than this are not followed (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// The roles present in the templates folder: its sub-folders, sorted.
pub fn roles(templates: &Path) -> Result<Vec<String>, Error> {
    let io = |source| Error::Io {
        path: templates.to_owned(),
        source,
    };
    let mut roles = Vec::new();
    for entry in std::fs::read_dir(templates).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.path().is_dir()
            && let Ok(name) = entry.file_name().into_string()
            && !name.starts_with('.')
        {
            roles.push(name);
        }
    }
    roles.sort();
    Ok(roles)
}

/// The folder of `role`, or `RoleNotFound`.
pub fn role_dir(templates: &Path, role: &str) -> Result<PathBuf, Error> {
    let dir = templates.join(role);
    if role.is_empty() || role.contains('/') || role == ".." || !dir.is_dir() {
        return Err(Error::RoleNotFound(role.to_owned()));
    }
    Ok(dir)
}

/// The `.json` files of `listed` that a file of the same base name in the same folder supersedes
/// (`x.json` beside `x.yml`): how services moved from JSON to YAML configuration. Only that one is served.
pub fn superseded(listed: &[(String, PathBuf)]) -> std::collections::BTreeSet<String> {
    use std::collections::BTreeSet;
    let split = |relative: &str| -> Option<(String, String)> {
        let (folder, name) = relative.rsplit_once('/')?;
        let (stem, extension) = name.rsplit_once('.')?;
        Some((format!("{folder}/{stem}"), extension.to_ascii_lowercase()))
    };
    let others: BTreeSet<String> = listed
        .iter()
        .filter_map(|(relative, _)| split(relative))
        .filter(|(_, extension)| extension != "json")
        .map(|(base, _)| base)
        .collect();
    listed
        .iter()
        .filter(|(relative, _)| {
            split(relative).is_some_and(|(base, ext)| ext == "json" && others.contains(&base))
        })
        .map(|(relative, _)| relative.clone())
        .collect()
}

/// Every file under `dir` as (`/relative/path`, absolute path), depth first, names in byte order.
pub fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut files = Vec::new();
    walk(dir, "", 0, &mut files)?;
    Ok(files)
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let Ok(name) = entry.file_name().into_string() else {
            return Err(Error::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "file name is not UTF-8; rename it",
                ),
            });
        };
        let relative = format!("{prefix}/{name}");
        // Follows symlinks: operators link certificates into the tree.
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, &relative, depth + 1, out)?;
            }
        } else if meta.is_file() {
            out.push((relative, path));
        }
    }
    Ok(())
}

/// Renders every file of `role`; returns the entries and every error met (one per bad file).
pub fn render_role(
    renderer: &Renderer,
    templates: &Path,
    role: &str,
) -> Result<(Vec<ConfFile>, Vec<Error>), Error> {
    let dir = role_dir(templates, role)?;
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut listed = list_files(&dir)?;
    let superseded = superseded(&listed);
    listed.retain(|(relative, _)| !superseded.contains(relative));
    if listed.is_empty() {
        // Served, it would make every follower of the role delete its whole tree.
        errors.push(Error::EmptyRole(role.to_owned()));
    }
    for (relative, path) in listed {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(source) => {
                errors.push(Error::Io { path, source });
                continue;
            }
        };
        match renderer.render_file(&relative, bytes) {
            Ok(FileContent::Text(content)) => files.push(ConfFile {
                path: relative,
                content,
                encoding: None,
            }),
            Ok(FileContent::Binary(bytes)) => files.push(ConfFile {
                path: relative,
                content: base64::engine::general_purpose::STANDARD.encode(bytes),
                encoding: Some(BASE64.to_owned()),
            }),
            Err(source) => errors.push(Error::Render {
                role: role.to_owned(),
                file: relative,
                source,
            }),
        }
    }
    Ok((files, errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use pryv_render::Vars;

    #[test]
    fn files_are_listed_depth_first_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["b.yml", "a/z.json", "a/b/c.txt", "pryv.yml", "A.txt"] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        let listed: Vec<_> = list_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            listed,
            ["/A.txt", "/a/b/c.txt", "/a/z.json", "/b.yml", "/pryv.yml"]
        );
    }

    #[test]
    fn binary_files_are_base64_and_errors_are_collected_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let role = dir.path().join("core");
        std::fs::create_dir_all(&role).unwrap();
        std::fs::write(role.join("cert.der"), [0xffu8, 0x00, 0x80]).unwrap();
        std::fs::write(role.join("bad.json"), "{").unwrap();
        std::fs::write(role.join("ok.yml"), "a: 1").unwrap();
        let renderer = Renderer::new(&Vars::from_map(IndexMap::new())).unwrap();
        let (files, errors) = render_role(&renderer, dir.path(), "core").unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "/cert.der");
        assert_eq!(files[0].content, "/wCA");
        assert_eq!(files[0].encoding.as_deref(), Some("base64"));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("/bad.json"), "{}", errors[0]);
        assert!(matches!(
            render_role(&renderer, dir.path(), "nope"),
            Err(Error::RoleNotFound(_))
        ));
        assert!(matches!(
            render_role(&renderer, dir.path(), ".."),
            Err(Error::RoleNotFound(_))
        ));
    }

    #[test]
    fn a_json_file_is_superseded_by_its_newer_format_in_the_same_folder_only() {
        let listed: Vec<(String, PathBuf)> = [
            "/core/conf/core.json",
            "/core/conf/core.yml",
            "/hfs/conf/core.json",
            "/mail/conf/mail.json",
            "/x/conf/a.b.json",
            "/x/conf/a.b.yaml",
        ]
        .iter()
        .map(|p| ((*p).to_owned(), PathBuf::from(p)))
        .collect();
        let gone: Vec<String> = superseded(&listed).into_iter().collect();
        assert_eq!(gone, ["/core/conf/core.json", "/x/conf/a.b.json"]);
    }
}
