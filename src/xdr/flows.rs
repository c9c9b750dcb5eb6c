//! Network rows from XQL turned into canonical `Flow`s.
//!
//! Two datasets carry network sessions: `xdr_data` network story events, seen from
//! an XDR agent's host, and `panw_ngfw_traffic_raw`, the firewall traffic log. Rows are
//! expected to be normalised (`rows::normalize_row`), but timestamps still in stream
//! text are read too.
//!
//! | `Flow` field | `xdr_data` (STORY / NETWORK) | `panw_ngfw_traffic_raw` |
//! |---|---|---|
//! | `ts` (s) | `_time`, else `event_timestamp`, else `action_network_creation_time` (ms) | `_time` (ms) |
//! | `orig_h`, `orig_p` | `action_local_ip`, `action_local_port` | `source_ip`, `source_port` |
//! | `resp_h`, `resp_p` | `action_remote_ip`, `action_remote_port` | `dest_ip`, `dest_port` |
//! | `proto` | `action_network_protocol` (`TCP`, `ENUM.TCP`, 6) | `protocol` |
//! | `service` | last of `action_app_id_transitions` | `app` |
//! | `duration` (s) | 0 | `total_time_elapsed` (s) |
//! | `orig_bytes`, `resp_bytes` | `action_total_upload`, `action_total_download` | `bytes_sent`, `bytes_received` |
//! | `orig_pkts`, `resp_pkts` | `action_pkts_sent`, `action_pkts_received` | `packets_sent`, `packets_received` |
//! | `conn_state` | `-` (unknown) | from `action` and `session_end_reason`, see `ngfw_state` |
//!
//! A story is seen from the agent's host (`local`). The `xdr_data` column above is for
//! an outgoing connection; when `action_network_is_server` is true the host accepted
//! the connection, so local and remote swap: the remote side is the originator, and
//! upload and download (and packets sent and received) count the other way.
//!
//! The address, port, protocol and time fields are required; a missing counter is 0,
//! and a missing or null `action_network_is_server` is taken as outgoing.
//!
//! The `xdr_data` names come from rows of real tenants, except
//! `action_network_is_server`, which is taken from Palo Alto's XQL schema reference
//! ("true for incoming connections, false for outgoing ones"). For the firewall dataset,
//! Palo Alto's documentation says it uses the query names of the Cortex (Strata Logging
//! Service) traffic log schema, whose reference confirms `app`, `bytes_sent`,
//! `bytes_received` and `dest_port`; `source_ip`, `dest_ip`, `source_port`,
//! `protocol`, `packets_sent`, `packets_received`, `action`, `session_end_reason` and
//! `total_time_elapsed` are assumed from the same naming and not checked against a
//! tenant. A value given as an object `{"value": ...}`, as that schema nests some
//! fields, is unwrapped.

use std::net::IpAddr;

use serde_json::Value;

use super::Row;
use super::rows::parse_stream_timestamp;
use crate::model::{ConnState, Flow, Proto, Service};

/// A flow from either dataset, told apart by its address fields.
pub fn flow_from_row(row: &Row) -> Result<Flow, String> {
    if row.contains_key("action_local_ip") {
        flow_from_story_row(row)
    } else if row.contains_key("source_ip") {
        flow_from_ngfw_row(row)
    } else {
        Err("neither action_local_ip (xdr_data) nor source_ip (panw_ngfw_traffic_raw) is present"
            .to_string())
    }
}

/// A flow from an `xdr_data` network event. The agent's host is the originator of an
/// outgoing connection and the responder of an incoming one
/// (`action_network_is_server`).
pub fn flow_from_story_row(row: &Row) -> Result<Flow, String> {
    let ts_ms = first_time(row, &["_time", "event_timestamp", "action_network_creation_time"])?;
    let local = (ip(row, "action_local_ip")?, port(row, "action_local_port")?);
    let remote = (ip(row, "action_remote_ip")?, port(row, "action_remote_port")?);
    // Bytes and packets the agent's host sent, then those it received.
    let sent = (counter(row, "action_total_upload")?, counter(row, "action_pkts_sent")?);
    let received = (counter(row, "action_total_download")?, counter(row, "action_pkts_received")?);
    let (orig, resp, from_orig, from_resp) = if flag(row, "action_network_is_server")? {
        (remote, local, received, sent)
    } else {
        (local, remote, sent, received)
    };
    Ok(Flow {
        ts: ts_ms as f64 / 1000.0,
        orig_h: orig.0,
        orig_p: orig.1,
        resp_h: resp.0,
        resp_p: resp.1,
        proto: proto(row, "action_network_protocol")?,
        service: story_service(row),
        duration: 0.0,
        orig_bytes: from_orig.0,
        resp_bytes: from_resp.0,
        orig_pkts: from_orig.1,
        resp_pkts: from_resp.1,
        conn_state: ConnState::Unknown,
    })
}

/// A flow from a `panw_ngfw_traffic_raw` row.
pub fn flow_from_ngfw_row(row: &Row) -> Result<Flow, String> {
    let ts_ms = first_time(row, &["_time"])?;
    let resp_pkts = counter(row, "packets_received")?;
    Ok(Flow {
        ts: ts_ms as f64 / 1000.0,
        orig_h: ip(row, "source_ip")?,
        orig_p: port(row, "source_port")?,
        resp_h: ip(row, "dest_ip")?,
        resp_p: port(row, "dest_port")?,
        proto: proto(row, "protocol")?,
        service: text(row, "app").map_or(Service::Unknown, app_service),
        duration: seconds(row, "total_time_elapsed")?,
        orig_bytes: counter(row, "bytes_sent")?,
        resp_bytes: counter(row, "bytes_received")?,
        orig_pkts: counter(row, "packets_sent")?,
        resp_pkts,
        conn_state: ngfw_state(text(row, "action"), text(row, "session_end_reason"), resp_pkts),
    })
}

/// The Zeek state closest to a firewall session's outcome: a denied or dropped session
/// never reached the responder (`S0`), a reset by policy is a refusal (`REJ`); an
/// allowed session is `SF` when the responder answered, `S0` when it did not, or reset
/// by one side (`RSTO`, `RSTR`).
pub fn ngfw_state(action: Option<&str>, end_reason: Option<&str>, resp_pkts: u64) -> ConnState {
    let action = action.unwrap_or("allow").to_ascii_lowercase();
    match action.as_str() {
        "deny" | "drop" | "drop-icmp" => return ConnState::S0,
        "reset-client" | "reset-server" | "reset-both" => return ConnState::REJ,
        _ => {}
    }
    match end_reason.map(str::to_ascii_lowercase).as_deref() {
        Some("tcp-rst-from-client") => ConnState::RSTO,
        Some("tcp-rst-from-server") => ConnState::RSTR,
        _ if resp_pkts == 0 => ConnState::S0,
        _ => ConnState::SF,
    }
}

/// A PAN-OS App-ID as the closest Zeek service. App-IDs are many and specific
/// (`modbus-read-coils`, `ms-ds-smbv3`); their family prefix decides.
pub fn app_service(app: &str) -> Service {
    let app = app.trim().to_ascii_lowercase();
    let families: [(&[&str], Service); 22] = [
        (&["web-browsing", "http"], Service::Http),
        (&["ssl", "tls"], Service::Ssl),
        (&["dns"], Service::Dns),
        (&["ssh"], Service::Ssh),
        (&["dhcp"], Service::Dhcp),
        (&["ntp"], Service::Ntp),
        (&["irc"], Service::Irc),
        (&["ftp"], Service::Ftp),
        (&["smtp"], Service::Smtp),
        (&["ms-ds-smb", "smb", "netbios-ss"], Service::Smb),
        (&["ms-rdp", "rdp"], Service::Rdp),
        (&["telnet"], Service::Telnet),
        (&["snmp"], Service::Snmp),
        (&["modbus"], Service::Modbus),
        (&["dnp3"], Service::Dnp3),
        (&["siemens-s7", "s7comm"], Service::S7comm),
        (&["ethernet-ip", "cip-ethernet-ip", "enip"], Service::Enip),
        (&["bacnet"], Service::Bacnet),
        (&["dicom"], Service::Dicom),
        (&["rtsp"], Service::Rtsp),
        (&["ipp"], Service::Ipp),
        (&["syslog"], Service::Syslog),
    ];
    match app.as_str() {
        "" | "not-applicable" | "incomplete" | "insufficient-data" => return Service::Unknown,
        _ => {}
    }
    families
        .iter()
        .find(|(prefixes, _)| prefixes.iter().any(|prefix| app.starts_with(prefix)))
        .map_or(Service::Other, |(_, service)| *service)
}

fn story_service(row: &Row) -> Service {
    match row.get("action_app_id_transitions") {
        Some(Value::Array(apps)) => {
            apps.iter().rev().find_map(Value::as_str).map_or(Service::Unknown, app_service)
        }
        Some(Value::String(app)) => app_service(app),
        _ => Service::Unknown,
    }
}

/// The field's value with a `{"value": ...}` wrapper removed; `None` for absent or null.
fn field<'a>(row: &'a Row, name: &str) -> Option<&'a Value> {
    let value = row.get(name)?;
    let value = match value {
        Value::Object(inner) => inner.get("value").unwrap_or(value),
        _ => value,
    };
    (!value.is_null()).then_some(value)
}

fn text<'a>(row: &'a Row, name: &str) -> Option<&'a str> {
    field(row, name).and_then(Value::as_str)
}

fn ip(row: &Row, name: &str) -> Result<IpAddr, String> {
    match field(row, name) {
        Some(Value::String(addr)) => {
            addr.trim().parse().map_err(|_| format!("{name}: {addr:?} is not an IP address"))
        }
        Some(other) => Err(format!("{name}: {other} is not an IP address")),
        None => Err(format!("{name} is missing")),
    }
}

fn port(row: &Row, name: &str) -> Result<u16, String> {
    let value = field(row, name).ok_or_else(|| format!("{name} is missing"))?;
    integer(value)
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| format!("{name}: {value} is not a port"))
}

fn counter(row: &Row, name: &str) -> Result<u64, String> {
    match field(row, name) {
        None => Ok(0),
        Some(value) => integer(value)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| format!("{name}: {value} is not a count")),
    }
}

/// A boolean field; absent or null is false. Rows not yet normalised may still carry
/// the tenant's `"TRUE"` and `"FALSE"` text.
fn flag(row: &Row, name: &str) -> Result<bool, String> {
    match field(row, name) {
        None => Ok(false),
        Some(Value::Bool(on)) => Ok(*on),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("{name}: {other} is not true or false")),
    }
}

fn seconds(row: &Row, name: &str) -> Result<f64, String> {
    match field(row, name) {
        None => Ok(0.0),
        Some(value) => number(value)
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .ok_or_else(|| format!("{name}: {value} is not a duration in seconds")),
    }
}

fn proto(row: &Row, name: &str) -> Result<Proto, String> {
    let value = field(row, name).ok_or_else(|| format!("{name} is missing"))?;
    if let Some(number) = integer(value) {
        return Ok(match number {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 | 58 => Proto::Icmp,
            _ => Proto::Other,
        });
    }
    let name_text = value.as_str().ok_or_else(|| format!("{name}: {value} is not a protocol"))?;
    let bare = name_text.trim().trim_start_matches("ENUM.").to_ascii_lowercase();
    Ok(Proto::parse(&bare))
}

/// Epoch milliseconds of the first present field, as an integer or a stream timestamp.
fn first_time(row: &Row, names: &[&str]) -> Result<i64, String> {
    for name in names {
        let Some(value) = field(row, name) else { continue };
        let millis = match value {
            Value::String(stamp) => parse_stream_timestamp(stamp),
            other => integer(other),
        };
        return millis.ok_or_else(|| format!("{name}: {value} is not a time"));
    }
    Err(format!("no time field: none of {} is present", names.join(", ")))
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Row {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test rows are objects"),
        }
    }

    /// The network story row of a real tenant quoted in the XDR research notes.
    fn story() -> Row {
        row(json!({
            "action_network_protocol": "TCP", "action_local_ip": "193.93.62.47",
            "action_remote_ip": "1.1.0.0", "action_local_port": 31029,
            "action_remote_port": 3389, "agent_id": "193.93.62.47",
            "event_id": "MTM4NTk0MDcwNDA4NDQ0MzIwNw==", "event_timestamp": 1_646_799_589_433_i64,
            "action_network_creation_time": 1_646_799_589_433_i64,
            "action_proxy": false, "event_type": "STORY", "event_sub_type": "event_sub_type_4"
        }))
    }

    #[test]
    fn a_story_row_becomes_a_flow() {
        let mut story = story();
        story.insert("action_total_upload".into(), json!(1200));
        story.insert("action_total_download".into(), json!("5400"));
        story.insert("action_pkts_sent".into(), json!(10));
        story.insert("action_app_id_transitions".into(), json!(["ssl", "ms-rdp"]));
        let flow = flow_from_row(&story).unwrap();
        assert_eq!(flow.ts, 1_646_799_589.433);
        assert_eq!(flow.orig_h.to_string(), "193.93.62.47");
        assert_eq!((flow.orig_p, flow.resp_p), (31029, 3389));
        assert_eq!(flow.resp_h.to_string(), "1.1.0.0");
        assert_eq!(flow.proto, Proto::Tcp);
        assert_eq!(flow.service, Service::Rdp);
        assert_eq!((flow.orig_bytes, flow.resp_bytes), (1200, 5400));
        assert_eq!((flow.orig_pkts, flow.resp_pkts), (10, 0));
        assert_eq!(flow.conn_state, ConnState::Unknown);
    }

    #[test]
    fn an_incoming_story_has_the_remote_side_as_originator() {
        let mut story = story();
        story.insert("action_total_upload".into(), json!(5400));
        story.insert("action_total_download".into(), json!(1200));
        story.insert("action_pkts_sent".into(), json!(7));
        story.insert("action_pkts_received".into(), json!(10));
        let outgoing = flow_from_row(&story).unwrap();

        story.insert("action_network_is_server".into(), json!(true));
        let incoming = flow_from_row(&story).unwrap();
        assert_eq!(incoming.orig_h.to_string(), "1.1.0.0");
        assert_eq!(incoming.resp_h.to_string(), "193.93.62.47");
        assert_eq!((incoming.orig_p, incoming.resp_p), (3389, 31029));
        assert_eq!((incoming.orig_bytes, incoming.resp_bytes), (1200, 5400));
        assert_eq!((incoming.orig_pkts, incoming.resp_pkts), (10, 7));
        assert_eq!((incoming.ts, incoming.proto), (outgoing.ts, outgoing.proto));

        story.insert("action_network_is_server".into(), json!("TRUE"));
        assert_eq!(flow_from_row(&story).unwrap(), incoming);
        for outward in [json!(false), json!("FALSE"), json!(null)] {
            story.insert("action_network_is_server".into(), outward);
            assert_eq!(flow_from_row(&story).unwrap(), outgoing);
        }
        story.insert("action_network_is_server".into(), json!("inbound"));
        let err = flow_from_row(&story).unwrap_err();
        assert!(err.starts_with("action_network_is_server: \"inbound\""), "{err}");
    }

    #[test]
    fn the_story_time_prefers_time_then_falls_back() {
        let mut story = story();
        story.insert("_time".into(), json!("2022-03-09 04:19:49 UTC"));
        assert_eq!(flow_from_row(&story).unwrap().ts, 1_646_799_589.0);

        story.remove("_time");
        story.remove("event_timestamp");
        assert_eq!(flow_from_row(&story).unwrap().ts, 1_646_799_589.433);

        story.remove("action_network_creation_time");
        let err = flow_from_row(&story).unwrap_err();
        assert!(err.contains("_time") && err.contains("event_timestamp"), "{err}");
    }

    #[test]
    fn missing_or_bad_required_fields_are_named() {
        let cases = [
            ("action_remote_ip", json!(null), "action_remote_ip is missing"),
            ("action_remote_ip", json!("1.1.0"), "action_remote_ip: \"1.1.0\" is not an IP"),
            ("action_local_port", json!(70000), "action_local_port: 70000 is not a port"),
            ("action_total_upload", json!(-5), "action_total_upload: -5 is not a count"),
            ("action_network_protocol", json!(true), "action_network_protocol: true"),
        ];
        for (name, value, want) in cases {
            let mut story = story();
            story.insert(name.into(), value);
            let err = flow_from_row(&story).unwrap_err();
            assert!(err.starts_with(want), "{name}: {err}");
        }
        assert!(flow_from_row(&row(json!({"x": 1}))).is_err());
    }

    #[test]
    fn protocols_may_be_names_enums_or_numbers() {
        for (value, want) in [
            (json!("UDP"), Proto::Udp),
            (json!("ENUM.TCP"), Proto::Tcp),
            (json!(17), Proto::Udp),
            (json!("icmp"), Proto::Icmp),
            (json!("sctp"), Proto::Other),
        ] {
            let mut story = story();
            story.insert("action_network_protocol".into(), value.clone());
            assert_eq!(flow_from_row(&story).unwrap().proto, want, "{value}");
        }
    }

    fn ngfw() -> Row {
        row(json!({
            "_time": 1_700_000_000_000_i64, "source_ip": "10.20.0.15", "source_port": 50432,
            "dest_ip": {"value": "10.20.9.4"}, "dest_port": 502, "protocol": "tcp",
            "app": "modbus-base", "action": "allow", "session_end_reason": "tcp-fin",
            "bytes_sent": 840, "bytes_received": 1312, "packets_sent": 9,
            "packets_received": 7, "total_time_elapsed": 3
        }))
    }

    #[test]
    fn a_firewall_traffic_row_becomes_a_flow() {
        let flow = flow_from_row(&ngfw()).unwrap();
        assert_eq!(flow.ts, 1_700_000_000.0);
        assert_eq!(flow.orig_h.to_string(), "10.20.0.15");
        assert_eq!(flow.resp_h.to_string(), "10.20.9.4");
        assert_eq!((flow.orig_p, flow.resp_p), (50432, 502));
        assert_eq!(flow.service, Service::Modbus);
        assert_eq!(flow.duration, 3.0);
        assert_eq!(
            (flow.orig_bytes, flow.resp_bytes, flow.orig_pkts, flow.resp_pkts),
            (840, 1312, 9, 7)
        );
        assert_eq!(flow.conn_state, ConnState::SF);
    }

    #[test]
    fn firewall_outcomes_map_to_zeek_states() {
        assert_eq!(ngfw_state(Some("deny"), None, 0), ConnState::S0);
        assert_eq!(ngfw_state(Some("reset-both"), None, 3), ConnState::REJ);
        assert_eq!(ngfw_state(Some("allow"), Some("tcp-rst-from-server"), 1), ConnState::RSTR);
        assert_eq!(ngfw_state(Some("allow"), Some("tcp-rst-from-client"), 1), ConnState::RSTO);
        assert_eq!(ngfw_state(Some("allow"), Some("aged-out"), 0), ConnState::S0);
        assert_eq!(ngfw_state(None, Some("aged-out"), 4), ConnState::SF);

        let mut denied = ngfw();
        denied.insert("action".into(), json!("drop"));
        assert_eq!(flow_from_row(&denied).unwrap().conn_state, ConnState::S0);
    }

    #[test]
    fn app_ids_map_to_services_by_family() {
        assert_eq!(app_service("web-browsing"), Service::Http);
        assert_eq!(app_service("ms-ds-smbv3"), Service::Smb);
        assert_eq!(app_service("bacnet-base"), Service::Bacnet);
        assert_eq!(app_service("incomplete"), Service::Unknown);
        assert_eq!(app_service("facebook-base"), Service::Other);
    }
}
