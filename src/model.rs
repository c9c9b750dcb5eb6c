//! Plain domain types shared by every other module: devices and their inventory, network
//! flows, peer-group keys, criticality and detection findings.
//!
//! Nothing here does I/O or knows how a type is read or scored; readers live in
//! `ingest`, scoring lives in `baseline`. This module depends on no other module.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a flow, as Zeek names it in `conn.log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Other,
}

impl Proto {
    pub fn parse(text: &str) -> Proto {
        match text {
            "tcp" | "TCP" => Proto::Tcp,
            "udp" | "UDP" => Proto::Udp,
            "icmp" | "ICMP" | "icmp6" => Proto::Icmp,
            _ => Proto::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Other => "other",
        }
    }
}

/// Zeek connection state (`conn_state`). The failed states matter to detection: a sweep
/// or a brute force leaves many `S0`, `REJ` and reset states behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnState {
    S0,
    S1,
    SF,
    REJ,
    S2,
    S3,
    RSTO,
    RSTR,
    RSTOS0,
    RSTRH,
    SH,
    SHR,
    OTH,
    Unknown,
}

impl ConnState {
    pub fn parse(text: &str) -> ConnState {
        match text {
            "S0" => ConnState::S0,
            "S1" => ConnState::S1,
            "SF" => ConnState::SF,
            "REJ" => ConnState::REJ,
            "S2" => ConnState::S2,
            "S3" => ConnState::S3,
            "RSTO" => ConnState::RSTO,
            "RSTR" => ConnState::RSTR,
            "RSTOS0" => ConnState::RSTOS0,
            "RSTRH" => ConnState::RSTRH,
            "SH" => ConnState::SH,
            "SHR" => ConnState::SHR,
            "OTH" => ConnState::OTH,
            _ => ConnState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::SF => "SF",
            ConnState::REJ => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::RSTO => "RSTO",
            ConnState::RSTR => "RSTR",
            ConnState::RSTOS0 => "RSTOS0",
            ConnState::RSTRH => "RSTRH",
            ConnState::SH => "SH",
            ConnState::SHR => "SHR",
            ConnState::OTH => "OTH",
            ConnState::Unknown => "-",
        }
    }

    /// A connection attempt that never carried a conversation: no answer, a refusal, or
    /// a reset before data.
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            ConnState::S0
                | ConnState::REJ
                | ConnState::RSTOS0
                | ConnState::RSTRH
                | ConnState::SH
                | ConnState::SHR
        )
    }
}

/// The application protocol Zeek recognised (`service`). Kept as a small closed set so a
/// flow stays `Copy`; anything else is `Other`, and an unset field is `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Unknown,
    Dns,
    Http,
    Ssl,
    Ssh,
    Dhcp,
    Ntp,
    Irc,
    Ftp,
    Smtp,
    Smb,
    Rdp,
    Telnet,
    Snmp,
    Modbus,
    Dnp3,
    S7comm,
    Enip,
    Bacnet,
    Dicom,
    Rtsp,
    Ipp,
    Syslog,
    Other,
}

impl Service {
    /// Parses a Zeek service field. Zeek joins several analyzers with commas
    /// (`ssl,http`); the first one names the flow.
    pub fn parse(text: &str) -> Service {
        let first = text.split(',').next().unwrap_or(text);
        match first {
            "" | "-" => Service::Unknown,
            "dns" => Service::Dns,
            "http" => Service::Http,
            "ssl" | "tls" => Service::Ssl,
            "ssh" => Service::Ssh,
            "dhcp" => Service::Dhcp,
            "ntp" => Service::Ntp,
            "irc" => Service::Irc,
            "ftp" | "ftp-data" => Service::Ftp,
            "smtp" => Service::Smtp,
            "smb" | "gssapi,smb" => Service::Smb,
            "rdp" => Service::Rdp,
            "telnet" | "login" => Service::Telnet,
            "snmp" => Service::Snmp,
            "modbus" => Service::Modbus,
            "dnp3" | "dnp3_tcp" | "dnp3_udp" => Service::Dnp3,
            "s7comm" | "cotp" => Service::S7comm,
            "enip" | "cip" => Service::Enip,
            "bacnet" => Service::Bacnet,
            "dicom" => Service::Dicom,
            "rtsp" => Service::Rtsp,
            "ipp" => Service::Ipp,
            "syslog" => Service::Syslog,
            _ => Service::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Unknown => "-",
            Service::Dns => "dns",
            Service::Http => "http",
            Service::Ssl => "ssl",
            Service::Ssh => "ssh",
            Service::Dhcp => "dhcp",
            Service::Ntp => "ntp",
            Service::Irc => "irc",
            Service::Ftp => "ftp",
            Service::Smtp => "smtp",
            Service::Smb => "smb",
            Service::Rdp => "rdp",
            Service::Telnet => "telnet",
            Service::Snmp => "snmp",
            Service::Modbus => "modbus",
            Service::Dnp3 => "dnp3",
            Service::S7comm => "s7comm",
            Service::Enip => "enip",
            Service::Bacnet => "bacnet",
            Service::Dicom => "dicom",
            Service::Rtsp => "rtsp",
            Service::Ipp => "ipp",
            Service::Syslog => "syslog",
            Service::Other => "other",
        }
    }
}

/// One network conversation in canonical form, whichever reader produced it.
///
/// Times are Unix seconds; unset counters are zero and an unset duration is `0.0`, which
/// is what every detector would assume anyway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flow {
    pub ts: f64,
    pub orig_h: IpAddr,
    pub orig_p: u16,
    pub resp_h: IpAddr,
    pub resp_p: u16,
    pub proto: Proto,
    pub service: Service,
    pub duration: f64,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    pub orig_pkts: u64,
    pub resp_pkts: u64,
    pub conn_state: ConnState,
}

/// A flow as it appears in a finding's evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub ts: String,
    pub orig_h: IpAddr,
    pub orig_p: u16,
    pub resp_h: IpAddr,
    pub resp_p: u16,
    pub proto: Proto,
    pub service: String,
    pub duration: f64,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    pub conn_state: String,
}

impl FlowRecord {
    pub fn from_flow(flow: &Flow) -> FlowRecord {
        FlowRecord {
            ts: crate::timefmt::rfc3339(flow.ts),
            orig_h: flow.orig_h,
            orig_p: flow.orig_p,
            resp_h: flow.resp_h,
            resp_p: flow.resp_p,
            proto: flow.proto,
            service: flow.service.as_str().to_string(),
            duration: (flow.duration * 1000.0).round() / 1000.0,
            orig_bytes: flow.orig_bytes,
            resp_bytes: flow.resp_bytes,
            conn_state: flow.conn_state.as_str().to_string(),
        }
    }
}

/// How much harm follows when a device is compromised or taken offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    Low,
    Medium,
    High,
    Critical,
}

impl Criticality {
    pub const ALL: [Criticality; 4] =
        [Criticality::Low, Criticality::Medium, Criticality::High, Criticality::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }
}

impl FromStr for Criticality {
    type Err = String;

    fn from_str(text: &str) -> Result<Criticality, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Criticality::Low),
            "medium" => Ok(Criticality::Medium),
            "high" => Ok(Criticality::High),
            "critical" => Ok(Criticality::Critical),
            other => Err(format!(
                "unknown criticality \"{other}\"; expected one of low, medium, high, critical"
            )),
        }
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the device inventory. Columns the inventory has beyond the standard ones
/// are kept in `tags`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub device_id: String,
    pub ip: IpAddr,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub device_type: String,
    #[serde(default)]
    pub vendor: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub firmware: String,
    #[serde(default)]
    pub segment: String,
    #[serde(default)]
    pub site: String,
    pub criticality: Criticality,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The attributes a peer group can be keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerAttr {
    DeviceType,
    Vendor,
    Model,
    Segment,
    Site,
}

impl PeerAttr {
    pub fn value(self, device: &Device) -> &str {
        match self {
            PeerAttr::DeviceType => &device.device_type,
            PeerAttr::Vendor => &device.vendor,
            PeerAttr::Model => &device.model,
            PeerAttr::Segment => &device.segment,
            PeerAttr::Site => &device.site,
        }
    }
}

impl FromStr for PeerAttr {
    type Err = String;

    fn from_str(text: &str) -> Result<PeerAttr, String> {
        match text.trim() {
            "device_type" => Ok(PeerAttr::DeviceType),
            "vendor" => Ok(PeerAttr::Vendor),
            "model" => Ok(PeerAttr::Model),
            "segment" => Ok(PeerAttr::Segment),
            "site" => Ok(PeerAttr::Site),
            other => Err(format!(
                "unknown peer-group attribute \"{other}\"; expected device_type, vendor, \
                 model, segment or site"
            )),
        }
    }
}

/// Detection severity, derived from risk: info < 20 ≤ low < 40 ≤ medium < 60 ≤ high < 80
/// ≤ critical. `High` and `Critical` are alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn from_risk(risk: f64) -> Severity {
        match risk {
            r if r >= 80.0 => Severity::Critical,
            r if r >= 60.0 => Severity::High,
            r if r >= 40.0 => Severity::Medium,
            r if r >= 20.0 => Severity::Low,
            _ => Severity::Info,
        }
    }

    pub fn is_alert(self) -> bool {
        self >= Severity::High
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(text: &str) -> Result<Severity, String> {
        Severity::ALL.into_iter().find(|s| s.as_str() == text.trim()).ok_or_else(|| {
            format!("unknown severity \"{text}\"; expected info, low, medium, high or critical")
        })
    }
}

/// Why a window was scored as it was: one deviating feature, its value in the window
/// and what the baseline expected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub feature: String,
    pub observed: serde_json::Value,
    pub baseline: serde_json::Value,
    pub detail: String,
}

/// The flows behind a finding: how many there were and a few examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub flows: u64,
    pub examples: Vec<FlowRecord>,
}

/// One scored device window, exactly the detection output contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub device_id: String,
    pub ip: IpAddr,
    pub peer_group: String,
    pub window_start: String,
    pub window_end: String,
    pub score: f64,
    pub peer_percentile: f64,
    pub risk: f64,
    pub severity: Severity,
    pub reasons: Vec<Reason>,
    pub techniques: Vec<String>,
    pub evidence: Evidence,
}

/// The device inventory with a lookup by address. Built by `ingest::inventory`, which
/// refuses duplicate addresses, so every address maps to one device.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    devices: Vec<Device>,
    by_ip: std::collections::HashMap<IpAddr, usize>,
}

impl Inventory {
    /// Builds an inventory, or names the first address two devices share.
    pub fn new(devices: Vec<Device>) -> Result<Inventory, (IpAddr, String, String)> {
        let mut by_ip = std::collections::HashMap::with_capacity(devices.len());
        for (idx, device) in devices.iter().enumerate() {
            if let Some(first) = by_ip.insert(device.ip, idx) {
                return Err((
                    device.ip,
                    devices[first].device_id.clone(),
                    device.device_id.clone(),
                ));
            }
        }
        Ok(Inventory { devices, by_ip })
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub fn index_of(&self, ip: &IpAddr) -> Option<usize> {
        self.by_ip.get(ip).copied()
    }

    pub fn by_ip(&self, ip: &IpAddr) -> Option<&Device> {
        self.index_of(ip).map(|idx| &self.devices[idx])
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// Whether an address belongs to a private, loopback, link-local or otherwise local
/// range, as opposed to the Internet.
pub fn is_internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_unspecified()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}
