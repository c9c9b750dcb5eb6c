//! Who may approve what: the people (users file) and the approval policy (TOML).
//!
//! The built-in policy is the safe default: every kind needs one approval from an
//! `approver` or `admin`, quarantining a `critical` device needs two, proposals live a
//! day, and nothing is approved by itself. A policy file replaces any of that per kind.
//!
//! ```toml
//! phase = "recommend"            # monitor: no proposals; recommend: all wait;
//!                                # contain: standing approvals may cover containment
//!
//! [kinds.xdr_case_comment]
//! approver_roles = ["analyst", "approver", "admin"]
//! approvals = 1
//! ttl = "24h"
//!
//! [kinds.quarantine_device]
//! approver_roles = ["approver", "admin"]
//! approvals = 1
//! critical_approvals = 2         # distinct people, never the proposer
//! ttl = "4h"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::kinds::{Action, KINDS};
use crate::model::Criticality;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Hunter,
    Analyst,
    Approver,
    Admin,
}

/// One person from the users file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub roles: Vec<Role>,
    #[serde(default)]
    pub slack_user_id: Option<String>,
    #[serde(default)]
    pub teams_aad_object_id: Option<String>,
    /// Hex SHA-256 of the person's API token; the token itself is never stored.
    #[serde(default)]
    pub api_token_sha256: Option<String>,
}

/// The users file: `[[user]]` tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
}

impl Users {
    pub fn parse(text: &str) -> Result<Users, String> {
        let users: Users = toml::from_str(text).map_err(|err| err.to_string())?;
        let mut seen = std::collections::BTreeSet::new();
        for user in &users.users {
            if user.name.trim().is_empty() || user.name == "system" || user.name == "agent" {
                return Err(format!("user name {:?} is empty or reserved", user.name));
            }
            if !seen.insert(user.name.as_str()) {
                return Err(format!("user {:?} appears twice", user.name));
            }
        }
        Ok(users)
    }

    pub fn load(path: &Path) -> Result<Users, String> {
        let text =
            std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
        Users::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// How far automation may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Findings and write-ups only: no proposal is created.
    Monitor,
    /// Every proposal waits for the approvals its kind needs, unless a standing approval
    /// for a low- or medium-risk kind covers it.
    #[default]
    Recommend,
    /// As `recommend`, and a standing approval may also cover containment (quarantine,
    /// isolation) of named devices: it runs at once, is announced, and is reversible.
    Contain,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Monitor => "monitor",
            Phase::Recommend => "recommend",
            Phase::Contain => "contain",
        }
    }

    pub fn parse(text: &str) -> Result<Phase, String> {
        match text {
            "monitor" => Ok(Phase::Monitor),
            "recommend" => Ok(Phase::Recommend),
            "contain" => Ok(Phase::Contain),
            other => Err(format!("phase {other:?} is not monitor, recommend or contain")),
        }
    }
}

/// The rule for one action kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindRule {
    pub approver_roles: Vec<Role>,
    /// Distinct approvals needed, never counting the proposer.
    pub approvals: u32,
    /// Approvals needed when the action touches a `critical` device.
    #[serde(default)]
    pub critical_approvals: Option<u32>,
    /// How long a proposal waits for its approvals (`4h`, `1d`).
    pub ttl: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default)]
    pub kinds: BTreeMap<String, KindRule>,
}

impl Default for Policy {
    fn default() -> Policy {
        let kinds = KINDS
            .iter()
            .map(|kind| {
                let rule = KindRule {
                    approver_roles: vec![Role::Approver, Role::Admin],
                    approvals: 1,
                    critical_approvals: (*kind == "quarantine_device").then_some(2),
                    ttl: "24h".into(),
                };
                ((*kind).to_string(), rule)
            })
            .collect();
        Policy { phase: Phase::Recommend, kinds }
    }
}

impl Policy {
    /// A policy file: the kinds it names replace the defaults, the rest keep them.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let given: Policy = toml::from_str(text).map_err(|err| err.to_string())?;
        let mut policy = Policy { phase: given.phase, ..Policy::default() };
        for (kind, rule) in given.kinds {
            if !KINDS.contains(&kind.as_str()) {
                return Err(format!(
                    "kinds.{kind}: unknown action kind; one of {}",
                    KINDS.join(", ")
                ));
            }
            if rule.approvals == 0 || rule.critical_approvals == Some(0) {
                return Err(format!(
                    "kinds.{kind}: approvals must be at least 1 (standing approvals are \
                     recorded decisions, not policy)"
                ));
            }
            if rule.approver_roles.is_empty() {
                return Err(format!("kinds.{kind}: approver_roles is empty"));
            }
            crate::timefmt::parse_duration(&rule.ttl)
                .map_err(|err| format!("kinds.{kind}.ttl: {err}"))?;
            policy.kinds.insert(kind, rule);
        }
        Ok(policy)
    }

    pub fn load(path: &Path) -> Result<Policy, String> {
        let text =
            std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
        Policy::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    pub fn rule(&self, action: &Action) -> &KindRule {
        // Every kind has a rule: the defaults cover all and parsing only replaces.
        self.kinds.get(action.kind()).unwrap_or_else(|| {
            DEFAULT_RULE.get_or_init(|| KindRule {
                approver_roles: vec![Role::Admin],
                approvals: 2,
                critical_approvals: None,
                ttl: "1h".into(),
            })
        })
    }

    /// Distinct approvals `action` needs before it may run.
    pub fn approvals_needed(&self, action: &Action) -> u32 {
        let rule = self.rule(action);
        match (action.criticality(), rule.critical_approvals) {
            (Some(Criticality::Critical), Some(n)) => n.max(rule.approvals),
            _ => rule.approvals,
        }
    }

    /// How long a proposal of this kind lives, in milliseconds.
    pub fn ttl_ms(&self, action: &Action) -> i64 {
        crate::timefmt::parse_duration(&self.rule(action).ttl)
            .map_or(3_600_000, |secs| (secs * 1000.0) as i64)
    }

    pub fn may_approve(&self, user: &User, action: &Action) -> bool {
        let rule = self.rule(action);
        user.roles.iter().any(|role| rule.approver_roles.contains(role))
    }
}

/// The strictest rule, for a kind a policy somehow lacks.
static DEFAULT_RULE: std::sync::OnceLock<KindRule> = std::sync::OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_replaces_only_the_kinds_it_names() {
        let policy = Policy::parse(
            "[kinds.xdr_case_comment]\napprover_roles = [\"analyst\"]\napprovals = 1\nttl = \"2h\"\n",
        )
        .unwrap();
        assert_eq!(policy.kinds["xdr_case_comment"].approver_roles, vec![Role::Analyst]);
        assert_eq!(policy.kinds["quarantine_device"].critical_approvals, Some(2));
        assert_eq!(policy.phase, Phase::Recommend);
    }

    #[test]
    fn a_policy_that_approves_by_itself_or_names_an_unknown_kind_is_refused() {
        let err = Policy::parse("[kinds.xdr_case_comment]\napprover_roles = [\"analyst\"]\napprovals = 0\nttl = \"2h\"\n")
            .unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = Policy::parse(
            "[kinds.nuke]\napprover_roles = [\"admin\"]\napprovals = 1\nttl = \"2h\"\n",
        )
        .unwrap_err();
        assert!(err.contains("unknown action kind"), "{err}");
        let err = Policy::parse("phase = \"yolo\"\n").unwrap_err();
        assert!(err.contains("phase") || err.contains("yolo"), "{err}");
    }

    #[test]
    fn users_are_unique_and_never_the_system() {
        let users = Users::parse(
            "[[user]]\nname = \"ana\"\nroles = [\"analyst\", \"approver\"]\n\n[[user]]\nname = \"bo\"\nroles = [\"viewer\"]\n",
        )
        .unwrap();
        assert_eq!(users.get("ana").unwrap().roles, vec![Role::Analyst, Role::Approver]);
        assert!(Users::parse("[[user]]\nname = \"system\"\nroles = []\n").is_err());
        assert!(
            Users::parse(
                "[[user]]\nname = \"a\"\nroles = []\n[[user]]\nname = \"a\"\nroles = []\n"
            )
            .is_err()
        );
    }
}
