//! Drafts in PAN-OS's own forms, and an exported rulebase compared with a draft.
//!
//! A firewall's objects and rules live under
//! `/config/devices/entry[@name='localhost.localdomain']/vsys/entry[@name='vsys1']`;
//! on Panorama under `.../device-group/entry[@name='<DG>']`, with the rules in its
//! `pre-rulebase` so they are evaluated before the firewalls' own. The XML form is a
//! configuration fragment in that tree (what `load config partial` takes); the set
//! form is what configure mode takes; `config_sets` are the `action=set` requests the
//! `panos_config_change` action sends once a person approves them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Conversation, Draft, Net, Port, Rule, RuleAction, valid_name};
use crate::actions::kinds::{ConfigSet, PanosTarget, RulePlace};

const DEVICE: &str = "/config/devices/entry[@name='localhost.localdomain']";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn members(names: &[String]) -> String {
    if names.is_empty() {
        return "<member>any</member>".into();
    }
    names.iter().map(|n| format!("<member>{}</member>", escape(n))).collect()
}

/// Where the draft goes: a firewall's vsys1, or a Panorama device group.
fn base(target: &PanosTarget) -> String {
    match target {
        PanosTarget::Firewall => format!("{DEVICE}/vsys/entry[@name='vsys1']"),
        PanosTarget::Panorama { device_group } => {
            format!("{DEVICE}/device-group/entry[@name='{device_group}']")
        }
    }
}

fn rules_path(target: &PanosTarget) -> String {
    match target {
        PanosTarget::Firewall => format!("{}/rulebase/security/rules", base(target)),
        PanosTarget::Panorama { .. } => format!("{}/pre-rulebase/security/rules", base(target)),
    }
}

/// Every name the draft creates, checked against PAN-OS's rules.
pub fn check_names(draft: &Draft) -> Result<(), String> {
    let names = draft
        .objects
        .addresses
        .keys()
        .chain(draft.objects.groups.keys())
        .chain(draft.objects.dynamic_groups.keys())
        .chain(draft.objects.tags.iter())
        .cloned()
        .chain(draft.objects.services.iter().map(Port::object_name))
        .chain(draft.rules.iter().map(|r| r.name.clone()));
    for name in names {
        valid_name(&name)?;
    }
    Ok(())
}

fn rule_element(rule: &Rule) -> String {
    let services: Vec<String> = rule.services.iter().map(Port::object_name).collect();
    let mut element = format!(
        "<from><member>any</member></from><to><member>any</member></to><source>{}</source><destination>{}</destination>",
        members(&rule.source.members),
        members(&rule.destination.members)
    );
    if rule.source.negate {
        element.push_str("<negate-source>yes</negate-source>");
    }
    if rule.destination.negate {
        element.push_str("<negate-destination>yes</negate-destination>");
    }
    let _ = write!(
        element,
        "<source-user><member>any</member></source-user><application>{}</application><service>{}</service><action>{}</action><tag><member>{}</member></tag><log-end>yes</log-end><description>{}</description>",
        members(&rule.applications),
        members(&services),
        match rule.action {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
        },
        super::DRAFT_TAG,
        escape(&rule.description)
    );
    element
}

/// The `action=set` requests that create the draft: objects first (one request per
/// object, so a proposal can be read item by item), then the rules in order. A set
/// appends a rule at the bottom of its rulebase; a quarantine's rules must come before
/// every allow, so they are sent last first, each moved to the top.
pub fn config_sets(draft: &Draft, target: &PanosTarget) -> (Vec<ConfigSet>, Vec<ConfigSet>) {
    let base = base(target);
    let mut objects = Vec::new();
    for tag in &draft.objects.tags {
        objects.push(ConfigSet {
            xpath: format!("{base}/tag/entry[@name='{tag}']"),
            element: "<comments>Drafted by pivotwatch from observed traffic</comments>".into(),
            move_to: None,
        });
    }
    for (name, net) in &draft.objects.addresses {
        objects.push(ConfigSet {
            xpath: format!("{base}/address/entry[@name='{name}']"),
            element: format!(
                "<ip-netmask>{net}</ip-netmask><tag><member>{}</member></tag>",
                super::DRAFT_TAG
            ),
            move_to: None,
        });
    }
    for port in &draft.objects.services {
        objects.push(ConfigSet {
            xpath: format!("{base}/service/entry[@name='{}']", port.object_name()),
            element: format!(
                "<protocol><{p}><port>{}</port></{p}></protocol>",
                port.port,
                p = port.proto
            ),
            move_to: None,
        });
    }
    for (name, list) in &draft.objects.groups {
        objects.push(ConfigSet {
            xpath: format!("{base}/address-group/entry[@name='{name}']"),
            element: format!("<static>{}</static>", members(list)),
            move_to: None,
        });
    }
    for (name, tag) in &draft.objects.dynamic_groups {
        objects.push(ConfigSet {
            xpath: format!("{base}/address-group/entry[@name='{name}']"),
            element: format!("<dynamic><filter>'{tag}'</filter></dynamic>"),
            move_to: None,
        });
    }
    let first = draft.kind == "quarantine";
    let mut rules: Vec<ConfigSet> = draft
        .rules
        .iter()
        .map(|rule| ConfigSet {
            xpath: format!("{}/entry[@name='{}']", rules_path(target), rule.name),
            element: rule_element(rule),
            move_to: first.then_some(RulePlace::Top),
        })
        .collect();
    if first {
        rules.reverse();
    }
    (objects, rules)
}

/// The draft as a configuration fragment.
pub fn xml(draft: &Draft, target: &PanosTarget) -> String {
    let (objects, _) = config_sets(draft, target);
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for set in &objects {
        let kind = ["tag", "address-group", "address", "service"]
            .into_iter()
            .find(|k| set.xpath.contains(&format!("/{k}/entry")))
            .unwrap_or("address");
        let name = set.xpath.rsplit("@name='").next().unwrap_or("").trim_end_matches("']");
        by_kind.entry(kind).or_default().push(format!(
            "<entry name=\"{}\">{}</entry>",
            escape(name),
            set.element
        ));
    }
    let mut inner = String::new();
    for kind in ["tag", "address", "service", "address-group"] {
        if let Some(entries) = by_kind.get(kind) {
            let _ = write!(inner, "<{kind}>{}</{kind}>", entries.join(""));
        }
    }
    // In rulebase order, whatever order the requests send them in.
    let rule_entries: String = draft
        .rules
        .iter()
        .map(|rule| {
            format!("<entry name=\"{}\">{}</entry>", escape(&rule.name), rule_element(rule))
        })
        .collect();
    let rulebase = match target {
        PanosTarget::Firewall => "rulebase",
        PanosTarget::Panorama { .. } => "pre-rulebase",
    };
    let _ = write!(
        inner,
        "<{rulebase}><security><rules>{rule_entries}</rules></security></{rulebase}>"
    );
    let scope = match target {
        PanosTarget::Firewall => format!("<vsys><entry name=\"vsys1\">{inner}</entry></vsys>"),
        PanosTarget::Panorama { device_group } => {
            format!(
                "<device-group><entry name=\"{}\">{inner}</entry></device-group>",
                escape(device_group)
            )
        }
    };
    format!(
        "<?xml version=\"1.0\"?>\n<config><devices><entry name=\"localhost.localdomain\">{scope}</entry></devices></config>\n"
    )
}

fn set_list(names: &[String]) -> String {
    match names {
        [] => "any".into(),
        [one] => one.clone(),
        many => format!("[ {} ]", many.join(" ")),
    }
}

/// The draft as configure-mode `set` commands, with the moves that put a quarantine's
/// rules first.
pub fn set_commands(draft: &Draft, target: &PanosTarget) -> String {
    let prefix = match target {
        PanosTarget::Firewall => String::new(),
        PanosTarget::Panorama { device_group } => format!("device-group {device_group} "),
    };
    let rulebase = match target {
        PanosTarget::Firewall => "rulebase",
        PanosTarget::Panorama { .. } => "pre-rulebase",
    };
    let mut out = String::new();
    for tag in &draft.objects.tags {
        let _ = writeln!(
            out,
            "set {prefix}tag {tag} comments \"Drafted by pivotwatch from observed traffic\""
        );
    }
    for (name, net) in &draft.objects.addresses {
        let _ =
            writeln!(out, "set {prefix}address {name} ip-netmask {net} tag {}", super::DRAFT_TAG);
    }
    for port in &draft.objects.services {
        let _ = writeln!(
            out,
            "set {prefix}service {} protocol {} port {}",
            port.object_name(),
            port.proto,
            port.port
        );
    }
    for (name, list) in &draft.objects.groups {
        let _ = writeln!(out, "set {prefix}address-group {name} static {}", set_list(list));
    }
    for (name, tag) in &draft.objects.dynamic_groups {
        let _ = writeln!(out, "set {prefix}address-group {name} dynamic filter \"'{tag}'\"");
    }
    for rule in &draft.rules {
        let services: Vec<String> = rule.services.iter().map(Port::object_name).collect();
        let _ = writeln!(
            out,
            "set {prefix}{rulebase} security rules {} from any to any source {} destination {} source-user any application {} service {} action {} log-end yes tag {}",
            rule.name,
            set_list(&rule.source.members),
            set_list(&rule.destination.members),
            set_list(&rule.applications),
            set_list(&services),
            match rule.action {
                RuleAction::Allow => "allow",
                RuleAction::Deny => "deny",
            },
            super::DRAFT_TAG
        );
        let _ = writeln!(
            out,
            "set {prefix}{rulebase} security rules {} description \"{}\"",
            rule.name,
            rule.description.replace('"', "'")
        );
    }
    if draft.kind == "quarantine" {
        for rule in draft.rules.iter().rev() {
            let _ = writeln!(out, "move {prefix}{rulebase} security rules {} top", rule.name);
        }
    }
    out
}

// ---- an exported rulebase ----------------------------------------------------------

/// A rule of an exported rulebase, with its objects resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExistingRule {
    pub name: String,
    /// `None` is `any`.
    pub source: Option<Vec<Net>>,
    pub destination: Option<Vec<Net>>,
    pub negate_source: bool,
    pub negate_destination: bool,
    /// `None` is `any`.
    pub applications: Option<Vec<String>>,
    /// `None` is `any`; `application-default` is kept as the applications' own ports,
    /// which this comparison does not know, so it counts as any port.
    pub services: Option<Vec<(String, u16, u16)>>,
    pub allow: bool,
    pub disabled: bool,
}

fn child<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    node.children().find(|c| c.has_tag_name(name))
}

fn member_texts(node: Option<roxmltree::Node<'_, '_>>) -> Vec<String> {
    node.map(|n| {
        n.children()
            .filter(|c| c.has_tag_name("member"))
            .filter_map(|c| c.text())
            .map(|t| t.trim().to_string())
            .collect()
    })
    .unwrap_or_default()
}

fn parse_net(text: &str) -> Option<Net> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
        None => {
            let addr = text.parse::<IpAddr>().ok()?;
            (addr, if addr.is_ipv4() { 32 } else { 128 })
        }
    };
    Some(Net { addr, prefix })
}

/// Reads the security rules of a PAN-OS configuration export (a firewall's `rulebase`,
/// or Panorama's shared and device-group pre- and post-rulebases, the named device
/// group's only when one is given), resolving address objects, static groups and
/// service objects. Rules come in evaluation order.
pub fn read_rulebase(text: &str, device_group: Option<&str>) -> Result<Vec<ExistingRule>, String> {
    let doc = roxmltree::Document::parse(text)
        .map_err(|err| format!("the rulebase is not XML: {err}"))?;
    let mut addresses: BTreeMap<String, Net> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut services: BTreeMap<String, Vec<(String, u16, u16)>> = BTreeMap::new();
    services
        .insert("service-http".into(), vec![("tcp".into(), 80, 80), ("tcp".into(), 8080, 8080)]);
    services.insert("service-https".into(), vec![("tcp".into(), 443, 443)]);
    for node in doc.descendants().filter(|n| n.has_tag_name("entry")) {
        let Some(name) = node.attribute("name") else { continue };
        let parent = node.parent().map(|p| p.tag_name().name()).unwrap_or("");
        match parent {
            "address" => {
                if let Some(net) = child(node, "ip-netmask")
                    .and_then(|n| n.text())
                    .and_then(|t| parse_net(t.trim()))
                {
                    addresses.insert(name.to_string(), net);
                }
            }
            "address-group" => {
                groups.insert(name.to_string(), member_texts(child(node, "static")));
            }
            "service" => {
                let Some(protocol) = child(node, "protocol") else { continue };
                let mut ports = Vec::new();
                for proto in ["tcp", "udp"] {
                    let Some(text) = child(protocol, proto)
                        .and_then(|p| child(p, "port"))
                        .and_then(|p| p.text())
                    else {
                        continue;
                    };
                    for part in text.split(',') {
                        let (lo, hi) =
                            part.trim().split_once('-').unwrap_or((part.trim(), part.trim()));
                        if let (Ok(lo), Ok(hi)) = (lo.trim().parse(), hi.trim().parse()) {
                            ports.push((proto.to_string(), lo, hi));
                        }
                    }
                }
                services.insert(name.to_string(), ports);
            }
            _ => {}
        }
    }
    let resolve = |names: Vec<String>| -> Result<Option<Vec<Net>>, String> {
        if names.is_empty() || names.iter().any(|n| n == "any") {
            return Ok(None);
        }
        let mut nets = Vec::new();
        for name in &names {
            if let Some(net) = addresses.get(name) {
                nets.push(*net);
            } else if let Some(list) = groups.get(name) {
                nets.extend(
                    list.iter().filter_map(|m| addresses.get(m).copied().or_else(|| parse_net(m))),
                );
            } else if let Some(net) = parse_net(name) {
                nets.push(net);
            } else {
                return Err(format!("address {name:?} is not defined in the export"));
            }
        }
        Ok(Some(nets))
    };
    let mut rules = Vec::new();
    for node in doc.descendants().filter(|n| n.has_tag_name("rules")) {
        let Some(security) = node.parent().filter(|p| p.has_tag_name("security")) else { continue };
        let Some(rulebase) = security.parent() else { continue };
        let kind = rulebase.tag_name().name();
        if !matches!(kind, "rulebase" | "pre-rulebase" | "post-rulebase") {
            continue;
        }
        // A device group's rules count only for the device group asked for.
        let group = rulebase
            .ancestors()
            .find(|a| a.parent().is_some_and(|p| p.has_tag_name("device-group")))
            .and_then(|e| e.attribute("name"));
        if let (Some(group), Some(wanted)) = (group, device_group)
            && group != wanted
        {
            continue;
        }
        for entry in node.children().filter(|c| c.has_tag_name("entry")) {
            let name = entry.attribute("name").unwrap_or("").to_string();
            let flag = |tag: &str| {
                child(entry, tag).and_then(|n| n.text()).is_some_and(|t| t.trim() == "yes")
            };
            let apps = member_texts(child(entry, "application"));
            let service_names = member_texts(child(entry, "service"));
            let service = if service_names.is_empty()
                || service_names.iter().any(|s| s == "any" || s == "application-default")
            {
                None
            } else {
                let mut ports = Vec::new();
                for s in &service_names {
                    ports.extend(
                        services
                            .get(s)
                            .cloned()
                            .ok_or_else(|| format!("rule {name}: service {s:?} is not defined"))?,
                    );
                }
                Some(ports)
            };
            rules.push(ExistingRule {
                source: resolve(member_texts(child(entry, "source")))
                    .map_err(|e| format!("rule {name}: {e}"))?,
                destination: resolve(member_texts(child(entry, "destination")))
                    .map_err(|e| format!("rule {name}: {e}"))?,
                negate_source: flag("negate-source"),
                negate_destination: flag("negate-destination"),
                applications: if apps.is_empty() || apps.iter().any(|a| a == "any") {
                    None
                } else {
                    Some(apps)
                },
                services: service,
                allow: child(entry, "action")
                    .and_then(|n| n.text())
                    .is_some_and(|t| t.trim() == "allow"),
                disabled: flag("disabled"),
                name,
            });
        }
    }
    Ok(rules)
}

fn nets_match(nets: &Option<Vec<Net>>, negate: bool, ip: &IpAddr) -> bool {
    match nets {
        None => !negate,
        Some(list) => list.iter().any(|n| n.contains(ip)) != negate,
    }
}

impl ExistingRule {
    pub fn matches(&self, conv: &Conversation) -> bool {
        !self.disabled
            && nets_match(&self.source, self.negate_source, &conv.src)
            && nets_match(&self.destination, self.negate_destination, &conv.dst)
            && self.services.as_ref().is_none_or(|ports| {
                ports.iter().any(|(p, lo, hi)| *p == conv.proto && (*lo..=*hi).contains(&conv.port))
            })
            && self
                .applications
                .as_ref()
                .is_none_or(|apps| conv.app.as_ref().is_some_and(|a| apps.contains(a)))
    }

    /// Whether every session this rule can match, `other` would match first.
    fn covered_by(&self, other: &ExistingRule) -> bool {
        fn nets_cover(outer: &Option<Vec<Net>>, inner: &Option<Vec<Net>>) -> bool {
            match (outer, inner) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(o), Some(i)) => i.iter().all(|n| o.iter().any(|m| m.covers(n))),
            }
        }
        if other.disabled
            || self.negate_source
            || self.negate_destination
            || other.negate_source
            || other.negate_destination
        {
            return false;
        }
        let services = match (&other.services, &self.services) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(i)) => i
                .iter()
                .all(|(p, lo, hi)| o.iter().any(|(q, olo, ohi)| p == q && olo <= lo && hi <= ohi)),
        };
        let apps = match (&other.applications, &self.applications) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(i)) => i.iter().all(|a| o.contains(a)),
        };
        nets_cover(&other.source, &self.source)
            && nets_cover(&other.destination, &self.destination)
            && services
            && apps
    }
}

/// A draft set beside an existing rulebase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// Draft allow rules whose traffic the rulebase does not already allow.
    pub to_add: Vec<String>,
    /// `(shadowed, by)`: rules an earlier rule matches whenever they would.
    pub shadowed: Vec<(String, String)>,
    /// Allow rules wider than the observed traffic, with how.
    pub wider_than_observed: Vec<(String, String)>,
}

/// Compares a draft (and the conversations it was drawn from) with an exported
/// rulebase.
pub fn diff(draft: &Draft, existing: &[ExistingRule], observed: &[Conversation]) -> Diff {
    let scope: BTreeSet<IpAddr> = draft.scope.iter().copied().collect();
    let observed: Vec<&Conversation> =
        observed.iter().filter(|c| scope.contains(&c.src) || scope.contains(&c.dst)).collect();
    let mut out = Diff::default();
    for rule in draft.rules.iter().filter(|r| r.action == RuleAction::Allow) {
        let mine: Vec<&&Conversation> = observed
            .iter()
            .filter(|c| super::first_match(draft, c).is_some_and(|r| r.name == rule.name))
            .collect();
        let allowed =
            |c: &Conversation| existing.iter().find(|e| e.matches(c)).is_some_and(|e| e.allow);
        if mine.is_empty() || !mine.iter().all(|c| allowed(c)) {
            out.to_add.push(rule.name.clone());
        }
    }
    for (j, later) in existing.iter().enumerate() {
        if later.disabled {
            continue;
        }
        if let Some(earlier) = existing[..j].iter().find(|e| later.covered_by(e)) {
            out.shadowed.push((later.name.clone(), earlier.name.clone()));
        }
    }
    for rule in existing.iter().filter(|r| r.allow && !r.disabled) {
        let hits: Vec<&&Conversation> = observed.iter().filter(|c| rule.matches(c)).collect();
        if hits.is_empty() {
            continue;
        }
        let mut how = Vec::new();
        if rule.source.is_none() {
            how.push("any source".to_string());
        }
        if rule.destination.is_none() {
            how.push("any destination".to_string());
        }
        if rule.services.is_none() {
            let ports: BTreeSet<String> =
                hits.iter().map(|c| format!("{}/{}", c.proto, c.port)).collect();
            how.push(format!(
                "any service where only {} was seen",
                ports.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if rule.applications.is_none() {
            let apps: BTreeSet<String> = hits.iter().filter_map(|c| c.app.clone()).collect();
            if !apps.is_empty() {
                how.push(format!(
                    "any application where only {} was seen",
                    apps.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if !how.is_empty() {
            out.wider_than_observed.push((rule.name.clone(), how.join("; ")));
        }
    }
    out
}
