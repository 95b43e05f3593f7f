//! Reading a role's template tree from disk and rendering it into wire entries. The renderer itself is pure
//! (`pryv-render`); this module owns the file walking, the stable order and the base64 of binary files.
// Blocking: walks and reads a role's templates; called from TreeStore's render on a blocking thread, from check and from the settings' validation (blocking threads).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use base64::Engine;
use pryv_protocol::{BASE64, ConfFile};
use pryv_render::{FileContent, Renderer};

use crate::error::Error;

/// Folders nested deeper than this are not followed (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// Where a symlink in the templates may lead: inside the templates folder, or inside a folder of
/// `templates.allowLinksTo` (certificates linked from `/etc/letsencrypt/...`). Any other link would serve a
/// file of the leader's machine (its `config-leader.json`, say) to every follower of the role.
#[derive(Debug, Clone, Default)]
pub struct LinkPolicy {
    allowed: Vec<PathBuf>,
}

impl LinkPolicy {
    /// `templates` and the extra folders, canonical (a folder that does not exist allows nothing).
    pub fn new(templates: &Path, allow_links_to: &[PathBuf]) -> Self {
        let allowed = std::iter::once(templates)
            .chain(allow_links_to.iter().map(PathBuf::as_path))
            .filter_map(|folder| folder.canonicalize().ok())
            .collect();
        Self { allowed }
    }

    fn check(&self, link: &Path) -> Result<(), Error> {
        let target = link.canonicalize().map_err(|source| Error::Io {
            action: "follow the link",
            path: link.to_owned(),
            source,
        })?;
        if self.allowed.iter().any(|root| target.starts_with(root)) {
            Ok(())
        } else {
            Err(Error::Link {
                link: link.to_owned(),
                target,
            })
        }
    }
}

/// The roles present in the templates folder: its sub-folders, sorted.
pub fn roles(templates: &Path) -> Result<Vec<String>, Error> {
    let io = |source| Error::Io {
        action: "list",
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

/// Every file under `dir` as (`/relative/path`, absolute path), depth first, names in byte order. A symlink
/// (to a file or a folder) is followed only where `links` allows.
pub fn list_files(dir: &Path, links: &LinkPolicy) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut files = Vec::new();
    links.check(dir)?;
    walk(dir, "", 0, links, &mut files)?;
    Ok(files)
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    links: &LinkPolicy,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), Error> {
    let io = |source| Error::Io {
        action: "list",
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
                action: "serve",
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "file name is not UTF-8; rename it",
                ),
            });
        };
        let relative = format!("{prefix}/{name}");
        // Follows symlinks where they stay in allowed folders: operators link certificates into the tree.
        if entry.file_type().is_ok_and(|kind| kind.is_symlink()) {
            links.check(&path)?;
        }
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, &relative, depth + 1, links, out)?;
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
    links: &LinkPolicy,
    role: &str,
) -> Result<(Vec<ConfFile>, Vec<Error>), Error> {
    let dir = role_dir(templates, role)?;
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut listed = list_files(&dir, links)?;
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
                errors.push(Error::Io {
                    action: "read",
                    path,
                    source,
                });
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
    fn symlinks_are_followed_only_into_allowed_folders() {
        let dir = tempfile::tempdir().unwrap();
        let templates = dir.path().join("data");
        let certs = dir.path().join("letsencrypt");
        std::fs::create_dir_all(templates.join("core/nginx/conf")).unwrap();
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::write(templates.join("core/pryv.yml"), "x").unwrap();
        std::fs::write(certs.join("cert.pem"), "cert").unwrap();
        std::fs::write(
            dir.path().join("config-leader.json"),
            "{\"adminKey\": \"k\"}",
        )
        .unwrap();
        let conf = templates.join("core/nginx/conf");
        std::os::unix::fs::symlink(templates.join("core/pryv.yml"), conf.join("inside.yml"))
            .unwrap();
        std::os::unix::fs::symlink(certs.join("cert.pem"), conf.join("cert.pem")).unwrap();
        let role = templates.join("core");
        let allowed = LinkPolicy::new(&templates, std::slice::from_ref(&certs));
        assert_eq!(list_files(&role, &allowed).unwrap().len(), 3);
        let err = list_files(&role, &LinkPolicy::new(&templates, &[])).unwrap_err();
        assert!(err.to_string().contains("cert.pem") && err.to_string().contains("allowLinksTo"));
        std::os::unix::fs::symlink(
            dir.path().join("config-leader.json"),
            conf.join("leak.json"),
        )
        .unwrap();
        let err = list_files(&role, &allowed).unwrap_err();
        assert!(
            matches!(&err, Error::Link { link, .. } if link.ends_with("leak.json")),
            "{err}"
        );
        // A linked folder leading outside is refused the same way.
        std::fs::remove_file(conf.join("leak.json")).unwrap();
        std::os::unix::fs::symlink(dir.path(), conf.join("everything")).unwrap();
        assert!(matches!(
            list_files(&role, &allowed),
            Err(Error::Link { .. })
        ));
    }

    #[test]
    fn files_are_listed_depth_first_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["b.yml", "a/z.json", "a/b/c.txt", "pryv.yml", "A.txt"] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        let listed: Vec<_> = list_files(dir.path(), &LinkPolicy::new(dir.path(), &[]))
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
        let links = LinkPolicy::new(dir.path(), &[]);
        let (files, errors) = render_role(&renderer, dir.path(), &links, "core").unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "/cert.der");
        assert_eq!(files[0].content, "/wCA");
        assert_eq!(files[0].encoding.as_deref(), Some("base64"));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("/bad.json"), "{}", errors[0]);
        assert!(matches!(
            render_role(&renderer, dir.path(), &links, "nope"),
            Err(Error::RoleNotFound(_))
        ));
        assert!(matches!(
            render_role(&renderer, dir.path(), &links, ".."),
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
