//! The replay tenant's datasets, built from flows and the inventory, and the one place
//! that says how pivotwatch's data maps onto the field names a Cortex tenant uses.
//!
//! | pivotwatch | `xdr_data` (`event_type = STORY`) | `panw_ngfw_traffic_raw` |
//! |---|---|---|
//! | flow start | `_time` | `_time` |
//! | direction | `action_network_is_server` (always `false`, see below) | — |
//! | originator address / port | `action_local_ip` / `action_local_port` | `source_ip` / `source_port` |
//! | responder address / port | `action_remote_ip` / `action_remote_port` | `dest_ip` / `dest_port` |
//! | protocol | `action_network_protocol` (`TCP`, `UDP`, `ICMP`) | `protocol` (`tcp`, ...) |
//! | service | `action_app_id_transitions` (array) | `app` |
//! | bytes originator → responder | `action_total_upload` | `bytes_sent` |
//! | bytes responder → originator | `action_total_download` | `bytes_received` |
//! | packets each way | `action_pkts_sent` / `action_pkts_received` | `packets_sent` / `packets_received` |
//! | duration, whole seconds | — | `total_time_elapsed` |
//! | connection state | — | `session_end_reason` (`tcp-fin`, `tcp-rst-from-server`, `aged-out`, ...) |
//! | originator's hostname (inventory) | `agent_hostname` | `source_device_host` |
//! | originator's / responder's segment | — | `from_zone` / `to_zone` (`external` outside) |
//! |  | `event_type` = `STORY`, `_vendor` = `PANW`, `_product` = `XDR agent` | `action` = `allow`, `_vendor` = `PANW`, `_product` = `Firewall` |
//!
//! Every `xdr_data` row is written from the originator's side, as the agent on the
//! connecting host would record it, so `action_network_is_server` is always false; a
//! tenant also has rows from the accepting host's agent, with the field true and
//! local and remote swapped.
//!
//! The `xdr_data` names are those a tenant returns for network stories. The firewall
//! names follow the NGFW traffic log's fields as the Cortex data lake spells them; the
//! device and zone columns are filled from the inventory, where a real firewall would
//! use its zone configuration.
//!
//! `asset_inventory` has one row per inventoried device: `xdm.asset.id` (device_id),
//! `xdm.asset.name` (hostname, or the id), `xdm.asset.type.name` (device_type),
//! `xdm.asset.type.category` (`OT Device` for controllers and PLCs, else `IoT Device`),
//! `xdm.asset.provider` (`PANW IoT Security`), `xdm.asset.realm` (site), and, under
//! names of pivotwatch's own choosing, `xdm.asset.ipv4_addresses`,
//! `xdm.asset.mac_addresses`, `xdm.asset.vendor`, `xdm.asset.model`,
//! `xdm.asset.firmware`, `xdm.asset.segment`, `xdm.asset.criticality`; the whole
//! inventory row, tags included, is `xdm.asset.raw_fields` (JSON text).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{ConnState, Device, Flow, Inventory, Proto, is_internal};
use crate::xql::exec::{Column, DictBuilder, NULL_CODE, Table, Value};
use crate::xql::schema::{FieldType, Schema};

pub const XDR_DATA: &str = "xdr_data";
pub const NGFW_TRAFFIC: &str = "panw_ngfw_traffic_raw";
pub const ASSET_INVENTORY: &str = "asset_inventory";

/// Accumulates flows into the columns both network datasets share.
pub struct FlowColumns {
    times: Vec<i64>,
    local_ip: IpDict,
    remote_ip: IpDict,
    local_port: Vec<i64>,
    remote_port: Vec<i64>,
    proto: Vec<Proto>,
    service: DictBuilder,
    upload: Vec<i64>,
    download: Vec<i64>,
    pkts_sent: Vec<i64>,
    pkts_received: Vec<i64>,
    /// Whole seconds, as the firewall's `total_time_elapsed` counts them.
    elapsed_secs: Vec<i64>,
    state: Vec<ConnState>,
    /// Inventory index of each row's originator and responder, if inventoried.
    local_device: Vec<u32>,
    remote_device: Vec<u32>,
    max_ts: f64,
}

impl Default for FlowColumns {
    fn default() -> FlowColumns {
        FlowColumns {
            times: Vec::new(),
            local_ip: IpDict::default(),
            remote_ip: IpDict::default(),
            local_port: Vec::new(),
            remote_port: Vec::new(),
            proto: Vec::new(),
            service: DictBuilder::default(),
            upload: Vec::new(),
            download: Vec::new(),
            pkts_sent: Vec::new(),
            pkts_received: Vec::new(),
            elapsed_secs: Vec::new(),
            state: Vec::new(),
            local_device: Vec::new(),
            remote_device: Vec::new(),
            max_ts: f64::MIN,
        }
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl FlowColumns {
    pub fn push(&mut self, flow: &Flow, inventory: &Inventory) {
        self.times.push((flow.ts * 1000.0).round() as i64);
        self.max_ts = self.max_ts.max(flow.ts);
        self.local_ip.push(flow.orig_h);
        self.remote_ip.push(flow.resp_h);
        self.local_port.push(i64::from(flow.orig_p));
        self.remote_port.push(i64::from(flow.resp_p));
        self.proto.push(flow.proto);
        match flow.service.as_str() {
            "-" => self.service.push_null(),
            name => self.service.push(name),
        }
        self.upload.push(clamp_i64(flow.orig_bytes));
        self.download.push(clamp_i64(flow.resp_bytes));
        self.pkts_sent.push(clamp_i64(flow.orig_pkts));
        self.pkts_received.push(clamp_i64(flow.resp_pkts));
        self.elapsed_secs.push(flow.duration.max(0.0) as i64);
        self.state.push(flow.conn_state);
        let index = |ip: &IpAddr| inventory.index_of(ip).map_or(NULL_CODE, |i| i as u32);
        self.local_device.push(index(&flow.orig_h));
        self.remote_device.push(index(&flow.resp_h));
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The latest flow start, in Unix milliseconds.
    pub fn latest_ms(&self) -> Option<i64> {
        (!self.is_empty()).then(|| (self.max_ts * 1000.0).round() as i64)
    }

    /// Builds `xdr_data`, `panw_ngfw_traffic_raw` and `asset_inventory`. Columns the
    /// two network datasets share are the same vectors.
    pub fn finish(self, inventory: &Inventory) -> BTreeMap<String, Table> {
        let n = self.times.len();
        let devices = inventory.devices();
        let constant = |text: &str| {
            let mut builder = DictBuilder::default();
            let code = builder.code(text);
            let mut column = builder.finish();
            if let Column::Dict { codes, .. } = &mut column {
                *codes = vec![code; n];
            }
            Arc::new(column)
        };
        let by_device = |rows: &[u32], field: &dyn Fn(&Device) -> Option<String>| {
            let mut builder = DictBuilder::default();
            let codes: Vec<u32> = devices
                .iter()
                .map(|d| field(d).filter(|s| !s.is_empty()).map_or(NULL_CODE, |s| builder.code(&s)))
                .collect();
            for &row in rows {
                builder.push_code(if row == NULL_CODE { NULL_CODE } else { codes[row as usize] });
            }
            Arc::new(builder.finish())
        };

        let time = Arc::new(Column::Time(self.times));
        let local_ip = Arc::new(self.local_ip.finish());
        let remote_ip = Arc::new(self.remote_ip.finish());
        let local_port = Arc::new(Column::Int(self.local_port));
        let remote_port = Arc::new(Column::Int(self.remote_port));
        let upload = Arc::new(Column::Int(self.upload));
        let download = Arc::new(Column::Int(self.download));
        let pkts_sent = Arc::new(Column::Int(self.pkts_sent));
        let pkts_received = Arc::new(Column::Int(self.pkts_received));
        let service = Arc::new(self.service.finish());
        let proto_column = |upper: bool| {
            let mut builder = DictBuilder::default();
            for proto in &self.proto {
                let text = proto.as_str();
                if upper { builder.push(&text.to_ascii_uppercase()) } else { builder.push(text) }
            }
            Arc::new(builder.finish())
        };
        let apps =
            match &*service {
                Column::Dict { codes, dict } => {
                    let arrays: Vec<Value> = dict
                        .iter()
                        .map(|s| Value::Array(Arc::new(vec![Value::Str(s.clone())])))
                        .collect();
                    Column::Values(
                        codes
                            .iter()
                            .map(|&c| {
                                if c == NULL_CODE {
                                    Value::Null
                                } else {
                                    arrays[c as usize].clone()
                                }
                            })
                            .collect(),
                    )
                }
                other => other.clone(),
            };
        let hostname = |d: &Device| Some(d.hostname.clone());
        let local_host = by_device(&self.local_device, &hostname);

        let xdr_data = Table::new(
            names(&[
                "_time",
                "event_type",
                "_vendor",
                "_product",
                "agent_hostname",
                "action_local_ip",
                "action_local_port",
                "action_remote_ip",
                "action_remote_port",
                "action_network_is_server",
                "action_network_protocol",
                "action_app_id_transitions",
                "action_total_upload",
                "action_total_download",
                "action_pkts_sent",
                "action_pkts_received",
            ]),
            vec![
                time.clone(),
                constant("STORY"),
                constant("PANW"),
                constant("XDR agent"),
                local_host.clone(),
                local_ip.clone(),
                local_port.clone(),
                remote_ip.clone(),
                remote_port.clone(),
                Arc::new(Column::Bool(vec![0; n])),
                proto_column(true),
                Arc::new(apps),
                upload.clone(),
                download.clone(),
                pkts_sent.clone(),
                pkts_received.clone(),
            ],
        );

        let zone = |rows: &[u32], ips: &Column| {
            let mut builder = DictBuilder::default();
            let segments: Vec<u32> = devices
                .iter()
                .map(|d| if d.segment.is_empty() { NULL_CODE } else { builder.code(&d.segment) })
                .collect();
            let (internal, external) = (builder.code("internal"), builder.code("external"));
            for (row, &device) in rows.iter().enumerate() {
                let code = match device {
                    NULL_CODE => NULL_CODE,
                    idx => segments[idx as usize],
                };
                let code = if code != NULL_CODE {
                    code
                } else {
                    let ip: Option<IpAddr> = ips.get(row).to_text().parse().ok();
                    if ip.is_some_and(|ip| is_internal(&ip)) { internal } else { external }
                };
                builder.push_code(code);
            }
            Arc::new(builder.finish())
        };
        let mut end_reason = DictBuilder::default();
        for (state, proto) in self.state.iter().zip(&self.proto) {
            end_reason.push(session_end_reason(*state, *proto));
        }
        let ngfw = Table::new(
            names(&[
                "_time",
                "_vendor",
                "_product",
                "source_ip",
                "source_port",
                "dest_ip",
                "dest_port",
                "protocol",
                "app",
                "action",
                "bytes_sent",
                "bytes_received",
                "packets_sent",
                "packets_received",
                "total_time_elapsed",
                "session_end_reason",
                "source_device_host",
                "from_zone",
                "to_zone",
            ]),
            vec![
                time,
                constant("PANW"),
                constant("Firewall"),
                local_ip.clone(),
                local_port,
                remote_ip.clone(),
                remote_port,
                proto_column(false),
                service,
                constant("allow"),
                upload,
                download,
                pkts_sent,
                pkts_received,
                Arc::new(Column::Int(self.elapsed_secs)),
                Arc::new(end_reason.finish()),
                local_host,
                zone(&self.local_device, &local_ip),
                zone(&self.remote_device, &remote_ip),
            ],
        );

        let mut tables = BTreeMap::new();
        tables.insert(XDR_DATA.to_string(), xdr_data);
        tables.insert(NGFW_TRAFFIC.to_string(), ngfw);
        tables.insert(ASSET_INVENTORY.to_string(), asset_table(devices));
        tables
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// How PAN-OS would have ended a session that Zeek saw end in `state`.
fn session_end_reason(state: ConnState, proto: Proto) -> &'static str {
    match (state, proto) {
        (ConnState::SF, Proto::Tcp) => "tcp-fin",
        (ConnState::REJ | ConnState::RSTR | ConnState::RSTRH, _) => "tcp-rst-from-server",
        (ConnState::RSTO | ConnState::RSTOS0, _) => "tcp-rst-from-client",
        _ => "aged-out",
    }
}

fn asset_table(devices: &[Device]) -> Table {
    let column = |f: &dyn Fn(&Device) -> String| {
        let mut builder = DictBuilder::default();
        for device in devices {
            let value = f(device);
            if value.is_empty() { builder.push_null() } else { builder.push(&value) }
        }
        Arc::new(builder.finish())
    };
    let category = |d: &Device| {
        let kind = d.device_type.to_ascii_lowercase();
        let ot =
            ["plc", "hvac", "controller", "scada", "rtu", "hmi"].iter().any(|k| kind.contains(k));
        if ot { "OT Device".to_string() } else { "IoT Device".to_string() }
    };
    let raw = |d: &Device| serde_json::to_string(d).unwrap_or_default();
    Table::new(
        names(&[
            "xdm.asset.id",
            "xdm.asset.name",
            "xdm.asset.type.name",
            "xdm.asset.type.category",
            "xdm.asset.provider",
            "xdm.asset.realm",
            "xdm.asset.ipv4_addresses",
            "xdm.asset.mac_addresses",
            "xdm.asset.vendor",
            "xdm.asset.model",
            "xdm.asset.firmware",
            "xdm.asset.segment",
            "xdm.asset.criticality",
            "xdm.asset.raw_fields",
        ]),
        vec![
            column(&|d| d.device_id.clone()),
            column(&|d| {
                if d.hostname.is_empty() { d.device_id.clone() } else { d.hostname.clone() }
            }),
            column(&|d| d.device_type.clone()),
            column(&category),
            column(&|_| "PANW IoT Security".to_string()),
            column(&|d| d.site.clone()),
            column(&|d| d.ip.to_string()),
            column(&|d| d.mac.clone()),
            column(&|d| d.vendor.clone()),
            column(&|d| d.model.clone()),
            column(&|d| d.firmware.clone()),
            column(&|d| d.segment.clone()),
            column(&|d| d.criticality.as_str().to_string()),
            column(&raw),
        ],
    )
}

/// The replay tenant's schema, for the validator.
pub fn schema(tables: &BTreeMap<String, Table>) -> Schema {
    let datasets = tables
        .iter()
        .map(|(name, table)| {
            let fields = table
                .names
                .iter()
                .zip(&table.columns)
                .map(|(field, column)| {
                    let kind = match &**column {
                        Column::Int(_) => FieldType::Int,
                        Column::Time(_) => FieldType::Timestamp,
                        Column::Float(_) => FieldType::Float,
                        Column::Bool(_) => FieldType::Bool,
                        Column::Dict { .. } if field.ends_with("_ip") => FieldType::Ip,
                        Column::Dict { .. } => FieldType::String,
                        Column::Values(_) => FieldType::Array,
                    };
                    (field.clone(), kind)
                })
                .collect();
            (name.clone(), fields)
        })
        .collect();
    Schema { datasets }
}

/// Dictionary-encodes addresses without formatting each one: an address is turned
/// into text once, the first time it is seen.
#[derive(Default)]
struct IpDict {
    index: HashMap<IpAddr, u32>,
    builder: DictBuilder,
    codes: Vec<u32>,
}

impl IpDict {
    fn push(&mut self, ip: IpAddr) {
        let code = match self.index.get(&ip) {
            Some(&code) => code,
            None => {
                let code = self.builder.code(&ip.to_string());
                self.index.insert(ip, code);
                code
            }
        };
        self.codes.push(code);
    }

    fn finish(self) -> Column {
        let mut column = self.builder.finish();
        if let Column::Dict { codes, .. } = &mut column {
            *codes = self.codes;
        }
        column
    }
}
