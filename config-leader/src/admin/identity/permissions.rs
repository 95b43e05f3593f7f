//! What an admin may do. Stored and exchanged as `{"users": [...], "settings": [...], "platformUsers": [...]}`
//! (the shape the admin web app reads from the token); checked in code as typed [`Permission`] values.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One permission a route needs; the compiler checks every name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    UsersRead,
    UsersCreate,
    UsersDelete,
    UsersResetPassword,
    UsersChangePermissions,
    SettingsRead,
    SettingsUpdate,
    PlatformUsersRead,
    PlatformUsersDelete,
    PlatformUsersModify,
}

impl Permission {
    pub const ALL: [Permission; 10] = [
        Permission::UsersRead,
        Permission::UsersCreate,
        Permission::UsersDelete,
        Permission::UsersResetPassword,
        Permission::UsersChangePermissions,
        Permission::SettingsRead,
        Permission::SettingsUpdate,
        Permission::PlatformUsersRead,
        Permission::PlatformUsersDelete,
        Permission::PlatformUsersModify,
    ];

    /// (group, name) as in the JSON shape.
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            Permission::UsersRead => ("users", "read"),
            Permission::UsersCreate => ("users", "create"),
            Permission::UsersDelete => ("users", "delete"),
            Permission::UsersResetPassword => ("users", "resetPassword"),
            Permission::UsersChangePermissions => ("users", "changePermissions"),
            Permission::SettingsRead => ("settings", "read"),
            Permission::SettingsUpdate => ("settings", "update"),
            Permission::PlatformUsersRead => ("platformUsers", "read"),
            Permission::PlatformUsersDelete => ("platformUsers", "delete"),
            Permission::PlatformUsersModify => ("platformUsers", "modify"),
        }
    }
}

/// What an admin may do: `{"users": [...], "settings": [...], "platformUsers": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default)]
    pub users: BTreeSet<String>,
    #[serde(default)]
    pub settings: BTreeSet<String>,
    /// Pryv.io accounts administered through the register and the cores.
    #[serde(default, rename = "platformUsers")]
    pub platform_users: BTreeSet<String>,
}

impl Permissions {
    fn group(&self, name: &str) -> Option<&BTreeSet<String>> {
        match name {
            "users" => Some(&self.users),
            "settings" => Some(&self.settings),
            "platformUsers" => Some(&self.platform_users),
            _ => None,
        }
    }

    fn from_list(list: impl IntoIterator<Item = Permission>) -> Self {
        let mut permissions = Self::default();
        for permission in list {
            let (group, name) = permission.parts();
            let set = match group {
                "users" => &mut permissions.users,
                "settings" => &mut permissions.settings,
                _ => &mut permissions.platform_users,
            };
            set.insert(name.to_owned());
        }
        permissions
    }

    pub fn all() -> Self {
        Self::from_list(Permission::ALL)
    }

    /// Every settings permission, none on users: what the static admin key grants.
    pub fn settings_only() -> Self {
        Self::from_list([Permission::SettingsRead, Permission::SettingsUpdate])
    }

    pub fn holds(&self, permission: Permission) -> bool {
        let (group, name) = permission.parts();
        self.group(group).is_some_and(|set| set.contains(name))
    }

    /// Rejects unknown permission names, saying which are known.
    pub fn validate(&self) -> Result<(), Error> {
        let known =
            |group: &str, name: &str| Permission::ALL.iter().any(|p| p.parts() == (group, name));
        let unknown: Vec<String> = [
            ("users", &self.users),
            ("settings", &self.settings),
            ("platformUsers", &self.platform_users),
        ]
        .into_iter()
        .flat_map(|(group, set)| {
            set.iter()
                .filter(move |name| !known(group, name))
                .map(move |name| format!("{group}:{name}"))
        })
        .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let listing: Vec<String> = ["users", "settings", "platformUsers"]
            .iter()
            .map(|group| {
                let names: Vec<&str> = Permission::ALL
                    .iter()
                    .map(|p| p.parts())
                    .filter(|(g, _)| g == group)
                    .map(|(_, n)| n)
                    .collect();
                format!("{group}: {}", names.join(", "))
            })
            .collect();
        Err(Error::BadRequest(format!(
            "unknown permission(s) {}; known: {}",
            unknown.join(", "),
            listing.join("; ")
        )))
    }

    /// Whether every permission of `other` is also held here.
    pub fn covers(&self, other: &Permissions) -> bool {
        other.users.is_subset(&self.users)
            && other.settings.is_subset(&self.settings)
            && other.platform_users.is_subset(&self.platform_users)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_validate_and_cover() {
        let all = Permissions::all();
        assert!(all.validate().is_ok());
        let read: Permissions = serde_json::from_str(r#"{"settings": ["read"]}"#).unwrap();
        assert!(all.covers(&read));
        assert!(!read.covers(&all));
        let bad: Permissions = serde_json::from_str(r#"{"users": ["fly"]}"#).unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("users:fly")
        );
    }

    #[test]
    fn every_permission_is_in_all_and_held_by_all() {
        let all = Permissions::all();
        for permission in Permission::ALL {
            assert!(all.holds(permission), "{permission:?}");
        }
        assert!(!Permissions::settings_only().holds(Permission::UsersRead));
        assert!(Permissions::settings_only().holds(Permission::SettingsUpdate));
    }
}
