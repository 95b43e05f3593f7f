//! The rendered-tree cache. Rendering happens once per variant (role, zone, own variables: see
//! [`crate::variant`]) per *generation*; the generation is bumped by the file watcher (hand edits of templates
//! or `platform.yml`) and by the leader itself before it answers a request that changed files. `GET /conf`
//! for an unchanged tree is a map lookup and a clone of ready bytes. `platform.yml` is parsed once per
//! generation and each set of variables compiled once, whatever the number of roles sharing it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use pryv_protocol::ConfResponse;
use pryv_render::{PlatformFile, Renderer};
use sha2::{Digest, Sha256};

use crate::config::Internals;
use crate::error::Error;
use crate::tree;
use crate::variant::Variant;

impl ServedTree {
    /// As a rollout keeps it in the database.
    pub fn stored(&self) -> crate::admin::db::RolloutTree {
        crate::admin::db::RolloutTree {
            variant: self.variant.clone(),
            role: self.role.clone(),
            revision: self.revision.clone(),
            files: i64::try_from(self.file_count).unwrap_or(i64::MAX),
            body: self.body.to_vec(),
        }
    }
}

/// A variant's rendered tree, ready to send.
#[derive(Debug)]
pub struct ServedTree {
    pub role: String,
    /// The variant's key (the role for a follower without zone or own variables).
    pub variant: String,
    /// Hex hash of the rendered entries (paths, encodings and contents).
    pub revision: String,
    /// The serialized `{"files": [...], "revision": ...}` body.
    pub body: Bytes,
    pub file_count: usize,
    /// `"<revision>"`, ready for the `ETag` header of every answer.
    pub etag: axum::http::HeaderValue,
    /// The settings revision this tree was rendered from (`X-Pryv-Store-Revision`): a follower never takes
    /// a tree of an older one than it applied. 0 = unknown (a rollout's target restored from the database).
    pub store_revision: i64,
}

type Cached<T> = (u64, Result<Arc<T>, Arc<Error>>);

/// Shared by every request; cheap to clone.
#[derive(Clone)]
pub struct TreeStore {
    inner: Arc<Inner>,
}

struct Inner {
    templates: PathBuf,
    links: tree::LinkPolicy,
    platform_config: PathBuf,
    internals: Internals,
    generation: AtomicU64,
    /// The platform file parsed at a generation, with the settings revision it holds.
    platform: RwLock<Option<(Cached<PlatformFile>, i64)>>,
    /// Held (shared) by every render, taken alone by a swap of the templates folder: a render reads the old
    /// files or the new ones, never a mix.
    sources: RwLock<()>,
    /// The settings revision `platform.yml` holds: written together with the file (under the write lock),
    /// read together with it (under the read lock), so a tree's label is the revision of what it shows.
    settings_revision: RwLock<i64>,
    /// By [`Variant::vars_key`]: one per distinct set of variables.
    renderers: RwLock<HashMap<String, Cached<Renderer>>>,
    /// By variant key.
    trees: RwLock<HashMap<String, Cached<ServedTree>>>,
    /// Serializes re-renders so a burst of requests after a change renders once, not once per request.
    rebuild: tokio::sync::Mutex<()>,
    /// Variants whose last render failed, by variant key.
    problems: RwLock<HashMap<String, RenderProblem>>,
    /// Trees served before the current one, newest last, so followers held back by a rollout get the
    /// revision they were given and not a newer one.
    retained: RwLock<HashMap<String, std::collections::VecDeque<Arc<ServedTree>>>>,
    /// Bumped by every invalidation and by [`TreeStore::wake`]: long-polling requests wait on it.
    changes: tokio::sync::watch::Sender<u64>,
}

/// Earlier trees kept per variant.
const RETAINED_PER_ROLE: usize = 8;

/// A variant whose templates or settings stopped rendering.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderProblem {
    /// Why the last render failed.
    pub error: String,
    /// The revision still served instead (the last good tree), if there is one.
    pub serving: Option<String>,
}

impl TreeStore {
    pub fn new(
        templates: PathBuf,
        links: tree::LinkPolicy,
        platform_config: PathBuf,
        internals: Internals,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                templates,
                links,
                platform_config,
                internals,
                generation: AtomicU64::new(1),
                platform: RwLock::new(None),
                settings_revision: RwLock::new(0),
                sources: RwLock::new(()),
                renderers: RwLock::new(HashMap::new()),
                trees: RwLock::new(HashMap::new()),
                rebuild: tokio::sync::Mutex::new(()),
                problems: RwLock::new(HashMap::new()),
                retained: RwLock::new(HashMap::new()),
                changes: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// Bumped by every change of the templates or the settings: what caches of derived values key on.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Where the templates' symlinks may lead.
    pub fn links(&self) -> tree::LinkPolicy {
        self.inner.links.clone()
    }

    /// The templates folder (one sub-folder per role).
    pub fn templates(&self) -> PathBuf {
        self.inner.templates.clone()
    }

    /// Runs `write` (the leader's write of `platform.yml`) so that no render reads the file in between; when
    /// it succeeds the file holds settings revision `revision`.
    pub fn write_settings<T, E>(
        &self,
        revision: i64,
        write: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut label = self
            .inner
            .settings_revision
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = write()?;
        *label = revision;
        Ok(written)
    }

    /// Runs `replace` (a swap of the templates folder) while no render reads it, then marks every tree
    /// stale.
    pub fn replace_templates<T>(&self, replace: impl FnOnce() -> T) -> T {
        let replaced = {
            let _alone = self
                .inner
                .sources
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            replace()
        };
        self.invalidate();
        replaced
    }

    /// The settings revision `platform.yml` holds now.
    pub fn settings_revision(&self) -> i64 {
        *self
            .inner
            .settings_revision
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The settings revision `platform.yml` holds (at start, or after a hand edit was recorded).
    pub fn set_settings_revision(&self, revision: i64) {
        *self
            .inner
            .settings_revision
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = revision;
    }

    /// Marks every cached tree stale: the next request re-renders. Called by the watcher and after the
    /// leader writes templates or settings itself.
    pub fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.wake();
    }

    /// Wakes the requests waiting for a change (the trees, or which tree a follower may have).
    pub fn wake(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves at the next [`TreeStore::invalidate`] or [`TreeStore::wake`].
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The tree of the variant keyed `variant` at `revision`: the current one or one of the last few served.
    pub fn tree_at(&self, variant: &str, revision: &str) -> Option<Arc<ServedTree>> {
        let current = self
            .inner
            .trees
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(variant)
            .and_then(|(_, tree)| tree.as_ref().ok().cloned())
            .filter(|t| t.revision == revision);
        current.or_else(|| {
            self.inner
                .retained
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(variant)?
                .iter()
                .rev()
                .find(|t| t.revision == revision)
                .cloned()
        })
    }

    /// The rendered tree of `variant`, rendering it only if something changed since the last time.
    pub async fn get(&self, variant: &Variant) -> Result<Arc<ServedTree>, Arc<Error>> {
        if let Some(fresh) = self.inner.fresh(variant.key()) {
            return fresh;
        }
        let _one_at_a_time = self.inner.rebuild.lock().await;
        if let Some(fresh) = self.inner.fresh(variant.key()) {
            return fresh;
        }
        let inner = self.inner.clone();
        let variant = variant.clone();
        tokio::task::spawn_blocking(move || inner.rebuild(&variant))
            .await
            .unwrap_or_else(|join| Err(Arc::new(Error::Task(join))))
    }

    /// Keeps `tree` among the earlier trees of its variant (a rollout's target restored from the
    /// database at start), so [`TreeStore::tree_at`] finds it.
    pub fn adopt(&self, stored: &crate::admin::db::RolloutTree) -> Result<(), Error> {
        let etag = axum::http::HeaderValue::from_str(&format!("\"{}\"", stored.revision))
            .map_err(|_| Error::Internal("revision is not a header value".into()))?;
        self.inner.retain(Arc::new(ServedTree {
            role: stored.role.clone(),
            variant: stored.variant.clone(),
            revision: stored.revision.clone(),
            body: Bytes::from(stored.body.clone()),
            file_count: usize::try_from(stored.files).unwrap_or(0),
            etag,
            store_revision: 0,
        }));
        Ok(())
    }

    /// The revision each variant serves now, by variant key, from the cache only (never renders).
    pub fn cached_revisions(&self) -> HashMap<String, String> {
        self.inner
            .trees
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|(role, (_, tree))| {
                tree.as_ref()
                    .ok()
                    .map(|t| (role.clone(), t.revision.clone()))
            })
            .collect()
    }

    /// Variants whose last render failed, by variant key.
    pub fn problems(&self) -> std::collections::BTreeMap<String, RenderProblem> {
        self.inner
            .problems
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(role, problem)| (role.clone(), problem.clone()))
            .collect()
    }
}

impl Inner {
    fn fresh(&self, key: &str) -> Option<Result<Arc<ServedTree>, Arc<Error>>> {
        let generation = self.generation.load(Ordering::Acquire);
        let trees = self
            .trees
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match trees.get(key) {
            Some((cached, result)) if *cached == generation => Some(result.clone()),
            _ => None,
        }
    }

    /// Renders `variant` again. When that fails and it had a good tree, the good tree stays in service
    /// (never a half-rendered or empty one) and the failure is kept for `/admin/status` and the log.
    fn rebuild(&self, variant: &Variant) -> Result<Arc<ServedTree>, Arc<Error>> {
        let (role, key) = (variant.role(), variant.key());
        // Read the generation before the files: a change during rendering bumps it again, so this result is
        // never taken as fresh for a state it did not see.
        let generation = self.generation.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let reading = self
            .sources
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = self
            .renderer_for(generation, variant)
            .and_then(|(renderer, label)| {
                render_tree(&renderer, &self.templates, &self.links, variant, label)
                    .map_err(Arc::new)
            });
        drop(reading);
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!(crate::metrics::RENDERS, "role" => role.to_owned(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!(crate::metrics::RENDER_DURATION, "role" => role.to_owned())
            .record(started.elapsed().as_secs_f64());
        let mut trees = self
            .trees
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut problems = self
            .problems
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let served = match result {
            Ok(tree) => {
                tracing::info!(variant = key, revision = %tree.revision, files = tree.file_count, "rendered configuration");
                problems.remove(key);
                if let Some((_, Ok(previous))) = trees.get(key)
                    && previous.revision != tree.revision
                {
                    self.retain(previous.clone());
                }
                Ok(tree)
            }
            Err(err) => match trees.get(key) {
                Some((_, Ok(good))) => {
                    tracing::error!(variant = key, error = %err, revision = %good.revision, "cannot render configuration; still serving the last good tree");
                    problems.insert(
                        key.to_owned(),
                        RenderProblem {
                            error: err.to_string(),
                            serving: Some(good.revision.clone()),
                        },
                    );
                    Ok(good.clone())
                }
                _ => {
                    tracing::error!(variant = key, error = %err, "cannot render configuration");
                    problems.insert(
                        key.to_owned(),
                        RenderProblem {
                            error: err.to_string(),
                            serving: None,
                        },
                    );
                    Err(err)
                }
            },
        };
        trees.insert(key.to_owned(), (generation, served.clone()));
        served
    }

    fn retain(&self, tree: Arc<ServedTree>) {
        let mut retained = self
            .retained
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept = retained.entry(tree.variant.clone()).or_default();
        kept.retain(|t| t.revision != tree.revision);
        kept.push_back(tree);
        while kept.len() > RETAINED_PER_ROLE {
            kept.pop_front();
        }
    }

    /// The renderer of `variant`'s variables at `generation` (the platform file parsed once for all).
    fn renderer_for(
        &self,
        generation: u64,
        variant: &Variant,
    ) -> Result<(Arc<Renderer>, i64), Arc<Error>> {
        let (platform, label) = self.platform_at(generation);
        if let Some((cached, result)) = self
            .renderers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(variant.vars_key())
            && *cached == generation
        {
            return result.clone().map(|renderer| (renderer, label));
        }
        let result = platform.and_then(|platform| {
            crate::render_roles::variant_renderer(
                &self.platform_config,
                &platform,
                &self.internals,
                variant,
            )
            .map(Arc::new)
            .map_err(Arc::new)
        });
        let mut renderers = self
            .renderers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Entries of an older generation are dead weight (a zone removed, a follower's variables changed).
        renderers.retain(|_, (cached, _)| *cached == generation);
        renderers.insert(variant.vars_key().to_owned(), (generation, result.clone()));
        result.map(|renderer| (renderer, label))
    }

    /// The platform file at `generation` and the settings revision it holds.
    fn platform_at(&self, generation: u64) -> (Result<Arc<PlatformFile>, Arc<Error>>, i64) {
        if let Some(((cached, result), label)) = &*self
            .platform
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            && *cached == generation
        {
            return (result.clone(), *label);
        }
        let (result, label) = {
            let label = self
                .settings_revision
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let result = crate::render_roles::load(&self.platform_config)
                .map(Arc::new)
                .map_err(Arc::new);
            (result, *label)
        };
        *self
            .platform
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(((generation, result.clone()), label));
        (result, label)
    }
}

fn render_tree(
    renderer: &Renderer,
    templates: &std::path::Path,
    links: &tree::LinkPolicy,
    variant: &Variant,
    store_revision: i64,
) -> Result<Arc<ServedTree>, Error> {
    let (files, mut errors) = tree::render_role(renderer, templates, links, variant.role())?;
    if !errors.is_empty() {
        return Err(errors.swap_remove(0));
    }
    let revision = revision_of(&files);
    let file_count = files.len();
    let body = serde_json::to_vec(&ConfResponse {
        files,
        revision: Some(revision.clone()),
    })?;
    let etag = axum::http::HeaderValue::from_str(&format!("\"{revision}\""))
        .map_err(|_| Error::Internal("revision is not a header value".into()))?;
    Ok(Arc::new(ServedTree {
        role: variant.role().to_owned(),
        variant: variant.key().to_owned(),
        revision,
        body: Bytes::from(body),
        file_count,
        etag,
        store_revision,
    }))
}

/// Hash of the entries; length-prefixed fields so no two different trees share an input.
pub fn revision_of(files: &[pryv_protocol::ConfFile]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        for field in [
            file.path.as_bytes(),
            file.encoding.as_deref().unwrap_or("").as_bytes(),
            file.content.as_bytes(),
        ] {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
    }
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, TreeStore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/core/core/conf")).unwrap();
        std::fs::write(
            dir.path().join("data/core/core/conf/core.yml"),
            "domain: DOMAIN\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("platform.yml"),
            "vars:\n  G:\n    settings:\n      DOMAIN:\n        value: pryv.me\n",
        )
        .unwrap();
        let store = TreeStore::new(
            dir.path().join("data"),
            tree::LinkPolicy::new(&dir.path().join("data"), &[]),
            dir.path().join("platform.yml"),
            Internals::default(),
        );
        (dir, store)
    }

    #[tokio::test]
    async fn unchanged_tree_is_served_from_cache_and_invalidation_rerenders() {
        let (dir, store) = fixture();
        let first = store.get(&Variant::plain("core")).await.unwrap();
        let again = store.get(&Variant::plain("core")).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "second request must not re-render"
        );
        std::fs::write(
            dir.path().join("platform.yml"),
            "vars:\n  G:\n    settings:\n      DOMAIN:\n        value: example.com\n",
        )
        .unwrap();
        store.invalidate();
        let changed = store.get(&Variant::plain("core")).await.unwrap();
        assert_ne!(changed.revision, first.revision);
        let body: ConfResponse = serde_json::from_slice(&changed.body).unwrap();
        assert_eq!(body.files[0].content, "domain: example.com\n");
        assert_eq!(body.revision.as_deref(), Some(changed.revision.as_str()));
    }

    #[tokio::test]
    async fn errors_are_per_role() {
        let (dir, store) = fixture();
        std::fs::create_dir_all(dir.path().join("data/static")).unwrap();
        std::fs::write(dir.path().join("data/static/x.json"), "{DOMAIN}").unwrap();
        let err = store.get(&Variant::plain("static")).await.unwrap_err();
        assert!(err.to_string().contains("/x.json"), "{err}");
        assert!(store.get(&Variant::plain("core")).await.is_ok());
    }

    #[test]
    fn revision_depends_on_every_field() {
        let file = |path: &str, content: &str| pryv_protocol::ConfFile {
            path: path.into(),
            content: content.into(),
            encoding: None,
        };
        let a = revision_of(&[file("/a", "bc")]);
        assert_ne!(a, revision_of(&[file("/ab", "c")]));
        assert_ne!(a, revision_of(&[file("/a", "bd")]));
        assert_eq!(a, revision_of(&[file("/a", "bc")]));
        assert_eq!(a.len(), 32);
    }

    #[tokio::test]
    async fn a_broken_source_keeps_the_last_good_tree_in_service() {
        let (dir, store) = fixture();
        let good = store.get(&Variant::plain("core")).await.unwrap();
        for broken in ["", "vars:\n"] {
            std::fs::write(dir.path().join("platform.yml"), broken).unwrap();
            store.invalidate();
            let served = store.get(&Variant::plain("core")).await.unwrap();
            assert_eq!(served.revision, good.revision, "{broken:?}");
            let problem = &store.problems()["core"];
            assert!(problem.error.contains("no settings"), "{problem:?}");
            assert_eq!(problem.serving.as_deref(), Some(good.revision.as_str()));
        }
        std::fs::write(
            dir.path().join("platform.yml"),
            "vars:\n  G:\n    settings:\n      DOMAIN:\n        value: pryv.me\n",
        )
        .unwrap();
        // An emptied role folder is refused the same way.
        std::fs::remove_file(dir.path().join("data/core/core/conf/core.yml")).unwrap();
        store.invalidate();
        assert_eq!(
            store.get(&Variant::plain("core")).await.unwrap().revision,
            good.revision
        );
        assert!(store.problems()["core"].error.contains("has no file"));
        std::fs::write(
            dir.path().join("data/core/core/conf/core.yml"),
            "d: DOMAIN\n",
        )
        .unwrap();
        store.invalidate();
        assert_ne!(
            store.get(&Variant::plain("core")).await.unwrap().revision,
            good.revision
        );
        assert!(store.problems().is_empty(), "recovered");
    }

    #[tokio::test]
    async fn without_a_good_tree_an_empty_source_is_an_error() {
        let (dir, store) = fixture();
        std::fs::write(dir.path().join("platform.yml"), "").unwrap();
        let err = store.get(&Variant::plain("core")).await.unwrap_err();
        assert!(err.to_string().contains("no settings"), "{err}");
    }
}
