//! Least-privilege segmentation drafted from observed traffic.
//!
//! A peer group (devices of one type in one segment) gets one allow rule per thing it
//! was seen to talk to in the baseline period, and a logged deny for everything else,
//! both ways. Destinations are summarised the way a firewall administrator would write
//! them: a server by its address, another group of devices by that group, a subnet of
//! unknown internal hosts by its /24 when several of its hosts are peers, and Internet
//! addresses only when they are stable (seen on at least half of the baseline days)
//! and few; anything else in the baseline is reported as traffic the draft would block.
//!
//! A quarantine draft moves one device into a dynamic address group by tag, keeps only
//! what the device must keep (for medical equipment, its traffic to its clinical
//! server, with a warning), and denies the rest.
//!
//! Every draft is replayed over the observed conversations: which rule each would have
//! hit, in the baseline and after it, what would have been blocked, and which rules
//! nothing used. `panos` renders drafts as PAN-OS XML and `set` commands and compares
//! them with an exported rulebase.

pub mod panos;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::xdr::{Row, Xdr, XqlRequest};

/// The tag (and dynamic address group filter) quarantined devices carry.
pub const QUARANTINE_TAG: &str = "pw-quarantine";
/// The tag on every object and rule pivotwatch drafts.
pub const DRAFT_TAG: &str = "pivotwatch";
/// Device types that are medical equipment: a quarantine keeps their clinical traffic.
const MEDICAL: [&str; 3] = ["Infusion Pump", "Patient Monitor", "Imaging Modality"];
/// At most this many Internet addresses are allowed by address for one group.
const MAX_EXTERNAL: usize = 8;
/// Unknown internal hosts of one /24 that make the subnet the destination.
const CIDR_HOSTS: usize = 3;

/// An inventoried device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub ip: IpAddr,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub model: String,
    pub segment: String,
    pub criticality: String,
    /// A server (by segment or type): rules name it by address, not by group.
    pub server: bool,
    /// The peer group key, as detection writes it (see `Fleet::new`).
    pub peer_group: String,
}

impl Host {
    /// The peer group key.
    pub fn group(&self) -> String {
        self.peer_group.clone()
    }

    pub fn medical(&self) -> bool {
        MEDICAL.contains(&self.kind.as_str())
    }
}

/// The inventory by address.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    pub hosts: BTreeMap<IpAddr, Host>,
}

impl Fleet {
    /// A fleet whose peer groups are keyed as detection keys them: device type, model
    /// and segment, falling back to type and model, then type, for groups smaller
    /// than three.
    pub fn new(hosts: Vec<Host>) -> Fleet {
        let parts = |h: &Host, len: usize| -> String {
            [h.kind.as_str(), h.model.as_str(), h.segment.as_str()][..len]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let mut keys: Vec<Option<String>> = vec![None; hosts.len()];
        for len in (1..=3).rev() {
            let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
            for (h, key) in hosts.iter().zip(&keys) {
                if key.is_none() {
                    *sizes.entry(parts(h, len)).or_default() += 1;
                }
            }
            for (h, key) in hosts.iter().zip(keys.iter_mut()) {
                if key.is_none() && (sizes[&parts(h, len)] >= 3 || len == 1) {
                    *key = Some(parts(h, len));
                }
            }
        }
        let hosts = hosts
            .into_iter()
            .zip(keys)
            .map(|(mut h, key)| {
                h.peer_group = key.unwrap_or_default();
                (h.ip, h)
            })
            .collect();
        Fleet { hosts }
    }

    /// Group key → member addresses.
    pub fn groups(&self) -> BTreeMap<String, Vec<IpAddr>> {
        let mut groups: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for host in self.hosts.values() {
            groups.entry(host.group()).or_default().push(host.ip);
        }
        groups
    }

    /// The group whose key matches `key` (case-insensitive); else the union of the
    /// groups whose keys hold its parts in order (`Infusion Pump / clinical-devices`
    /// takes every pump model of that segment, `PLC` every PLC); else an error listing
    /// the groups.
    pub fn group(&self, key: &str) -> Result<(String, Vec<IpAddr>), String> {
        let groups = self.groups();
        if let Some((k, v)) = groups.iter().find(|(k, _)| k.eq_ignore_ascii_case(key.trim())) {
            return Ok((k.clone(), v.clone()));
        }
        let split =
            |k: &str| -> Vec<String> { k.split(" / ").map(|p| p.trim().to_string()).collect() };
        let wanted = split(key);
        let mut canonical: Option<Vec<String>> = None;
        let mut members = Vec::new();
        for (k, ips) in &groups {
            let have = split(k);
            let mut at = 0;
            let mut matched = Vec::new();
            for part in &have {
                if at < wanted.len() && part.eq_ignore_ascii_case(&wanted[at]) {
                    matched.push(part.clone());
                    at += 1;
                }
            }
            if at == wanted.len() && !wanted.iter().all(String::is_empty) {
                canonical.get_or_insert(matched);
                members.extend(ips.iter().copied());
            }
        }
        match canonical {
            Some(parts) => Ok((parts.join(" / "), members)),
            None => Err(format!(
                "no peer group {key:?}; the groups are: {}",
                groups.keys().cloned().collect::<Vec<_>>().join("; ")
            )),
        }
    }

    /// The group a phrase names: an exact key, else the group whose key shares the most
    /// words with it ("infusion pumps" → "Infusion Pump / clinical-devices").
    pub fn best_group(&self, phrase: &str) -> Result<String, String> {
        if let Ok((key, _)) = self.group(phrase) {
            return Ok(key);
        }
        let words = |text: &str| -> BTreeSet<String> {
            text.to_ascii_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| w.len() > 2)
                .map(|w| w.trim_end_matches('s').to_string())
                .collect()
        };
        let asked = words(phrase);
        let mut scored: Vec<(usize, String)> = self
            .groups()
            .into_keys()
            .map(|key| (words(&key).intersection(&asked).count(), key))
            .filter(|(n, _)| *n > 0)
            .collect();
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        let best = scored
            .first()
            .map(|s| s.0)
            .ok_or_else(|| format!("no peer group matches {phrase:?}"))?;
        let tied: Vec<&String> = scored.iter().filter(|s| s.0 == best).map(|s| &s.1).collect();
        if tied.len() == 1 {
            return Ok(tied[0].clone());
        }
        // Several models of one type: the type's groups together.
        let kinds: BTreeSet<&str> =
            tied.iter().map(|k| k.split(" / ").next().unwrap_or("")).collect();
        match kinds.into_iter().collect::<Vec<_>>().as_slice() {
            [kind] => Ok((*kind).to_string()),
            _ => Err(format!(
                "{phrase:?} could be {}; name the group",
                tied.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" or ")
            )),
        }
    }

    /// A device by address, asset name or asset id.
    pub fn find(&self, device: &str) -> Option<&Host> {
        let device = device.trim();
        match device.parse::<IpAddr>() {
            Ok(ip) => self.hosts.get(&ip),
            Err(_) => self
                .hosts
                .values()
                .find(|h| h.name.eq_ignore_ascii_case(device) || h.id.eq_ignore_ascii_case(device)),
        }
    }
}

/// Traffic between two addresses on one service over a period, as the firewall log
/// aggregates it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    pub port: u16,
    /// The App-ID the firewall would name, when the service is known.
    pub app: Option<String>,
    pub sessions: u64,
    pub bytes: u64,
    /// Days it was seen on.
    pub days: u32,
}

/// The PAN-OS App-ID for a service as the telemetry names it; `None` where the
/// firewall's name is not a plain mapping (the rule then allows the port for any
/// application).
pub fn app_id(service: &str) -> Option<&'static str> {
    Some(match service {
        "dns" => "dns",
        "ssl" => "ssl",
        "http" => "web-browsing",
        "ssh" => "ssh",
        "ntp" => "ntp",
        "dhcp" => "dhcp",
        "smb" => "ms-ds-smb",
        "rdp" => "ms-rdp",
        "telnet" => "telnet",
        "snmp" => "snmp",
        "ftp" => "ftp",
        "smtp" => "smtp",
        "modbus" => "modbus",
        "dnp3" => "dnp3",
        "bacnet" => "bacnet",
        "dicom" => "dicom",
        "rtsp" => "rtsp",
        "syslog" => "syslog",
        _ => return None,
    })
}

fn is_internal(ip: &IpAddr) -> bool {
    crate::model::is_internal(ip)
}

/// An address object's value: one host or a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    pub fn host(addr: IpAddr) -> Net {
        Net { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } }
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
                u32::from(net) & mask == u32::from(*ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                u128::from(net) & mask == u128::from(*ip) & mask
            }
            _ => false,
        }
    }

    /// Whether every address of `other` is in this one.
    pub fn covers(&self, other: &Net) -> bool {
        self.prefix <= other.prefix && self.contains(&other.addr)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A rule's source or destination: `any`, or address objects and groups by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// Empty means `any`.
    pub members: Vec<String>,
    /// `negate-source` / `negate-destination`.
    #[serde(default)]
    pub negate: bool,
}

impl Side {
    fn any() -> Side {
        Side::default()
    }

    fn of(name: &str) -> Side {
        Side { members: vec![name.to_string()], negate: false }
    }
}

/// A port on a protocol; a service object `pw-<proto>-<port>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Port {
    pub proto: String,
    pub port: u16,
}

impl Port {
    pub fn object_name(&self) -> String {
        format!("pw-{}-{}", self.proto, self.port)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Allow,
    Deny,
}

/// One security rule of a draft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub source: Side,
    pub destination: Side,
    /// Empty means `any`.
    pub applications: Vec<String>,
    /// Empty means `any`.
    pub services: Vec<Port>,
    pub action: RuleAction,
    pub description: String,
}

/// The objects a draft's rules name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Objects {
    /// Address objects.
    pub addresses: BTreeMap<String, Net>,
    /// Static address groups: name → member address objects.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Dynamic address groups: name → the tag their filter matches.
    pub dynamic_groups: BTreeMap<String, String>,
    pub services: BTreeSet<Port>,
    pub tags: BTreeSet<String>,
}

/// A drafted policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    /// `group` or `quarantine`.
    pub kind: String,
    /// The group key, or the quarantined device.
    pub subject: String,
    pub objects: Objects,
    /// In rulebase order: allows first, then the denies.
    pub rules: Vec<Rule>,
    /// Addresses each dynamic group holds once the tag is registered (for replay).
    pub tagged: BTreeMap<String, Vec<IpAddr>>,
    /// The addresses the draft is about (the group's members, or the device).
    pub scope: Vec<IpAddr>,
    pub warnings: Vec<String>,
}

/// PAN-OS accepts object and rule names of at most 63 characters that start with a
/// letter, digit or underscore and hold only letters, digits, `_`, `-`, `.` and spaces.
pub fn valid_name(name: &str) -> Result<(), String> {
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.is_empty() || name.chars().count() > 63 || !first_ok {
        return Err(format!(
            "{name:?}: a PAN-OS name has 1 to 63 characters and starts with a letter, digit or _"
        ));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-. ".contains(*c))) {
        return Err(format!("{name:?}: {bad:?} is not allowed in a PAN-OS name"));
    }
    Ok(())
}

/// Lower-case letters, digits and single hyphens.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// `name` cut to PAN-OS's 63 characters, a short hash of the whole keeping cut names
/// apart.
pub fn fit(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    use sha2::Digest;
    let hash: String =
        sha2::Sha256::digest(name.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hash}", name[..54].trim_end_matches('-'))
}

fn group_object(key: &str) -> String {
    fit(&format!("pw-g-{}", slug(key)))
}

fn host_object(host: &Host) -> String {
    fit(&format!("pw-h-{}", slug(&host.name)))
}

fn addr_object(ip: &IpAddr) -> String {
    fit(&format!("pw-a-{ip}").replace(':', "."))
}

fn cidr_object(net: &Net) -> String {
    fit(&format!("pw-n-{}-{}", net.addr, net.prefix).replace(':', "."))
}

/// The destination (or source) a conversation's far end is written as.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Far {
    /// An inventoried device group (not a server).
    Group(String),
    Host(IpAddr),
    Subnet(Net),
    External(IpAddr),
}

fn slash24(ip: &IpAddr) -> Option<Net> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(Net { addr: IpAddr::from([o[0], o[1], o[2], 0]), prefix: 24 })
        }
        IpAddr::V6(_) => None,
    }
}

struct Builder<'a> {
    fleet: &'a Fleet,
    objects: Objects,
    rules: Vec<Rule>,
    names: BTreeSet<String>,
}

impl Builder<'_> {
    fn rule_name(&mut self, base: &str) -> String {
        let mut name = fit(base);
        let mut n = 2;
        while self.names.contains(&name) {
            name = fit(&format!("{base}-{n}"));
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// The closing rules: a logged deny of everything else `object` sends, then of
    /// everything else sent to it.
    fn deny_both_ways(&mut self, prefix: &str, object: &str, what: &str) {
        for (suffix, source, destination, text) in [
            ("deny-out", Side::of(object), Side::any(), format!("everything else {what} sends")),
            ("deny-in", Side::any(), Side::of(object), format!("everything else sent to {what}")),
        ] {
            let name = self.rule_name(&format!("{prefix}-{suffix}"));
            self.rules.push(Rule {
                name,
                source,
                destination,
                applications: Vec::new(),
                services: Vec::new(),
                action: RuleAction::Deny,
                description: format!("Denies and logs {text}"),
            });
        }
    }

    /// The object a far end is named by, created as needed.
    fn object(&mut self, far: &Far) -> String {
        match far {
            Far::Group(key) => {
                let name = group_object(key);
                if !self.objects.groups.contains_key(&name) {
                    let mut members = Vec::new();
                    let ips = self.fleet.group(key).map(|(_, ips)| ips).unwrap_or_default();
                    for host in ips.iter().filter_map(|ip| self.fleet.hosts.get(ip)) {
                        let object = host_object(host);
                        self.objects.addresses.insert(object.clone(), Net::host(host.ip));
                        members.push(object);
                    }
                    self.objects.groups.insert(name.clone(), members);
                }
                name
            }
            Far::Host(ip) => {
                let name = match self.fleet.hosts.get(ip) {
                    Some(host) => host_object(host),
                    None => addr_object(ip),
                };
                self.objects.addresses.insert(name.clone(), Net::host(*ip));
                name
            }
            Far::External(ip) => {
                let name = addr_object(ip);
                self.objects.addresses.insert(name.clone(), Net::host(*ip));
                name
            }
            Far::Subnet(net) => {
                let name = cidr_object(net);
                self.objects.addresses.insert(name.clone(), *net);
                name
            }
        }
    }

    fn far_label(&self, far: &Far) -> String {
        match far {
            Far::Group(key) => key.clone(),
            Far::Host(ip) => self.fleet.hosts.get(ip).map_or(ip.to_string(), |h| h.name.clone()),
            Far::External(ip) => ip.to_string(),
            Far::Subnet(net) => net.to_string(),
        }
    }
}

/// How the far ends of a group's conversations are summarised, and which cannot be
/// allowed (unstable or too many Internet addresses).
fn summarise_far(
    fleet: &Fleet,
    members: &BTreeSet<IpAddr>,
    group_key: &str,
    far_ends: &[(IpAddr, &Conversation)],
    baseline_days: u32,
) -> (BTreeMap<IpAddr, Far>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut notes = Vec::new();
    // Unknown internal hosts per /24 and Internet addresses with the days seen.
    let mut subnets: BTreeMap<Net, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut external: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for (ip, conv) in far_ends {
        if members.contains(ip) {
            out.insert(*ip, Far::Group(group_key.to_string()));
        } else if let Some(host) = fleet.hosts.get(ip) {
            out.insert(*ip, if host.server { Far::Host(*ip) } else { Far::Group(host.group()) });
        } else if is_internal(ip) {
            match slash24(ip) {
                Some(net) => {
                    subnets.entry(net).or_default().insert(*ip);
                }
                None => {
                    out.insert(*ip, Far::Host(*ip));
                }
            }
        } else {
            let days = external.entry(*ip).or_default();
            *days = (*days).max(conv.days);
        }
    }
    for (net, hosts) in subnets {
        for ip in &hosts {
            let far = if hosts.len() >= CIDR_HOSTS { Far::Subnet(net) } else { Far::Host(*ip) };
            out.insert(*ip, far);
        }
    }
    let stable_days = baseline_days.div_ceil(2).max(1);
    let stable: Vec<IpAddr> =
        external.iter().filter(|(_, d)| **d >= stable_days).map(|(ip, _)| *ip).collect();
    if stable.len() <= MAX_EXTERNAL {
        for ip in &stable {
            out.insert(*ip, Far::External(*ip));
        }
    } else {
        notes.push(format!(
            "{} Internet addresses are too many to allow one by one; their traffic is denied",
            stable.len()
        ));
    }
    let unstable = external.len() - stable.len().min(external.len());
    if unstable > 0 && stable.len() <= MAX_EXTERNAL {
        notes.push(format!(
            "{unstable} Internet address(es) seen on fewer than {stable_days} of {baseline_days} baseline days are not allowed"
        ));
    }
    (out, notes)
}

/// Drafts least-privilege rules for one peer group from its baseline conversations.
pub fn draft_group(
    fleet: &Fleet,
    group_key: &str,
    baseline: &[Conversation],
    baseline_days: u32,
) -> Result<Draft, String> {
    let (key, members) = fleet.group(group_key)?;
    let members: BTreeSet<IpAddr> = members.into_iter().collect();
    let mut builder =
        Builder { fleet, objects: Objects::default(), rules: Vec::new(), names: BTreeSet::new() };
    builder.objects.tags.insert(DRAFT_TAG.to_string());
    let own = builder.object(&Far::Group(key.clone()));
    let gslug = slug(&key);
    let mut warnings = Vec::new();

    for outbound in [true, false] {
        let relevant: Vec<&Conversation> = baseline
            .iter()
            .filter(|c| {
                if outbound {
                    members.contains(&c.src)
                } else {
                    members.contains(&c.dst) && !members.contains(&c.src)
                }
            })
            .collect();
        let far_ends: Vec<(IpAddr, &Conversation)> =
            relevant.iter().map(|c| (if outbound { c.dst } else { c.src }, *c)).collect();
        let (far_of, notes) = summarise_far(fleet, &members, &key, &far_ends, baseline_days);
        warnings.extend(
            notes
                .into_iter()
                .map(|n| format!("{}: {n}", if outbound { "outbound" } else { "inbound" })),
        );
        // One rule per far end and application, with the ports seen.
        let mut grouped: BTreeMap<(Far, Option<String>), (BTreeSet<Port>, u64)> = BTreeMap::new();
        for conv in &relevant {
            let far_ip = if outbound { conv.dst } else { conv.src };
            let Some(far) = far_of.get(&far_ip) else { continue };
            let entry = grouped.entry((far.clone(), conv.app.clone())).or_default();
            entry.0.insert(Port { proto: conv.proto.clone(), port: conv.port });
            entry.1 += conv.sessions;
        }
        for ((far, app), (ports, sessions)) in grouped {
            let object = builder.object(&far);
            let label = builder.far_label(&far);
            let base = if outbound {
                format!("pw-{gslug}-to-{}", slug(&label))
            } else {
                format!("pw-{gslug}-from-{}", slug(&label))
            };
            let name = builder.rule_name(&format!("{base}-{}", app.as_deref().unwrap_or("port")));
            for port in &ports {
                builder.objects.services.insert(port.clone());
            }
            let (source, destination) = if outbound {
                (Side::of(&own), Side::of(&object))
            } else {
                (Side::of(&object), Side::of(&own))
            };
            builder.rules.push(Rule {
                name,
                source,
                destination,
                applications: app.into_iter().collect(),
                services: ports.into_iter().collect(),
                action: RuleAction::Allow,
                description: format!(
                    "{} {label}: {sessions} sessions in the baseline",
                    if outbound { "to" } else { "from" }
                ),
            });
        }
    }
    builder.deny_both_ways(&format!("pw-{gslug}"), &own, "the group");
    Ok(Draft {
        kind: "group".into(),
        subject: key,
        objects: builder.objects,
        rules: builder.rules,
        tagged: BTreeMap::new(),
        scope: members.into_iter().collect(),
        warnings,
    })
}

/// Drafts the quarantine of one device: the dynamic group its tag puts it in, what it
/// keeps (a medical device keeps its clinical servers), and denies both ways.
pub fn draft_quarantine(
    fleet: &Fleet,
    device: &str,
    baseline: &[Conversation],
) -> Result<Draft, String> {
    let host =
        fleet.find(device).ok_or_else(|| format!("{device} is not in the inventory"))?.clone();
    let mut builder =
        Builder { fleet, objects: Objects::default(), rules: Vec::new(), names: BTreeSet::new() };
    builder.objects.tags.insert(DRAFT_TAG.to_string());
    builder.objects.tags.insert(QUARANTINE_TAG.to_string());
    let dag = fit(&format!("pw-dag-{QUARANTINE_TAG}"));
    builder.objects.dynamic_groups.insert(dag.clone(), QUARANTINE_TAG.to_string());
    let mut warnings = Vec::new();
    let critical_care = host.medical() || host.criticality == "critical";
    if critical_care {
        // Its clinical servers: the inventoried servers it talked to, by sessions.
        let mut servers: BTreeMap<IpAddr, (BTreeSet<Port>, BTreeSet<String>, u64)> =
            BTreeMap::new();
        for conv in baseline.iter().filter(|c| c.src == host.ip) {
            if fleet.hosts.get(&conv.dst).is_some_and(|h| h.server) {
                let entry = servers.entry(conv.dst).or_default();
                entry.0.insert(Port { proto: conv.proto.clone(), port: conv.port });
                if let Some(app) = &conv.app {
                    entry.1.insert(app.clone());
                }
                entry.2 += conv.sessions;
            }
        }
        let top = servers.iter().max_by_key(|(_, v)| v.2).map(|(ip, _)| *ip);
        if let Some(server_ip) = top {
            let (ports, apps, sessions) = servers.remove(&server_ip).unwrap_or_default();
            let device_object = builder.object(&Far::Host(host.ip));
            let server_object = builder.object(&Far::Host(server_ip));
            let server_name = builder.far_label(&Far::Host(server_ip));
            for port in &ports {
                builder.objects.services.insert(port.clone());
            }
            let name = builder.rule_name(&format!(
                "pw-q-{}-keep-{}",
                slug(&host.name),
                slug(&server_name)
            ));
            let ports_text: Vec<String> =
                ports.iter().map(|p| format!("{}/{}", p.proto, p.port)).collect();
            builder.rules.push(Rule {
                name,
                source: Side::of(&device_object),
                destination: Side::of(&server_object),
                applications: apps.into_iter().collect(),
                services: ports.into_iter().collect(),
                action: RuleAction::Allow,
                description: format!("Keeps {}'s clinical traffic to {server_name} ({sessions} sessions in the baseline)", host.name),
            });
            warnings.push(format!(
                "{} is critical care equipment ({}, criticality {}): the quarantine keeps only its traffic to {server_name} ({}); confirm with the clinical engineering team before it is applied",
                host.name,
                host.kind,
                host.criticality,
                ports_text.join(", ")
            ));
        } else {
            warnings.push(format!(
                "{} is critical care equipment ({}, criticality {}) and talked to no inventoried server in the baseline: the quarantine cuts it off entirely",
                host.name, host.kind, host.criticality
            ));
        }
    }
    builder.deny_both_ways("pw-quarantine", &dag, "a quarantined device");
    let mut tagged = BTreeMap::new();
    tagged.insert(dag, vec![host.ip]);
    Ok(Draft {
        kind: "quarantine".into(),
        subject: format!("{} ({})", host.name, host.ip),
        objects: builder.objects,
        rules: builder.rules,
        tagged,
        scope: vec![host.ip],
        warnings,
    })
}

/// The addresses a side's members stand for.
fn resolve(draft: &Draft, side: &Side) -> Vec<Net> {
    let mut nets = Vec::new();
    for member in &side.members {
        if let Some(net) = draft.objects.addresses.get(member) {
            nets.push(*net);
        } else if let Some(members) = draft.objects.groups.get(member) {
            nets.extend(members.iter().filter_map(|m| draft.objects.addresses.get(m)).copied());
        } else if let Some(ips) = draft.tagged.get(member) {
            nets.extend(ips.iter().map(|ip| Net::host(*ip)));
        }
    }
    nets
}

fn side_matches(draft: &Draft, side: &Side, ip: &IpAddr) -> bool {
    if side.members.is_empty() {
        return true;
    }
    resolve(draft, side).iter().any(|n| n.contains(ip)) != side.negate
}

/// The first rule of the draft a conversation hits, if any.
pub fn first_match<'a>(draft: &'a Draft, conv: &Conversation) -> Option<&'a Rule> {
    draft.rules.iter().find(|rule| {
        side_matches(draft, &rule.source, &conv.src)
            && side_matches(draft, &rule.destination, &conv.dst)
            && (rule.services.is_empty()
                || rule.services.iter().any(|p| p.proto == conv.proto && p.port == conv.port))
            && (rule.applications.is_empty()
                || conv.app.as_ref().is_some_and(|a| rule.applications.contains(a)))
    })
}

/// What one rule would have seen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleImpact {
    pub rule: String,
    pub action: Option<RuleAction>,
    pub baseline_sessions: u64,
    pub later_sessions: u64,
    pub later_conversations: u64,
}

/// A draft replayed over what was observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    pub rules: Vec<RuleImpact>,
    /// Baseline conversations the draft would have blocked (ideally none).
    pub baseline_blocked: Vec<Conversation>,
    /// Later conversations it would have blocked: new behaviour, attacks among it.
    pub later_blocked: Vec<Conversation>,
    /// Allow rules nothing used, in either period: wider than the traffic needs.
    pub unused: Vec<String>,
}

/// Replays the baseline and a later period through the draft. Only conversations
/// that touch the draft's scope are counted.
pub fn simulate(draft: &Draft, baseline: &[Conversation], later: &[Conversation]) -> Impact {
    let scope: BTreeSet<IpAddr> = draft.scope.iter().copied().collect();
    let mut per_rule: BTreeMap<String, RuleImpact> = draft
        .rules
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                RuleImpact { rule: r.name.clone(), action: Some(r.action), ..Default::default() },
            )
        })
        .collect();
    let mut impact = Impact::default();
    for (period, convs) in [(0, baseline), (1, later)] {
        for conv in convs.iter().filter(|c| scope.contains(&c.src) || scope.contains(&c.dst)) {
            let rule = first_match(draft, conv);
            if let Some(rule) = rule
                && let Some(entry) = per_rule.get_mut(&rule.name)
            {
                if period == 0 {
                    entry.baseline_sessions += conv.sessions;
                } else {
                    entry.later_sessions += conv.sessions;
                    entry.later_conversations += 1;
                }
            }
            let blocked = rule.is_none_or(|r| r.action == RuleAction::Deny);
            if blocked {
                if period == 0 {
                    impact.baseline_blocked.push(conv.clone());
                } else {
                    impact.later_blocked.push(conv.clone());
                }
            }
        }
    }
    impact.later_blocked.sort_by_key(|c| std::cmp::Reverse(c.sessions));
    impact.rules = draft.rules.iter().filter_map(|r| per_rule.remove(&r.name)).collect();
    impact.unused = impact
        .rules
        .iter()
        .filter(|r| {
            r.action == Some(RuleAction::Allow) && r.baseline_sessions == 0 && r.later_sessions == 0
        })
        .map(|r| r.rule.clone())
        .collect();
    impact
}

// ---- a whole draft from the tenant -------------------------------------------------

/// What to draft: a peer group's policy, or one device's quarantine.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    Group(String),
    Quarantine(String),
}

/// A draft with its replay over the tenant's traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub draft: Draft,
    pub impact: Impact,
    /// RFC 3339 bounds of the baseline and of the period after it.
    pub baseline: (String, String),
    pub later: (String, String),
    pub baseline_days: u32,
    /// Conversations touching the draft's scope in each period.
    pub baseline_conversations: usize,
    pub later_conversations: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<panos::Diff>,
}

/// Drafts from the tenant's inventory and firewall log. The baseline ends at
/// `baseline_until` (Unix seconds), by default halfway through the log; what follows
/// is the later period the draft is replayed over.
pub async fn draft_from_tenant(
    xdr: &dyn Xdr,
    subject: &Subject,
    baseline_until: Option<f64>,
) -> Result<(Report, Vec<Conversation>), String> {
    draft_for_fleet(xdr, &fleet(xdr).await?, subject, baseline_until).await
}

/// `draft_from_tenant` for a caller that has read the inventory already.
pub async fn draft_for_fleet(
    xdr: &dyn Xdr,
    fleet: &Fleet,
    subject: &Subject,
    baseline_until: Option<f64>,
) -> Result<(Report, Vec<Conversation>), String> {
    let (first, last) = span(xdr).await?;
    let until = baseline_until.unwrap_or(first + (last - first) / 2.0);
    if until <= first || until > last {
        return Err(format!(
            "the baseline must end inside the log, which runs from {} to {}",
            crate::timefmt::rfc3339(first),
            crate::timefmt::rfc3339(last)
        ));
    }
    let (from, mid, to) = (
        crate::timefmt::rfc3339(first.floor()),
        crate::timefmt::rfc3339(until),
        crate::timefmt::rfc3339(last.ceil() + 1.0),
    );
    let baseline = conversations(xdr, &from, &mid).await?;
    let later = conversations(xdr, &mid, &to).await?;
    let baseline_days = (((until - first) / 86_400.0).ceil() as u32).max(1);
    let draft = match subject {
        Subject::Group(key) => draft_group(fleet, key, &baseline, baseline_days)?,
        Subject::Quarantine(device) => draft_quarantine(fleet, device, &baseline)?,
    };
    panos::check_names(&draft)?;
    let impact = simulate(&draft, &baseline, &later);
    let scope: BTreeSet<IpAddr> = draft.scope.iter().copied().collect();
    let touching = |c: &&Conversation| scope.contains(&c.src) || scope.contains(&c.dst);
    let report = Report {
        baseline_conversations: baseline.iter().filter(touching).count(),
        later_conversations: later.iter().filter(touching).count(),
        draft,
        impact,
        baseline: (from, mid.clone()),
        later: (mid, to),
        baseline_days,
        diff: None,
    };
    Ok((report, baseline))
}

/// The approvals a draft needs: its objects, then its rules (each set, then committed,
/// by the `panos_config_change` action), and for a quarantine the tag on the device.
pub fn proposals(
    draft: &Draft,
    fleet_host: Option<&Host>,
    target: &crate::actions::kinds::PanosTarget,
) -> Result<Vec<(crate::actions::Action, String)>, String> {
    use crate::actions::Action;
    let (objects, rules) = panos::config_sets(draft, target);
    let mut out = vec![
        (
            Action::PanosConfigChange { target: target.clone(), sets: objects },
            format!(
                "Address objects, groups, services and tags for the {} draft of {}",
                draft.kind, draft.subject
            ),
        ),
        (
            Action::PanosConfigChange { target: target.clone(), sets: rules },
            format!(
                "{} security rules drafted for {} from observed traffic",
                draft.rules.len(),
                draft.subject
            ),
        ),
    ];
    if draft.kind == "quarantine" {
        let host = fleet_host.ok_or("a quarantine needs its device")?;
        let criticality = serde_json::from_value(Value::String(host.criticality.clone()))
            .unwrap_or(crate::model::Criticality::Medium);
        out.push((
            Action::QuarantineDevice {
                device_id: host.id.clone(),
                ip: host.ip,
                tag: QUARANTINE_TAG.to_string(),
                timeout_secs: 3600,
                criticality,
            },
            format!(
                "Tag {} ({}) so the quarantine group and its rules apply to it",
                host.name, host.ip
            ),
        ));
    }
    Ok(out)
}

// ---- reading the tenant ------------------------------------------------------------

fn text(row: &Row, field: &str) -> String {
    match row.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            items.first().and_then(Value::as_str).unwrap_or_default().to_string()
        }
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The inventory as the tenant's `asset_inventory` holds it.
pub async fn fleet(xdr: &dyn Xdr) -> Result<Fleet, String> {
    let rows = xdr
        .run_xql(&XqlRequest::new(
            "dataset = asset_inventory | fields xdm.asset.id, xdm.asset.name, xdm.asset.type.name, \
             xdm.asset.model, xdm.asset.ipv4_addresses, xdm.asset.segment, xdm.asset.criticality",
        ))
        .await
        .map_err(|err| format!("reading the inventory: {err}"))?
        .rows;
    let mut hosts = Vec::new();
    for row in &rows {
        let Ok(ip) = text(row, "xdm.asset.ipv4_addresses").parse::<IpAddr>() else { continue };
        let kind = text(row, "xdm.asset.type.name");
        let segment = text(row, "xdm.asset.segment");
        let server = segment.to_ascii_lowercase().contains("server")
            || ["Server", "Station", "Host", "PACS", "NVR"].iter().any(|w| kind.ends_with(w));
        let id = text(row, "xdm.asset.id");
        let name = text(row, "xdm.asset.name");
        hosts.push(Host {
            ip,
            name: if name.is_empty() { id.clone() } else { name },
            id,
            kind: if kind.is_empty() { "unknown".into() } else { kind },
            model: text(row, "xdm.asset.model"),
            segment,
            criticality: text(row, "xdm.asset.criticality"),
            server,
            peer_group: String::new(),
        });
    }
    let fleet = Fleet::new(hosts);
    if fleet.hosts.is_empty() {
        return Err("the tenant's asset inventory is empty".into());
    }
    Ok(fleet)
}

/// The firewall log's conversations between two times (RFC 3339), with the days each
/// was seen on.
pub async fn conversations(
    xdr: &dyn Xdr,
    from: &str,
    to: &str,
) -> Result<Vec<Conversation>, String> {
    let query = format!(
        "config timeframe between \"{from}\" and \"{to}\" | dataset = panw_ngfw_traffic_raw \
         | bin _time span = 1d | comp count() as sessions, sum(bytes_sent) as bytes, \
         count_distinct(_time) as days by source_ip, dest_ip, dest_port, protocol, app"
    );
    let rows = xdr
        .run_xql(&XqlRequest::new(query))
        .await
        .map_err(|err| format!("reading the firewall log: {err}"))?
        .rows;
    let number = |row: &Row, field: &str| row.get(field).and_then(Value::as_u64).unwrap_or(0);
    let mut out = Vec::new();
    for row in &rows {
        let (Ok(src), Ok(dst)) = (text(row, "source_ip").parse(), text(row, "dest_ip").parse())
        else {
            continue;
        };
        let app = text(row, "app");
        out.push(Conversation {
            src,
            dst,
            proto: text(row, "protocol").to_ascii_lowercase(),
            port: u16::try_from(number(row, "dest_port")).unwrap_or(0),
            app: app_id(&app).map(str::to_string),
            sessions: number(row, "sessions"),
            bytes: number(row, "bytes"),
            days: u32::try_from(number(row, "days")).unwrap_or(u32::MAX),
        });
    }
    out.sort_by(|a, b| (a.src, a.dst, &a.proto, a.port).cmp(&(b.src, b.dst, &b.proto, b.port)));
    Ok(out)
}

/// The first and last time (Unix seconds) of the firewall log.
pub async fn span(xdr: &dyn Xdr) -> Result<(f64, f64), String> {
    let rows = xdr
        .run_xql(&XqlRequest::new(
            "dataset = panw_ngfw_traffic_raw | comp min(_time) as first, max(_time) as last",
        ))
        .await
        .map_err(|err| format!("reading the firewall log: {err}"))?
        .rows;
    let row = rows.first().ok_or("the firewall log is empty")?;
    let ms = |f: &str| {
        row.get(f)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("the firewall log has no {f} time"))
    };
    Ok((ms("first")? / 1000.0, ms("last")? / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_long_ones_fit() {
        assert!(valid_name("pw-g-infusion-pump-clinical-devices").is_ok());
        assert!(valid_name("-starts-with-hyphen").is_err());
        assert!(valid_name("has/slash").is_err());
        assert!(valid_name(&"x".repeat(64)).is_err());
        let long = fit(&format!("pw-{}", "a".repeat(80)));
        assert!(long.len() <= 63 && valid_name(&long).is_ok());
        assert_ne!(fit(&format!("pw-{}", "a".repeat(80))), fit(&format!("pw-{}b", "a".repeat(80))));
        assert_eq!(slug("Infusion Pump / clinical-devices"), "infusion-pump-clinical-devices");
    }

    #[test]
    fn prefixes_contain_and_cover() {
        let net = Net { addr: "10.20.1.0".parse().unwrap(), prefix: 24 };
        assert!(net.contains(&"10.20.1.77".parse().unwrap()));
        assert!(!net.contains(&"10.20.2.1".parse().unwrap()));
        assert!(net.covers(&Net::host("10.20.1.9".parse().unwrap())));
        assert!(!Net::host("10.20.1.9".parse().unwrap()).covers(&net));
    }
}
