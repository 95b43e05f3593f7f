//! The settings repository, through the `git` program: every call a short child process (async, with a
//! deadline, killed when dropped), in a clean git environment, never prompting for credentials.
//!
//! Commits are made with plumbing (`hash-object`, `write-tree` on a private index, `commit-tree`,
//! `update-ref` from the expected parent) so each revision is committed with its own content, author and
//! date, even when the file on disk is already newer, and an operator's index or working files are never
//! rewritten (only the index entry of `platform.yml` is moved along).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Local commands (read, commit) end well within this.
const LOCAL: Duration = Duration::from_secs(30);
/// Fetch and push may cross a slow network.
const NETWORK: Duration = Duration::from_secs(120);
/// The remote a followed branch is fetched from and pushed to (an operator's `origin` is left alone).
pub const REMOTE: &str = "config-leader";
const NO_COMMIT: &str = "0000000000000000000000000000000000000000";

/// What the leader keeps out of a repository it creates: everything but the settings.
const GITIGNORE: &str = "# Written by config-leader: only platform.yml is versioned here.\n\
# config-leader.json, the credentials file and the database hold secrets: never commit them.\n\
*\n!*/\n!.gitignore\n";

/// A commit's author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
    /// Unix seconds.
    pub at: i64,
}

/// A commit as the leader reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub author: Identity,
    pub subject: String,
}

/// A `git` call that failed: the command and what git said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitError(pub String);

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The repository folder and the path of `platform.yml` inside it.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
    /// `platform.yml` relative to `dir`, with `/` separators (as git names it).
    file: String,
}

struct Output {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

impl Repo {
    /// `platform` must be inside `dir` (checked by the configuration).
    pub fn new(dir: &Path, platform: &Path) -> Self {
        let (dir, platform) = (
            crate::config::lexical(dir),
            crate::config::lexical(platform),
        );
        let file = platform
            .strip_prefix(&dir)
            .unwrap_or(&platform)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        Self { dir, file }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `git args` in the repository; `Err` when it cannot run or exits non-zero (with what git said).
    async fn git(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        env: &[(&str, String)],
    ) -> Result<Vec<u8>, GitError> {
        let out = self.run(args, input, env, LOCAL).await?;
        if out.ok {
            Ok(out.stdout)
        } else {
            Err(self.failed(args, &out.stderr))
        }
    }

    async fn git_text(&self, args: &[&str]) -> Result<String, GitError> {
        let out = self.git(args, None, &[]).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    fn failed(&self, args: &[&str], stderr: &str) -> GitError {
        GitError(format!(
            "git {} in {}: {}",
            args.first().copied().unwrap_or(""),
            self.dir.display(),
            stderr.trim()
        ))
    }

    /// `git -C <repo> args`: never the caller's repository, never a prompt, messages in one language.
    fn command(&self, args: &[&str], with_input: bool, env: &[(&str, String)]) -> Command {
        let mut command = Command::new("git");
        // The folder may belong to another user than the leader's (a mounted conf/): it is ours to version.
        let safe = format!("safe.directory={}", self.dir.display());
        command
            .arg("-C")
            .arg(&self.dir)
            .args(["-c", safe.as_str()])
            // platform.yml holds the SMTP password and keys: what git writes for us is the leader's user's only.
            .args(["-c", "core.sharedRepository=0600"])
            .args(args)
            .stdin(if with_input {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C");
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    async fn run(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        env: &[(&str, String)],
        deadline: Duration,
    ) -> Result<Output, GitError> {
        let mut command = self.command(args, input.is_some(), env);
        let run = async {
            let mut child = command.spawn().map_err(|err| {
                GitError(format!(
                    "cannot run git: {err}; install git (the git package)"
                ))
            })?;
            if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
                stdin
                    .write_all(bytes)
                    .await
                    .map_err(|err| GitError(format!("cannot write to git: {err}")))?;
            }
            let output = child
                .wait_with_output()
                .await
                .map_err(|err| GitError(format!("git failed: {err}")))?;
            Ok(Output {
                ok: output.status.success(),
                stdout: output.stdout,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        };
        tokio::time::timeout(deadline, run).await.map_err(|_| {
            GitError(format!(
                "git {} in {} did not finish within {} s",
                args.first().copied().unwrap_or(""),
                self.dir.display(),
                deadline.as_secs()
            ))
        })?
    }

    /// Makes the folder a repository when it is not one (with a `.gitignore` keeping everything but the
    /// settings out); an existing repository is kept as it is. True when created.
    pub async fn ensure(&self) -> Result<bool, GitError> {
        if tokio::fs::metadata(self.dir.join(".git")).await.is_ok() {
            return Ok(false);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|err| GitError(format!("cannot create {}: {err}", self.dir.display())))?;
        self.git(&["init", "--quiet", "--initial-branch=main"], None, &[])
            .await?;
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(
            self.dir.join(".git"),
            std::fs::Permissions::from_mode(0o700),
        )
        .await
        .map_err(|err| {
            GitError(format!(
                "cannot restrict {}/.git: {err}",
                self.dir.display()
            ))
        })?;
        let ignore = format!("{GITIGNORE}!/{}\n", self.file);
        tokio::fs::write(self.dir.join(".gitignore"), ignore)
            .await
            .map_err(|err| {
                GitError(format!(
                    "cannot write {}/.gitignore: {err}",
                    self.dir.display()
                ))
            })?;
        Ok(true)
    }

    /// The current commit (`None` in a repository without one).
    pub async fn head(&self) -> Result<Option<String>, GitError> {
        self.resolve("HEAD").await
    }

    /// The commit a reference names, if it exists.
    pub async fn resolve(&self, reference: &str) -> Result<Option<String>, GitError> {
        let target = format!("{reference}^{{commit}}");
        let args = ["rev-parse", "--verify", "--quiet", target.as_str()];
        let out = self.run(&args, None, &[], LOCAL).await?;
        Ok(out
            .ok
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }

    /// `platform.yml` as commit `commit` holds it (`None` when it does not).
    pub async fn settings_at(&self, commit: &str) -> Result<Option<Vec<u8>>, GitError> {
        let object = format!("{commit}:{}", self.file);
        let out = self
            .run(&["cat-file", "blob", object.as_str()], None, &[], LOCAL)
            .await?;
        Ok(out.ok.then_some(out.stdout))
    }

    /// Commits `content` as `platform.yml` on top of `parent` (the current HEAD, checked when HEAD moves), with
    /// `author` and `message`; returns the new commit. The first commit also holds `.gitignore` when the
    /// leader wrote it.
    pub async fn commit(
        &self,
        content: &[u8],
        author: &Identity,
        message: &str,
        parent: Option<&str>,
    ) -> Result<String, GitError> {
        let blob = self.store_blob(content).await?;
        let index = self.dir.join(".git").join("config-leader-index");
        let private = [("GIT_INDEX_FILE", index.to_string_lossy().into_owned())];
        let tree = async {
            match parent {
                Some(parent) => self.git(&["read-tree", parent], None, &private).await?,
                None => self.git(&["read-tree", "--empty"], None, &private).await?,
            };
            self.stage(&blob, &private).await?;
            if parent.is_none()
                && tokio::fs::metadata(self.dir.join(".gitignore"))
                    .await
                    .is_ok()
            {
                self.git(&["add", "--", ".gitignore"], None, &private)
                    .await?;
            }
            self.git(&["write-tree"], None, &private).await
        }
        .await;
        let _ = tokio::fs::remove_file(&index).await;
        let tree = String::from_utf8_lossy(&tree?).trim().to_owned();
        let date = format!("@{} +0000", author.at);
        let env = [
            ("GIT_AUTHOR_NAME", author.name.clone()),
            ("GIT_AUTHOR_EMAIL", author.email.clone()),
            ("GIT_AUTHOR_DATE", date.clone()),
            ("GIT_COMMITTER_NAME", "config-leader".to_owned()),
            ("GIT_COMMITTER_EMAIL", "config-leader@localhost".to_owned()),
            ("GIT_COMMITTER_DATE", date),
        ];
        let mut args = vec!["commit-tree", tree.as_str()];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        let commit = self.git(&args, Some(message.as_bytes()), &env).await?;
        let commit = String::from_utf8_lossy(&commit).trim().to_owned();
        self.move_head(&commit, parent).await?;
        if parent.is_none() {
            // The repository's first commit: the index takes its whole tree (`.gitignore` too).
            let _ = self.git(&["read-tree", commit.as_str()], None, &[]).await;
        }
        Ok(commit)
    }

    async fn store_blob(&self, content: &[u8]) -> Result<String, GitError> {
        let blob = self
            .git(&["hash-object", "-w", "--stdin"], Some(content), &[])
            .await?;
        Ok(String::from_utf8_lossy(&blob).trim().to_owned())
    }

    /// Moves HEAD (its branch) from `from` to `to`, refusing when HEAD is no longer `from`, and the index
    /// entry of `platform.yml` with it (so `git status` stays clean once the file on disk is `to`'s).
    pub async fn move_head(&self, to: &str, from: Option<&str>) -> Result<(), GitError> {
        let old = from.unwrap_or(NO_COMMIT);
        self.git(
            &[
                "update-ref",
                "-m",
                "config-leader: settings revision",
                "HEAD",
                to,
                old,
            ],
            None,
            &[],
        )
        .await?;
        let object = format!("{to}:{}", self.file);
        if let Ok(blob) = self.git_text(&["rev-parse", object.as_str()]).await {
            // Best effort: an index held by an operator's command is put right by the next round (sync_index).
            let _ = self.stage(&blob, &[]).await;
        }
        Ok(())
    }

    /// Puts the index entry of `platform.yml` back at HEAD's when another git command held the index while
    /// the leader moved it (best effort, every round).
    pub async fn sync_index(&self) {
        let (staged, committed) = (format!(":{}", self.file), format!("HEAD:{}", self.file));
        let staged = self
            .git_text(&["rev-parse", "--verify", "--quiet", staged.as_str()])
            .await;
        let committed = self
            .git_text(&["rev-parse", "--verify", "--quiet", committed.as_str()])
            .await;
        if let Ok(blob) = committed
            && staged.as_ref() != Ok(&blob)
        {
            let _ = self.stage(&blob, &[]).await;
        }
    }

    /// Sets the index entry of `platform.yml` to `blob` (in the index `env` names, the repository's by default).
    async fn stage(&self, blob: &str, env: &[(&str, String)]) -> Result<(), GitError> {
        let entry = format!("100644,{blob},{}", self.file);
        self.git(
            &["update-index", "--add", "--cacheinfo", entry.as_str()],
            None,
            env,
        )
        .await
        .map(drop)
    }

    /// The files among `paths` (relative to the repository) that the repository tracks.
    pub async fn tracked(&self, paths: &[String]) -> Result<Vec<String>, GitError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["ls-files", "--"];
        args.extend(paths.iter().map(String::as_str));
        let listed = self.git_text(&args).await?;
        Ok(listed.lines().map(str::to_owned).collect())
    }

    /// Author and subject of `commit`.
    pub async fn info(&self, commit: &str) -> Result<CommitInfo, GitError> {
        let text = self
            .git_text(&[
                "log",
                "-1",
                "--format=%H%x00%an%x00%ae%x00%at%x00%s",
                commit,
            ])
            .await?;
        let mut fields = text.splitn(5, '\0');
        let mut next = || fields.next().unwrap_or_default().to_owned();
        let id = next();
        let (name, email, at, subject) = (next(), next(), next(), next());
        Ok(CommitInfo {
            id,
            author: Identity {
                name,
                email,
                at: at.parse().unwrap_or_default(),
            },
            subject,
        })
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub async fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
        let out = self
            .run(
                &["merge-base", "--is-ancestor", ancestor, descendant],
                None,
                &[],
                LOCAL,
            )
            .await?;
        Ok(out.ok)
    }

    /// Points the leader's remote at `url` (added when missing).
    pub async fn set_remote(&self, url: &str) -> Result<(), GitError> {
        match self.git_text(&["remote", "get-url", REMOTE]).await {
            Ok(current) if current == url => Ok(()),
            Ok(_) => self
                .git(&["remote", "set-url", REMOTE, url], None, &[])
                .await
                .map(drop),
            Err(_) => self
                .git(&["remote", "add", REMOTE, url], None, &[])
                .await
                .map(drop),
        }
    }

    /// Fetches `branch`; its tip, or `None` when the remote has no such branch yet.
    pub async fn fetch(&self, branch: &str) -> Result<Option<String>, GitError> {
        let refspec = format!("+refs/heads/{branch}:refs/remotes/{REMOTE}/{branch}");
        let args = ["fetch", "--quiet", "--no-tags", REMOTE, refspec.as_str()];
        let out = self.run(&args, None, &[], NETWORK).await?;
        if !out.ok {
            if out.stderr.contains("couldn't find remote ref") {
                return Ok(None);
            }
            return Err(self.failed(&args, &out.stderr));
        }
        self.resolve(&format!("refs/remotes/{REMOTE}/{branch}"))
            .await
    }

    /// Pushes HEAD to `branch`, fast-forward only (never forced).
    pub async fn push(&self, branch: &str) -> Result<(), GitError> {
        let target = format!("HEAD:refs/heads/{branch}");
        let args = ["push", "--quiet", REMOTE, target.as_str()];
        let out = self.run(&args, None, &[], NETWORK).await?;
        if out.ok {
            Ok(())
        } else {
            Err(self.failed(&args, &out.stderr))
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn author(name: &str, at: i64) -> Identity {
        Identity {
            name: name.into(),
            email: format!("{name}@example.com"),
            at,
        }
    }

    #[tokio::test]
    async fn commits_each_content_with_its_author_and_date_and_keeps_secrets_out() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        let repo = Repo::new(&conf, &conf.join("platform.yml"));
        assert!(repo.ensure().await.unwrap(), "created");
        assert!(!repo.ensure().await.unwrap(), "kept");
        std::fs::write(
            conf.join("config-leader.json"),
            "{\"adminKey\": \"secret\"}",
        )
        .unwrap();

        let first = repo
            .commit(b"a: 1\n", &author("ada", 1_700_000_000), "first", None)
            .await
            .unwrap();
        let second = repo
            .commit(
                b"a: 2\n",
                &author("bob", 1_700_000_100),
                "second",
                Some(&first),
            )
            .await
            .unwrap();
        assert_eq!(repo.head().await.unwrap().as_deref(), Some(second.as_str()));
        assert_eq!(repo.settings_at(&first).await.unwrap().unwrap(), b"a: 1\n");
        let info = repo.info(&second).await.unwrap();
        assert_eq!(info.author, author("bob", 1_700_000_100));
        assert_eq!(info.subject, "second");
        assert!(repo.is_ancestor(&first, &second).await.unwrap());
        assert!(!repo.is_ancestor(&second, &first).await.unwrap());

        // The settings hold secrets: the repository the leader makes, and what it writes, are its user's only.
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&conf.join(".git")), 0o700);
        let blob = repo
            .git_text(&["rev-parse", &format!("{second}:platform.yml")])
            .await
            .unwrap();
        let object = conf.join(".git/objects").join(&blob[..2]).join(&blob[2..]);
        assert_eq!(mode(&object) & 0o077, 0, "{:o}", mode(&object));

        let files = repo
            .git_text(&["ls-tree", "-r", "--name-only", "HEAD"])
            .await
            .unwrap();
        assert_eq!(files, ".gitignore\nplatform.yml");
        assert!(
            repo.tracked(&["config-leader.json".into()])
                .await
                .unwrap()
                .is_empty()
        );
        let status = repo.git_text(&["status", "--porcelain"]).await.unwrap();
        assert!(!status.contains("config-leader.json"), "ignored: {status}");

        // HEAD moved meanwhile: a commit on a stale parent is refused, never grafted.
        let stale = repo
            .commit(
                b"a: 3\n",
                &author("eve", 1_700_000_200),
                "stale",
                Some(&first),
            )
            .await;
        assert!(stale.is_err());
        assert_eq!(repo.head().await.unwrap().as_deref(), Some(second.as_str()));
    }
}
