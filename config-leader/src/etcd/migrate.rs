//! `config-leader store migrate --to etcd`: copies a platform run by one leader on SQLite into the etcd store
//! its `store.etcd` names, so replicas start where it stopped: every settings revision (numbers, authors,
//! times, messages and contents kept; a hand edit of `platform.yml` not yet recorded becomes the newest),
//! the internals as they are in the file (generated secrets included, so trees keep their revisions), and the
//! admin users (their password hashes and permissions; the emergency account stays each replica's own).
//! Stop the leader first. A prefix that already holds settings is refused: nothing there is overwritten.
// A CLI command: its file and database reads run before and outside the runtime's work.
#![allow(clippy::disallowed_methods)]

use serde_json::Value;

use super::client::Etcd;
use super::history::SharedHistory;
use super::users::SharedUsers;
use crate::admin::db::{Db, RevisionRow, UserRow};
use crate::admin::identity::INITIAL_USER;
use crate::config::Config;
use crate::error::Error;

/// What the database and the files hold, read before any write to etcd.
struct Snapshot {
    revisions: Vec<RevisionRow>,
    users: Vec<UserRow>,
    /// (id, JSON, target trees of those still held).
    rollouts: Vec<(i64, String, Vec<crate::admin::db::RolloutTree>)>,
    hold: bool,
    reports: Vec<(String, String)>,
    /// Oldest first.
    audit: Vec<crate::admin::db::AuditRow>,
}

fn snapshot(config: &Config) -> Result<Snapshot, Error> {
    let db = Db::open(&config.database_path, true)?;
    let conn = db.blocking();
    let mut revisions = Vec::new();
    for listed in conn.revisions()?.into_iter().rev() {
        if let Some(row) = conn.revision(listed.revision)? {
            revisions.push(row);
        }
    }
    let on_disk = std::fs::read_to_string(&config.platform_config).map_err(|source| Error::Io {
        action: "read",
        path: config.platform_config.clone(),
        source,
    })?;
    crate::render_roles::parse(&config.platform_config, &on_disk)?;
    if revisions.last().map(|r| r.content.as_str()) != Some(on_disk.as_str()) {
        revisions.push(RevisionRow {
            revision: revisions.last().map_or(1, |r| r.revision + 1),
            author: "disk".into(),
            at: pryv_daemon::now_unix_i64(),
            message: "edited on disk".into(),
            content: on_disk,
            commit: None,
        });
    }
    let users = conn
        .users()?
        .into_iter()
        .filter(|u| u.username != INITIAL_USER)
        .collect();
    let mut rollouts = Vec::new();
    for (id, body) in conn.rollouts(i64::MAX)? {
        let held = serde_json::from_str::<crate::admin::rollouts::Rollout>(&body)
            .is_ok_and(|r| r.state.holds());
        let trees = if held {
            conn.rollout_trees(&[id])?
        } else {
            Vec::new()
        };
        rollouts.push((id, body, trees));
    }
    let keep = config.etcd.as_ref().map_or(0, |e| e.keep_audit_entries);
    let mut audit = conn.audit_entries(i64::try_from(keep).unwrap_or(i64::MAX))?;
    audit.reverse();
    Ok(Snapshot {
        revisions,
        users,
        rollouts,
        hold: conn.flag(crate::admin::rollouts::HOLD_FLAG)?,
        reports: conn.reports()?,
        audit,
    })
}

/// Copies the platform into etcd; a summary for the operator.
pub fn migrate(config: &Config) -> Result<String, Error> {
    let Some(store) = config.etcd.clone() else {
        return Err(Error::Config {
            path: config.path.clone(),
            problems: vec![
                "store.etcd: missing; add the etcd endpoints to config-leader.json, then migrate"
                    .into(),
            ],
        });
    };
    let snapshot = snapshot(config)?;
    let store_for_client = store.clone();
    super::on_store(&store_for_client, |etcd| async move {
        let history = SharedHistory::new(etcd.clone());
        if let Some(latest) = history.latest().await? {
            return Err(Error::Conflict(format!(
                "the etcd store already holds settings (revision {}) under {}; migrate into an empty prefix (store.etcd.prefix)",
                latest.revision, store.prefix
            )));
        }
        let internals = copy_internals(&etcd, config).await?;
        let users = SharedUsers::new(etcd.clone());
        let mut copied_users = 0;
        for user in &snapshot.users {
            if users.insert(user, pryv_daemon::now_unix_i64()).await? {
                copied_users += 1;
            }
        }
        for row in &snapshot.revisions {
            if !history.import(row).await? {
                return Err(Error::Conflict(format!(
                    "settings revision {} appeared in the store during the migration; is a replica running?",
                    row.revision
                )));
            }
        }
        let rollouts = super::rollouts::SharedRollouts::new(etcd.clone());
        for (id, body, trees) in &snapshot.rollouts {
            rollouts.import(*id, body, trees).await?;
        }
        rollouts.set_hold(snapshot.hold).await?;
        let reports = super::reports::SharedReports::new(etcd.clone());
        for (url, body) in &snapshot.reports {
            reports.put(url, body).await?;
        }
        let audit = super::audit::SharedAudit::new(etcd.clone(), store.keep_audit_entries);
        for row in &snapshot.audit {
            audit.import(row).await?;
        }
        let (first, last) = (
            snapshot.revisions.first().map_or(0, |r| r.revision),
            snapshot.revisions.last().map_or(0, |r| r.revision),
        );
        Ok(format!(
            "copied settings revisions {first} to {last}, {internals} internal(s), {copied_users} admin user(s), \
             {} rollout(s), {} follower report(s) and {} audit entries to etcd under {}\nnext: start the \
             replicas with store.etcd (the first pushes its templates); users log in again (their sessions end)\n",
            snapshot.rollouts.len(),
            snapshot.reports.len(),
            snapshot.audit.len(),
            store.prefix
        ))
    })
}

/// Every internal as the file has it (a literal by now: SQLite mode wrote generated secrets back).
async fn copy_internals(etcd: &Etcd, config: &Config) -> Result<usize, Error> {
    let mut problems = Vec::new();
    for (name, value) in &config.internals.0 {
        if value.as_str() == Some(pryv_render::SECRET_PLACEHOLDER) {
            continue;
        }
        let key = format!("secrets/internals/{name}");
        let stored = etcd
            .create_if_absent(&key, &serde_json::to_vec(value)?)
            .await?;
        if serde_json::from_slice::<Value>(&stored).ok().as_ref() != Some(value) {
            problems.push(format!(
                "internals.{name}: the store already holds another value ({})",
                etcd.key(&key)
            ));
        }
    }
    if problems.is_empty() {
        Ok(config.internals.0.len())
    } else {
        Err(Error::Config {
            path: config.path.clone(),
            problems,
        })
    }
}
