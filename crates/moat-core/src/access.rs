//! Topic access: named ACL policies of MQTT filter templates (`{device.id}`,
//! `{device.group}`), assigned per identity or per group, and backend applications —
//! identities with wider policies (e.g. every device's telemetry).
//!
//! Resolution for an identity: a gateway gets `gateways/{id}/#` whatever else it has
//! (`gateways.rs`); any other its own policy, else its group's policy, else `default`
//! (the stored policy of that name if an admin defined one, else the built-in
//! `devices/{device.id}/#` for publish and subscribe). Changes apply at the identity's next
//! CONNECT; assigning a policy or group to one identity closes its live sessions so it
//! reconnects under the new one.

use crate::{
    Actor, CreateDevice, CreatedDevice, Credential, Error, Event, Hub, validate_device_id,
};
use moat_store::{AclPolicy, Device, IdentityAccess, IdentityKind};
use time::OffsetDateTime;

/// The policy every identity without another one gets.
pub const DEFAULT_POLICY: &str = "default";
/// The built-in default: a device publishes and subscribes under its own subtree.
pub const DEFAULT_FILTER: &str = "devices/{device.id}/#";

/// An identity's expanded topic permissions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicAcl {
    /// Topics it may publish to (filters).
    pub publish: Vec<String>,
    /// Filters it may subscribe within.
    pub subscribe: Vec<String>,
}

/// An application to create.
#[derive(Clone, Debug)]
pub struct CreateApp {
    /// Its name (its identity and MQTT client id).
    pub name: String,
    /// Authenticate with a token (server TLS or plain) instead of a hub-generated key and
    /// certificate.
    pub token: bool,
    /// Filter templates it may publish to.
    pub publish: Vec<String>,
    /// Filter templates it may subscribe to.
    pub subscribe: Vec<String>,
}

/// Checks an MQTT filter template: non-empty, no NUL, `#` only as the whole last level,
/// `+` only as a whole level, and only the known `{…}` variables.
pub fn validate_filter(f: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::Invalid(format!("topic filter {f:?}: {why}")));
    if f.is_empty() || f.len() > 1024 || f.contains('\0') {
        return bad("must be 1 to 1024 characters without NUL");
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return bad("'#' must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return bad("'+' must be a whole level");
        }
    }
    let mut rest = f;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            return bad("unclosed '{'");
        };
        let var = &rest[start..start + end + 1];
        if var != "{device.id}" && var != "{device.group}" {
            return bad("the only variables are {device.id} and {device.group}");
        }
        rest = &rest[start + end + 1..];
    }
    Ok(())
}

/// Expands templates for one identity. Filters naming `{device.group}` are dropped for an
/// identity in no group (they would otherwise match a literal or empty level).
pub fn expand(templates: &[String], id: &str, group: Option<&str>) -> Vec<String> {
    templates
        .iter()
        .filter(|t| group.is_some() || !t.contains("{device.group}"))
        .map(|t| {
            t.replace("{device.id}", id)
                .replace("{device.group}", group.unwrap_or_default())
        })
        .collect()
}

impl Hub {
    /// The topic permissions of `device` (see the module docs for the resolution order).
    pub async fn topic_acl(&self, device: &Device) -> Result<TopicAcl, Error> {
        let access = self.access_row(&device.id).await?;
        if access
            .as_ref()
            .is_some_and(|a| a.kind == IdentityKind::Gateway)
        {
            return Ok(crate::gateways::gateway_acl(&device.id));
        }
        let group = access.as_ref().and_then(|a| a.group.clone());
        let mut name = access.as_ref().and_then(|a| a.policy.clone());
        if name.is_none()
            && let Some(g) = &group
        {
            name = self.group_policy_row(g).await?;
        }
        let name = name.unwrap_or_else(|| DEFAULT_POLICY.to_string());
        let policies = self
            .policy_cache
            .get_or_load(|| async { Ok(self.store().acl_policies().await?) })
            .await?;
        let policy = policies.iter().find(|p| p.name == name);
        let (publish, subscribe) = match policy {
            Some(p) => (p.publish.clone(), p.subscribe.clone()),
            None if name == DEFAULT_POLICY => {
                (vec![DEFAULT_FILTER.into()], vec![DEFAULT_FILTER.into()])
            }
            // A policy deleted while still assigned grants nothing (fail closed).
            None => (Vec::new(), Vec::new()),
        };
        Ok(TopicAcl {
            publish: expand(&publish, &device.id, group.as_deref()),
            subscribe: expand(&subscribe, &device.id, group.as_deref()),
        })
    }

    /// Creates or replaces a named policy.
    pub async fn put_acl_policy(
        &self,
        name: &str,
        publish: Vec<String>,
        subscribe: Vec<String>,
        actor: &Actor,
    ) -> Result<AclPolicy, Error> {
        let result = async {
            validate_device_id(name).map_err(|_| {
                Error::Invalid(format!(
                    "policy name {name:?} may only contain letters, digits, '.', '_', ':' and '-'"
                ))
            })?;
            for f in publish.iter().chain(&subscribe) {
                validate_filter(f)?;
            }
            let p = AclPolicy {
                name: name.into(),
                publish,
                subscribe,
                created_at: OffsetDateTime::now_utc(),
            };
            self.store().put_acl_policy(&p).await?;
            self.policy_cache.invalidate();
            self.emit(Event::AccessPoliciesChanged { name: name.into() });
            Ok(p)
        }
        .await;
        self.audited(actor, "acl.put", Some(name), result).await
    }

    /// Every stored policy.
    pub async fn acl_policies(&self) -> Result<Vec<AclPolicy>, Error> {
        Ok(self.store().acl_policies().await?)
    }

    /// Deletes a policy; identities still assigned to it get no access until reassigned.
    pub async fn delete_acl_policy(&self, name: &str, actor: &Actor) -> Result<(), Error> {
        let result = self
            .store()
            .delete_acl_policy(name)
            .await
            .map_err(|e| match e {
                moat_store::Error::NotFound(_) => Error::NotFound {
                    kind: "ACL policy",
                    id: name.into(),
                },
                other => other.into(),
            });
        self.policy_cache.invalidate();
        if result.is_ok() {
            self.emit(Event::AccessPoliciesChanged { name: name.into() });
        }
        self.audited(actor, "acl.delete", Some(name), result).await
    }

    /// Sets (or clears) the policy of a group.
    pub async fn set_group_policy(
        &self,
        group: &str,
        policy: Option<&str>,
        actor: &Actor,
    ) -> Result<(), Error> {
        let result = async {
            validate_device_id(group).map_err(|_| {
                Error::Invalid(format!(
                    "group name {group:?} may only contain letters, digits, '.', '_', ':' and '-'"
                ))
            })?;
            if let Some(p) = policy {
                self.require_policy(p).await?;
            }
            self.store().set_group_policy(group, policy).await?;
            // Members keep their sessions and get the new policy at their next CONNECT,
            // which must not read the old one (the view forgets groups on this event).
            self.emit(Event::AccessPoliciesChanged { name: group.into() });
            Ok(())
        }
        .await;
        self.audited(actor, "acl.assign_group", Some(group), result)
            .await
    }

    /// Sets an identity's group and/or own policy (None leaves it unchanged; Some("") clears
    /// it). Its live sessions are closed so it reconnects under the new access.
    pub async fn set_identity_access(
        &self,
        id: &str,
        group: Option<&str>,
        policy: Option<&str>,
        actor: &Actor,
    ) -> Result<IdentityAccess, Error> {
        let result = async {
            self.device(id).await?;
            let mut access = self
                .store()
                .identity_access(id)
                .await?
                .unwrap_or(IdentityAccess {
                    device_id: id.into(),
                    kind: IdentityKind::Device,
                    group: None,
                    policy: None,
                });
            if access.kind == IdentityKind::Gateway {
                return Err(Error::State(format!(
                    "{id:?} is a gateway: its topic access is fixed (gateways/{id}/#)"
                )));
            }
            if let Some(g) = group {
                if !g.is_empty() {
                    validate_device_id(g)?;
                }
                access.group = (!g.is_empty()).then(|| g.to_string());
            }
            if let Some(p) = policy {
                if !p.is_empty() {
                    self.require_policy(p).await?;
                }
                access.policy = (!p.is_empty()).then(|| p.to_string());
            }
            self.store().put_identity_access(&access).await?;
            self.emit(Event::AccessChanged {
                device_id: id.into(),
            });
            Ok(access)
        }
        .await;
        self.audited(actor, "acl.assign_identity", Some(id), result)
            .await
    }

    pub(crate) async fn require_policy(&self, name: &str) -> Result<(), Error> {
        if name == DEFAULT_POLICY
            || self
                .store()
                .acl_policies()
                .await?
                .iter()
                .any(|p| p.name == name)
        {
            Ok(())
        } else {
            Err(Error::NotFound {
                kind: "ACL policy",
                id: name.into(),
            })
        }
    }

    /// Creates a backend application: an identity of kind `app` with its own policy
    /// `app:{name}` made of `publish` and `subscribe`, and a hub-generated key and
    /// certificate, or (with `token`) a token for server-TLS connections.
    pub async fn create_app(&self, req: CreateApp, actor: &Actor) -> Result<CreatedDevice, Error> {
        for f in req.publish.iter().chain(&req.subscribe) {
            validate_filter(f)?;
        }
        if req.publish.is_empty() && req.subscribe.is_empty() {
            return Err(Error::Invalid(
                "an application needs at least one --publish or --subscribe filter".into(),
            ));
        }
        let policy = format!("app:{}", req.name);
        validate_device_id(&req.name)?;
        let created = self
            .create_device(
                CreateDevice {
                    id: req.name.clone(),
                    credential: Credential::GenerateKey,
                    allow_insecure: req.token,
                },
                actor,
            )
            .await?;
        self.put_acl_policy(&policy, req.publish, req.subscribe, actor)
            .await?;
        self.store()
            .put_identity_access(&IdentityAccess {
                device_id: req.name.clone(),
                kind: IdentityKind::App,
                group: None,
                policy: Some(policy),
            })
            .await?;
        // Created (and possibly admitted) a moment ago with the default access.
        self.view.invalidate_device(&req.name);
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        for ok in [
            "devices/{device.id}/#",
            "#",
            "+/x/+",
            "groups/{device.group}/cmd",
            "a/b",
        ] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a+/b", "x/{device.name}", "x/{device.id"] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_expand_and_group_filters_need_a_group() {
        let t = vec![
            "devices/{device.id}/#".to_string(),
            "groups/{device.group}/#".to_string(),
        ];
        assert_eq!(expand(&t, "d1", Some("g")), ["devices/d1/#", "groups/g/#"]);
        assert_eq!(expand(&t, "d1", None), ["devices/d1/#"]);
    }
}
