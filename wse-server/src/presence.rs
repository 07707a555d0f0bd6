//! Presence and the public profile: who is online, on how many devices, under which alias,
//! and whether they can be reached.
//!
//! Presence is state, not a stream of events: every change of a user's presence takes a new
//! version from one counter that only grows, so that a receiver holding a snapshot applies a
//! change only when its version is newer than what it holds, and a late change never
//! overwrites a newer one. A user who is not available looks offline to everyone else.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The message type presence changes are sent under.
pub const PRESENCE_MESSAGE: &str = "presence";

/// A user's public profile: set when the user comes online (from identify's
/// [`Decision::with_profile`](crate::Decision::with_profile)) and updatable with
/// [`Server::update_profile`](crate::Server::update_profile). It lasts while the user is
/// online.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    alias: Option<String>,
    available: bool,
    public: Arc<Value>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            alias: None,
            available: true,
            public: Arc::new(Value::Null),
        }
    }
}

impl Profile {
    /// A profile with no alias (the user id stands for it), available, with no public data.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name others see (default: the user id).
    pub fn with_alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
    }

    /// Whether the user can be seen and reached (default: true). An unavailable user is not
    /// listed as online and neither sends nor receives private messages.
    pub fn with_availability(mut self, available: bool) -> Self {
        self.available = available;
        self
    }

    /// Data anyone may read (an avatar, a role), fixed while the user is online.
    pub fn with_public(mut self, public: Value) -> Self {
        self.public = Arc::new(public);
        self
    }

    /// The alias, if one was set.
    pub fn alias(&self) -> Option<&str> {
        self.alias.as_deref()
    }

    /// Whether the user is available.
    pub fn is_available(&self) -> bool {
        self.available
    }

    /// The public data (`null` when none).
    pub fn public(&self) -> &Value {
        &self.public
    }

    /// Whether others see a user with this profile and `devices` connected as online.
    pub(crate) fn shows_online(&self, devices: usize) -> bool {
        devices > 0 && self.available
    }

    /// Applies `update`; returns whether anything changed.
    pub(crate) fn apply(&mut self, update: &ProfileUpdate) -> bool {
        let mut changed = false;
        if let Some(alias) = &update.alias {
            changed |= self.alias.as_deref() != Some(alias.as_str());
            self.alias = Some(alias.clone());
        }
        if let Some(available) = update.available {
            changed |= self.available != available;
            self.available = available;
        }
        changed
    }
}

/// A change to a profile: each field given replaces the profile's; the public data stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdate {
    /// A new alias.
    #[serde(default)]
    pub alias: Option<String>,
    /// A new availability.
    #[serde(default)]
    pub available: Option<bool>,
}

/// What everyone may see of one user's presence: the payload of a `presence` message, and an
/// entry of the online list. An unavailable user is shown offline with no device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The user id.
    pub user: Arc<str>,
    /// Whether the user is online (and available).
    pub online: bool,
    /// How many devices the user has connected (0 when shown offline).
    pub devices: usize,
    /// The user's alias (the user id when none was set).
    pub alias: String,
    /// Grows with every change of this user's presence: a change with a lower version than
    /// one already applied is older, and is dropped.
    pub version: u64,
}

impl Presence {
    /// What others see of `user` with `devices` connected (0 when offline) and `profile`.
    pub(crate) fn seen(user: &Arc<str>, devices: usize, profile: &Profile, version: u64) -> Self {
        let visible = profile.shows_online(devices);
        Self {
            user: Arc::clone(user),
            online: visible,
            devices: if visible { devices } else { 0 },
            alias: profile.alias.clone().unwrap_or_else(|| user.to_string()),
            version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_user_is_seen_offline_with_no_device() {
        let user: Arc<str> = Arc::from("ann");
        let profile = Profile::new().with_availability(false);
        let seen = Presence::seen(&user, 2, &profile, 7);
        assert!(!seen.online);
        assert_eq!(seen.devices, 0);
        assert_eq!(seen.alias, "ann");
    }

    #[test]
    fn an_update_changes_only_what_it_names() {
        let mut profile = Profile::new()
            .with_alias("Ann")
            .with_public(serde_json::json!({"role": "x"}));
        assert!(!profile.apply(&ProfileUpdate::default()));
        assert!(profile.apply(&ProfileUpdate {
            alias: None,
            available: Some(false),
        }));
        assert_eq!(profile.alias(), Some("Ann"));
        assert!(!profile.is_available());
        assert_eq!(profile.public(), &serde_json::json!({"role": "x"}));
    }
}
