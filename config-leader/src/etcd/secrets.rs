//! The platform's internals in etcd: created once for every replica (create-if-absent), so every replica
//! renders the same bytes (equal revisions and ETags) and verifies the tokens any other one signed.
//!
//! The token-signing secret (`configLeaderTokenSecret`) is shared even when the file does not name it.
//! A `"SECRET"` internal (or `adminKey`) takes the stored value, created by whichever replica came first; a
//! literal internal is stored the same way and must equal what is stored, or the replica refuses to start:
//! two replicas rendering different values would serve different trees under one name.

use pryv_render::SECRET_PLACEHOLDER;
use serde_json::Value;

use super::client::Etcd;
use crate::config::Config;
use crate::error::Error;
use crate::secret::{self, Secret};

/// Replaces every `"SECRET"` of `config` with the platform's value and checks every literal internal.
pub async fn resolve(etcd: &Etcd, config: &mut Config) -> Result<(), Error> {
    let mut problems = Vec::new();
    // Tokens signed by one replica are checked by the others: the signing secret is always shared.
    config
        .internals
        .0
        .entry(crate::admin::identity::TOKEN_SECRET_VAR.to_owned())
        .or_insert_with(|| Value::String(SECRET_PLACEHOLDER.to_owned()));
    for (name, value) in config.internals.0.iter_mut() {
        let placeholder = value.as_str() == Some(SECRET_PLACEHOLDER);
        let proposed = if placeholder {
            Value::String(secret::generate())
        } else {
            value.clone()
        };
        let key = format!("secrets/internals/{name}");
        let stored = etcd
            .create_if_absent(&key, &serde_json::to_vec(&proposed)?)
            .await?;
        let stored: Value = serde_json::from_slice(&stored)
            .map_err(|err| Error::Etcd(format!("{}: not JSON: {err}", etcd.key(&key))))?;
        if placeholder {
            *value = stored;
        } else if stored != *value {
            problems.push(format!(
                "internals.{name}: differs from the value the replicas share in etcd ({}); set it to \"SECRET\" to take the shared one",
                etcd.key(&key)
            ));
        }
    }
    if config
        .admin_key
        .as_ref()
        .is_some_and(|key| key.expose() == SECRET_PLACEHOLDER)
    {
        let stored = etcd
            .create_if_absent("secrets/adminKey", secret::generate().as_bytes())
            .await?;
        let text = String::from_utf8(stored)
            .map_err(|_| Error::Etcd("the shared adminKey is not UTF-8".into()))?;
        config.admin_key = Some(Secret::new(text));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Config {
            path: config.path.clone(),
            problems,
        })
    }
}
