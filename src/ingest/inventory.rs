//! The device inventory reader and writer: CSV with a header row, a JSON array of
//! objects, or JSON lines, all with the columns of the inventory contract.
//!
//! An inventory is small and everything downstream trusts it (a flow belongs to the
//! device whose address it touches), so unlike the flow readers this one does not skip
//! bad rows: the first one stops the read with its file and line. Columns beyond the
//! standard ones are kept as tags rather than dropped, because sites put useful things
//! there (room, owner, ward). This file depends only on `model` and `ingest`'s errors.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{IngestError, describe_start, json_error_text};
use crate::model::{Criticality, Device, Inventory};

/// The standard inventory columns, in the order `write_inventory_csv` writes them.
pub const COLUMNS: [&str; 11] = [
    "device_id",
    "ip",
    "mac",
    "hostname",
    "device_type",
    "vendor",
    "model",
    "firmware",
    "segment",
    "site",
    "criticality",
];

const REQUIRED: [&str; 3] = ["device_id", "ip", "criticality"];

/// Reads an inventory file, CSV or JSON as its content shows, and refuses a file in which
/// two devices share an address.
pub fn read_inventory(path: &Path) -> Result<Inventory, IngestError> {
    let bytes = std::fs::read(path)
        .map_err(|source| IngestError::Io { path: path.to_path_buf(), source })?;
    // Lossy: an odd byte in a hostname should not make the whole inventory unreadable.
    let text = String::from_utf8_lossy(&bytes);
    read_inventory_from(&path.display().to_string(), &text)
}

/// Like `read_inventory`, over text already in memory; `name` stands for the file in
/// errors.
pub fn read_inventory_from(name: &str, text: &str) -> Result<Inventory, IngestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let start = text.trim_start();
    let devices = match start.as_bytes().first() {
        None => return Err(IngestError::Empty { path: PathBuf::from(name) }),
        Some(b'[' | b'{') => read_json(name, text)?,
        Some(byte) if byte.is_ascii_graphic() || !byte.is_ascii() => read_csv(name, text)?,
        Some(_) => {
            return Err(IngestError::UnknownFormat {
                path: PathBuf::from(name),
                found: describe_start(start.as_bytes()),
            });
        }
    };
    Inventory::new(devices).map_err(|(ip, first, second)| IngestError::DuplicateIp {
        path: PathBuf::from(name),
        ip,
        first,
        second,
    })
}

/// Writes devices as CSV: the standard columns in contract order, then one column per
/// tag name that any device has, sorted, so `read_inventory` gives the devices back.
pub fn write_inventory_csv(devices: &[Device], w: impl Write) -> io::Result<()> {
    let tag_names: BTreeSet<&str> = devices
        .iter()
        .flat_map(|device| device.tags.keys())
        .map(String::as_str)
        .filter(|name| !is_standard(name))
        .collect();

    let mut writer = csv::Writer::from_writer(w);
    writer.write_record(COLUMNS.iter().chain(tag_names.iter()))?;
    for device in devices {
        let ip = device.ip.to_string();
        let standard = [
            device.device_id.as_str(),
            &ip,
            &device.mac,
            &device.hostname,
            &device.device_type,
            &device.vendor,
            &device.model,
            &device.firmware,
            &device.segment,
            &device.site,
            device.criticality.as_str(),
        ];
        let tags = tag_names.iter().map(|name| device.tags.get(*name).map_or("", String::as_str));
        writer.write_record(standard.into_iter().chain(tags))?;
    }
    writer.flush()?;
    Ok(())
}

fn is_standard(name: &str) -> bool {
    COLUMNS.iter().any(|column| column.eq_ignore_ascii_case(name.trim()))
}

fn read_csv(name: &str, text: &str) -> Result<Vec<Device>, IngestError> {
    let path = || PathBuf::from(name);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|err| csv_error(name, &err))?
        .iter()
        .map(|header| header.trim().to_string())
        .collect();
    for column in REQUIRED {
        if !headers.iter().any(|header| header.eq_ignore_ascii_case(column)) {
            return Err(IngestError::MissingInventoryColumn { path: path(), column });
        }
    }

    let mut devices = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|err| csv_error(name, &err))?;
        let line = record.position().map_or(0, csv::Position::line);
        let pairs = headers.iter().zip(record.iter()).map(|(key, value)| {
            let value = value.to_string();
            (key.as_str(), value)
        });
        devices.push(device_from_pairs(name, line, pairs, BTreeMap::new())?);
    }
    Ok(devices)
}

fn csv_error(name: &str, err: &csv::Error) -> IngestError {
    let line = err.position().map_or(0, csv::Position::line);
    let message = match err.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("expected {expected_len} columns, found {len}")
        }
        _ => err.to_string(),
    };
    IngestError::BadInventoryRow { path: PathBuf::from(name), line, message }
}

/// Reads a JSON array of objects or a sequence of objects (JSON lines). Objects are
/// parsed one at a time from their offset so that an error can name the line an object
/// starts on, which serde_json alone cannot do for an element of an array.
fn read_json(name: &str, text: &str) -> Result<Vec<Device>, IngestError> {
    let bad = |line: u64, message: String| IngestError::BadInventoryRow {
        path: PathBuf::from(name),
        line,
        message,
    };
    let mut cursor = JsonCursor { text, offset: 0, line: 1 };
    cursor.skip(char::is_whitespace);
    let in_array = cursor.eat('[');

    let mut devices = Vec::new();
    loop {
        cursor.skip(|c| c.is_whitespace() || (in_array && c == ','));
        if cursor.rest().is_empty() {
            if in_array {
                return Err(bad(cursor.line, "the JSON array is not closed with `]`".into()));
            }
            break;
        }
        if in_array && cursor.eat(']') {
            cursor.skip(char::is_whitespace);
            if !cursor.rest().is_empty() {
                return Err(bad(cursor.line, "unexpected text after the JSON array".into()));
            }
            break;
        }

        let line = cursor.line;
        let mut stream =
            serde_json::Deserializer::from_str(cursor.rest()).into_iter::<Map<String, Value>>();
        let object = match stream.next() {
            Some(Ok(object)) => object,
            Some(Err(err)) => return Err(bad(line, json_error_text(&err))),
            None => break,
        };
        cursor.advance(stream.byte_offset());
        devices.push(device_from_json(name, line, object)?);
    }
    Ok(devices)
}

/// A position in JSON text that keeps its line number as it moves forward.
struct JsonCursor<'a> {
    text: &'a str,
    offset: usize,
    line: u64,
}

impl<'a> JsonCursor<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.offset..]
    }

    fn advance(&mut self, len: usize) {
        let end = (self.offset + len).min(self.text.len());
        self.line += self.text[self.offset..end].matches('\n').count() as u64;
        self.offset = end;
    }

    fn skip(&mut self, what: impl Fn(char) -> bool) {
        let rest = self.rest();
        let len = rest.find(|c: char| !what(c)).unwrap_or(rest.len());
        self.advance(len);
    }

    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.advance(c.len_utf8());
            true
        } else {
            false
        }
    }
}

fn device_from_json(
    name: &str,
    line: u64,
    object: Map<String, Value>,
) -> Result<Device, IngestError> {
    let mut pairs = Vec::with_capacity(object.len());
    let mut nested_tags = BTreeMap::new();
    for (key, value) in object {
        match value {
            // A `tags` object is how `Device` serializes; reading it back as tags keeps
            // a JSON inventory written by serde round-trippable.
            Value::Object(tags) if key == "tags" => {
                for (tag, value) in tags {
                    if let Some(text) = json_text(value) {
                        nested_tags.insert(tag, text);
                    }
                }
            }
            value => {
                if let Some(text) = json_text(value) {
                    pairs.push((key, text));
                }
            }
        }
    }
    let pairs = pairs.iter().map(|(key, value)| (key.as_str(), value.clone()));
    device_from_pairs(name, line, pairs, nested_tags)
}

fn json_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text),
        other => Some(other.to_string()),
    }
}

/// Builds a device from column/value pairs; the same rules for CSV and JSON.
fn device_from_pairs<'k>(
    name: &str,
    line: u64,
    pairs: impl Iterator<Item = (&'k str, String)>,
    mut tags: BTreeMap<String, String>,
) -> Result<Device, IngestError> {
    let bad = |message: String| {
        let path = PathBuf::from(name);
        IngestError::BadInventoryRow { path, line, message }
    };
    let mut device_id = None;
    let mut ip = None;
    let mut criticality = None;
    let mut device = Device {
        device_id: String::new(),
        ip: IpAddr::from([0, 0, 0, 0]),
        mac: String::new(),
        hostname: String::new(),
        device_type: String::new(),
        vendor: String::new(),
        model: String::new(),
        firmware: String::new(),
        segment: String::new(),
        site: String::new(),
        criticality: Criticality::Low,
        tags: BTreeMap::new(),
    };

    for (key, value) in pairs {
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "device_id" => device_id = Some(value),
            "ip" => ip = Some(value),
            "criticality" => criticality = Some(value),
            "mac" => device.mac = value,
            "hostname" => device.hostname = value,
            "device_type" => device.device_type = value,
            "vendor" => device.vendor = value,
            "model" => device.model = value,
            "firmware" => device.firmware = value,
            "segment" => device.segment = value,
            "site" => device.site = value,
            // An empty cell under an extra column says nothing about the device.
            _ if value.is_empty() => {}
            _ => {
                tags.insert(key.trim().to_string(), value);
            }
        }
    }

    device.device_id = match device_id {
        Some(id) if !id.is_empty() => id,
        Some(_) => return Err(bad("device_id is empty".into())),
        None => return Err(bad("device_id is missing".into())),
    };
    device.ip = match ip {
        Some(text) if text.is_empty() => {
            return Err(bad(format!("ip is empty for device \"{}\"", device.device_id)));
        }
        Some(text) => {
            text.parse().map_err(|_| bad(format!("ip \"{text}\" is not an IP address")))?
        }
        None => return Err(bad(format!("ip is missing for device \"{}\"", device.device_id))),
    };
    device.criticality = match criticality {
        Some(text) if text.is_empty() => {
            let message = format!("criticality is empty for device \"{}\"", device.device_id);
            return Err(bad(message));
        }
        Some(text) => text.parse().map_err(|_| IngestError::UnknownCriticality {
            path: PathBuf::from(name),
            line,
            value: text.clone(),
        })?,
        None => {
            let message = format!("criticality is missing for device \"{}\"", device.device_id);
            return Err(bad(message));
        }
    };
    device.tags = tags;
    Ok(device)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]
mod tests {
    use super::*;

    const CSV: &str = "\
device_id,ip,mac,hostname,device_type,vendor,model,firmware,segment,site,criticality,room,owner
pump-1,10.20.0.11,00:1b:44:11:3a:b7,pump1,Infusion Pump,BD,Alaris 8015,12.1,clinical,north,\
Critical,ICU-3,
hvac-7,10.30.1.7,,,HVAC Controller,JCI,FX-PCG,,bms,north,medium,,facilities
";

    fn ids(inventory: &Inventory) -> Vec<&str> {
        inventory.devices().iter().map(|d| d.device_id.as_str()).collect()
    }

    #[test]
    fn csv_reads_standard_columns_and_keeps_the_rest_as_tags() {
        let inventory = read_inventory_from("inventory.csv", CSV).unwrap();
        assert_eq!(ids(&inventory), ["pump-1", "hvac-7"]);
        let pump = inventory.by_ip(&"10.20.0.11".parse().unwrap()).unwrap();
        assert_eq!(pump.criticality, Criticality::Critical);
        assert_eq!(
            (pump.device_type.as_str(), pump.model.as_str()),
            ("Infusion Pump", "Alaris 8015")
        );
        assert_eq!((pump.segment.as_str(), pump.firmware.as_str()), ("clinical", "12.1"));
        assert_eq!(pump.tags, BTreeMap::from([("room".to_string(), "ICU-3".to_string())]));
        let hvac = &inventory.devices()[1];
        assert_eq!(hvac.tags, BTreeMap::from([("owner".into(), "facilities".into())]));
        assert_eq!((hvac.mac.as_str(), hvac.criticality), ("", Criticality::Medium));
    }

    #[test]
    fn csv_needs_only_the_required_columns_in_any_order_and_case() {
        let text = "Criticality , IP, Device_ID\nlow,10.0.0.1,a\n# retired\nhigh,fe80::2,b\n";
        let inventory = read_inventory_from("inv.csv", text).unwrap();
        assert_eq!(ids(&inventory), ["a", "b"]);
        assert_eq!(inventory.devices()[1].criticality, Criticality::High);
        assert!(inventory.devices()[0].tags.is_empty());
    }

    #[test]
    fn json_array_and_json_lines_give_the_same_devices_as_csv() {
        let array = r#"[
  {"device_id": "pump-1", "ip": "10.20.0.11", "mac": "00:1b:44:11:3a:b7",
   "hostname": "pump1", "device_type": "Infusion Pump", "vendor": "BD",
   "model": "Alaris 8015", "firmware": "12.1", "segment": "clinical", "site": "north",
   "criticality": "Critical", "room": "ICU-3", "owner": null},
  {"device_id": "hvac-7", "ip": "10.30.1.7", "device_type": "HVAC Controller",
   "vendor": "JCI", "model": "FX-PCG", "segment": "bms", "site": "north",
   "criticality": "medium", "tags": {"owner": "facilities"}}
]"#;
        let from_csv = read_inventory_from("inventory.csv", CSV).unwrap();
        let from_array = read_inventory_from("inventory.json", array).unwrap();
        assert_eq!(from_array.devices(), from_csv.devices());

        let lines: String = from_csv
            .devices()
            .iter()
            .map(|d| format!("{}\n", serde_json::to_string(d).unwrap()))
            .collect();
        let from_lines = read_inventory_from("inventory.jsonl", &lines).unwrap();
        assert_eq!(from_lines.devices(), from_csv.devices());
    }

    #[test]
    fn json_errors_name_the_line_the_object_starts_on() {
        let text = concat!(
            "[\n",
            r#"  {"device_id": "a", "ip": "10.0.0.1", "criticality": "low"},"#,
            "\n\n",
            r#"  {"device_id": "b","#,
            "\n",
            r#"   "ip": "10.0.0.2", "criticality": "urgent"}"#,
            "\n]",
        );
        let err = read_inventory_from("inv.json", text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "inv.json:4: unknown criticality \"urgent\"; expected one of low, medium, high, \
             critical"
        );
        let err = read_inventory_from("inv.json", "[{\"device_id\": \"a\"}").unwrap_err();
        assert_eq!(err.to_string(), "inv.json:1: ip is missing for device \"a\"");
        let err = read_inventory_from("inv.json", "{\"device_id\": }").unwrap_err();
        assert!(err.to_string().starts_with("inv.json:1: invalid JSON"), "{err}");
    }

    #[test]
    fn duplicate_addresses_name_both_devices_and_the_address() {
        let text = "device_id,ip,criticality\na,10.0.0.1,low\nb,10.0.0.2,low\nc,10.0.0.1,high\n";
        let err = read_inventory_from("inventory.csv", text).unwrap_err();
        match &err {
            IngestError::DuplicateIp { ip, first, second, .. } => {
                assert_eq!(
                    (ip.to_string(), first.as_str(), second.as_str()),
                    ("10.0.0.1".into(), "a", "c")
                );
            }
            other => panic!("expected DuplicateIp, got {other:?}"),
        }
        let expected = "inventory.csv: devices \"a\" and \"c\" both have ip 10.0.0.1";
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn unknown_criticality_names_file_line_and_value() {
        let text = "device_id,ip,criticality\na,10.0.0.1,low\nb,10.0.0.2,urgent\n";
        let err = read_inventory_from("inventory.csv", text).unwrap_err();
        let IngestError::UnknownCriticality { line, value, .. } = &err else {
            panic!("expected UnknownCriticality, got {err:?}");
        };
        assert_eq!((*line, value.as_str()), (3, "urgent"));
        assert_eq!(
            err.to_string(),
            "inventory.csv:3: unknown criticality \"urgent\"; expected one of low, medium, high, \
             critical"
        );
    }

    #[test]
    fn bad_rows_and_missing_columns_are_errors() {
        let err = read_inventory_from("i.csv", "device_id,criticality\na,low\n").unwrap_err();
        let missing_ip = matches!(err, IngestError::MissingInventoryColumn { column: "ip", .. });
        assert!(missing_ip, "{err:?}");

        let err = read_inventory_from("i.csv", "device_id,ip,criticality\na,10.0.0.999,low\n")
            .unwrap_err();
        assert_eq!(err.to_string(), "i.csv:2: ip \"10.0.0.999\" is not an IP address");

        let err =
            read_inventory_from("i.csv", "device_id,ip,criticality\na,10.0.0.1\n").unwrap_err();
        assert_eq!(err.to_string(), "i.csv:2: expected 3 columns, found 2");

        let err =
            read_inventory_from("i.csv", "device_id,ip,criticality\n,10.0.0.1,low\n").unwrap_err();
        assert_eq!(err.to_string(), "i.csv:2: device_id is empty");

        let err = read_inventory_from("i.csv", "  \n").unwrap_err();
        assert!(matches!(err, IngestError::Empty { .. }), "{err:?}");
    }

    #[test]
    fn written_csv_reads_back_to_the_same_devices() {
        let devices = read_inventory_from("inventory.csv", CSV).unwrap().devices().to_vec();
        let mut out = Vec::new();
        write_inventory_csv(&devices, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "device_id,ip,mac,hostname,device_type,vendor,model,firmware,segment,site,\
             criticality,owner,room\n"
        ));
        let again = read_inventory_from("written.csv", &text).unwrap();
        assert_eq!(again.devices(), devices.as_slice());
    }
}
