//! The offline planner for hunts: a small grammar of what IoT/OT hunters ask, read from
//! the question's words, turned into XQL. It understands device kinds, whether the
//! device is the one talking or the one talked to, internal or external peers, ports and
//! protocols by name or number, time of day, the window, volumes, and four shapes of
//! answer (a listing, a top-N, scans, beacons, new peers, a count). What it does not
//! understand it says so about, rather than guessing.
//!
//! The query text it writes is parsed and printed back by the XQL parser and printer, so
//! what leaves is the canonical form of a query that parses.

use serde::{Deserialize, Serialize};

/// Device kinds as the inventory names them, with the words hunters use for them.
const KINDS: [(&str, &[&str]); 8] = [
    ("Infusion Pump", &["pump", "pumps", "infusion"]),
    ("Patient Monitor", &["monitor", "monitors", "bedside"]),
    (
        "Imaging Modality",
        &["imaging", "ct", "mr", "mri", "scanner", "scanners", "modality", "modalities", "x-ray"],
    ),
    ("HVAC Controller", &["hvac", "ahu", "chiller", "chillers", "thermostat", "thermostats"]),
    ("IP Camera", &["camera", "cameras", "cctv", "cam", "cams"]),
    ("Badge Reader", &["badge", "badges", "door", "doors", "access-control", "card"]),
    ("Printer", &["printer", "printers"]),
    ("PLC", &["plc", "plcs", "controller", "controllers", "ot"]),
];

/// Services by the names hunters use, with their ports.
const SERVICES: [(&str, &[u16]); 18] = [
    ("ssh", &[22]),
    ("telnet", &[23]),
    ("rdp", &[3389]),
    ("vnc", &[5900]),
    ("smb", &[445]),
    ("ftp", &[21]),
    ("https", &[443]),
    ("tls", &[443]),
    ("http", &[80]),
    ("dns", &[53]),
    ("ntp", &[123]),
    ("modbus", &[502]),
    ("s7", &[102]),
    ("s7comm", &[102]),
    ("enip", &[44818]),
    ("cip", &[44818]),
    ("dnp3", &[20000]),
    ("dicom", &[104]),
];

/// The name hunters use for a port's service, the first the table gives.
pub fn service_name(port: u16) -> Option<&'static str> {
    SERVICES.iter().find(|(_, ports)| ports.contains(&port)).map(|(name, _)| *name)
}

/// Words that ask about things the planner cannot see in network telemetry.
const OUT_OF_REACH: [&str; 12] = [
    "user",
    "users",
    "login",
    "logins",
    "process",
    "processes",
    "file",
    "files",
    "email",
    "registry",
    "weekend",
    "weekends",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Peers outside RFC 1918 space.
    External,
    Internal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeOfDay {
    /// 22:00 to 06:00.
    Night,
    /// 08:00 to 18:00.
    BusinessHours,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Each device with its flows, peers and bytes.
    Listing,
    /// The top N devices by bytes sent.
    TopUpload(u32),
    /// The top N devices by bytes received.
    TopDownload(u32),
    /// The top N devices by flows.
    TopFlows(u32),
    /// Devices that reached many distinct hosts or ports.
    Scans,
    /// Steady repeated conversations with one peer.
    Beacons,
    /// Conversations whose first sighting falls in the window.
    NewPeers,
    /// How many devices and flows.
    Count,
}

/// What the question asks, as the planner understood it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Inventory device types; empty means any device.
    pub kinds: Vec<String>,
    /// The kinds are the ones talked to (the question asks who reaches them).
    pub kinds_are_targets: bool,
    pub direction: Option<Direction>,
    pub ports: Vec<u16>,
    pub time_of_day: Option<TimeOfDay>,
    pub window_hours: u64,
    pub shape: Shape,
    /// Only devices that sent at least this many bytes in the window.
    pub min_upload: Option<u64>,
}

/// A question the planner translated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub intent: Intent,
    /// Canonical XQL.
    pub xql: String,
}

/// The private address space; everything else counts as external.
const PRIVATE: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16";

/// How a hunt's query is checked before it is sent: read-only rules, and a timeframe
/// required (every planned query sets one).
pub fn hunt_validation() -> crate::xql::ValidationOptions<'static> {
    crate::xql::ValidationOptions {
        schema: None,
        caller_timeframe: false,
        require_timeframe: true,
        call_allow_list: &[],
    }
}

/// Translates a question, or says why it cannot.
pub fn plan(question: &str) -> Result<Plan, String> {
    let intent = understand(question)?;
    let text = render(&intent);
    let xql = crate::xql::format(&text)
        .map_err(|err| format!("the planner wrote XQL that does not parse ({err}): {text}"))?;
    Ok(Plan { intent, xql })
}

/// The question's words, lower-cased, with punctuation that joins words kept.
fn words(question: &str) -> Vec<String> {
    question
        .to_ascii_lowercase()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '/' || c == '.'))
        .map(|w| w.trim_matches(|c| c == '.' || c == '-' || c == '/').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

fn understand(question: &str) -> Result<Intent, String> {
    let words = words(question);
    let has = |w: &str| words.iter().any(|x| x == w);
    let phrase = |p: &str| {
        let parts: Vec<&str> = p.split(' ').collect();
        words.windows(parts.len()).any(|win| win.iter().zip(&parts).all(|(a, b)| a == b))
    };
    if let Some(word) = OUT_OF_REACH.iter().find(|w| has(w)) {
        return Err(format!(
            "I can't translate that offline: \"{word}\" is not in network telemetry; the \
             offline planner hunts over devices, peers, ports, times and volumes"
        ));
    }

    // Device kinds, and whether they are the talkers or the talked-to.
    let mut kinds = Vec::new();
    let mut first_kind_at = None;
    for (i, word) in words.iter().enumerate() {
        for (kind, names) in KINDS {
            if names.contains(&word.as_str()) && !kinds.contains(&kind.to_string()) {
                // "door" and "card" only count as badge readers with a reader word near.
                if matches!(word.as_str(), "door" | "doors" | "card")
                    && !words.iter().any(|w| w.starts_with("reader") || w.starts_with("controller"))
                {
                    continue;
                }
                kinds.push(kind.to_string());
                first_kind_at.get_or_insert(i);
            }
        }
    }
    // "controller" alone means a PLC; "HVAC controllers" or "door controllers" do not.
    if kinds.len() > 1 && kinds.iter().any(|k| k == "PLC") && !has("plc") && !has("plcs") {
        kinds.retain(|k| k != "PLC");
    }
    let kinds_are_targets = first_kind_at.is_some_and(|at| {
        let before: Vec<&str> = words[..at].iter().map(String::as_str).collect();
        let near: Vec<&str> = before.iter().rev().take(3).copied().collect();
        let reaching = near.iter().any(|w| {
            matches!(
                *w,
                "to" | "reach" | "reached" | "reaching" | "into" | "contacted" | "contacting"
            )
        });
        // A passive verb after the kind: "PLCs contacted by", "controllers reached over SSH"
        // (but not "cameras reached the internet").
        let passive = words.iter().enumerate().skip(at + 1).take(4).any(|(i, w)| {
            matches!(w.as_str(), "contacted" | "reached" | "accessed" | "hit" | "targeted")
                && words.get(i + 1).is_none_or(|next| {
                    !matches!(
                        next.as_str(),
                        "the" | "a" | "an" | "external" | "internal" | "outside"
                    )
                })
        });
        reaching || passive
    });

    let direction = if has("external")
        || has("internet")
        || has("outside")
        || has("public")
        || has("cloud")
        || phrase("off-site")
        || has("offsite")
    {
        Some(Direction::External)
    } else if has("internal") || has("inside") || has("lateral") || has("laterally") {
        Some(Direction::Internal)
    } else {
        None
    };

    let mut ports = Vec::new();
    for (name, numbers) in SERVICES {
        if has(name) {
            ports.extend_from_slice(numbers);
        }
    }
    if phrase("ethernet/ip") || phrase("ethernet ip") {
        ports.push(44818);
    }
    if has("bacnet") && !ports.contains(&47808) {
        ports.push(47808);
    }
    // "port 8080", "on 502", "tcp/445", "udp 123": a number after a port word.
    for (i, word) in words.iter().enumerate() {
        let number =
            word.strip_prefix("tcp/").or_else(|| word.strip_prefix("udp/")).unwrap_or(word);
        let Ok(port) = number.parse::<u16>() else { continue };
        let after_port_word = i > 0
            && matches!(
                words[i - 1].as_str(),
                "port" | "ports" | "on" | "tcp" | "udp" | "over" | "and" | "or"
            )
            || word.contains('/');
        if after_port_word && port > 0 && !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports.sort_unstable();
    ports.dedup();

    let time_of_day = if has("night")
        || has("overnight")
        || has("nights")
        || phrase("after hours")
        || phrase("off hours")
        || has("off-hours")
        || has("after-hours")
        || has("nightly")
    {
        Some(TimeOfDay::Night)
    } else if phrase("business hours")
        || phrase("working hours")
        || phrase("office hours")
        || has("daytime")
    {
        Some(TimeOfDay::BusinessHours)
    } else {
        None
    };

    let window_hours = window(&words).unwrap_or(24);
    let top = top_n(&words);
    let about_upload = has("sent")
        || has("send")
        || has("sending")
        || has("upload")
        || has("uploaded")
        || has("uploads")
        || has("uploading")
        || has("exfil")
        || has("exfiltration")
        || has("outbound");
    let about_bytes = about_upload
        || has("bytes")
        || has("volume")
        || has("data")
        || has("traffic")
        || has("gb")
        || has("mb");
    let shape = if has("scan")
        || has("scans")
        || has("scanning")
        || has("scanned")
        || has("sweep")
        || has("swept")
        || has("sweeping")
        || has("probing")
    {
        Shape::Scans
    } else if has("beacon")
        || has("beacons")
        || has("beaconing")
        || has("heartbeat")
        || has("periodic")
        || phrase("every minute")
        || phrase("call home")
        || phrase("calling home")
    {
        Shape::Beacons
    } else if (has("new")
        || phrase("first time")
        || phrase("never seen")
        || phrase("started talking"))
        && (has("peer")
            || has("peers")
            || has("destination")
            || has("destinations")
            || has("ip")
            || has("ips")
            || has("address")
            || has("addresses")
            || has("host")
            || has("hosts")
            || phrase("started talking")
            || phrase("first time"))
    {
        Shape::NewPeers
    } else if let Some(n) = top {
        if about_upload {
            Shape::TopUpload(n)
        } else if has("received") || has("download") || has("downloaded") || has("downloads") {
            Shape::TopDownload(n)
        } else if about_bytes {
            Shape::TopUpload(n)
        } else {
            Shape::TopFlows(n)
        }
    } else if (has("most") || has("biggest") || has("largest") || has("heaviest")) && about_bytes {
        if has("received") || has("download") || has("downloaded") {
            Shape::TopDownload(10)
        } else {
            Shape::TopUpload(10)
        }
    } else if phrase("how many") || has("count") || has("number") {
        Shape::Count
    } else {
        Shape::Listing
    };
    let min_upload = volume(&words);
    // A beacon hunt is about calling out; steady NTP and DNS to the site's own servers is
    // what every device does, so without a direction the peers are external.
    let direction = match (shape, direction) {
        (Shape::Beacons, None) => Some(Direction::External),
        (_, direction) => direction,
    };

    let understood = !kinds.is_empty()
        || direction.is_some()
        || !ports.is_empty()
        || time_of_day.is_some()
        || shape != Shape::Listing
        || min_upload.is_some();
    if !understood {
        return Err("I can't translate that offline: it names no device kind, port or \
                    protocol, peer direction, time of day, volume, or hunt shape (scans, \
                    beacons, new peers, top talkers) that the offline planner knows"
            .into());
    }
    Ok(Intent {
        kinds,
        kinds_are_targets,
        direction,
        ports,
        time_of_day,
        window_hours,
        shape,
        min_upload,
    })
}

/// "last 7 days", "past 48 hours", "this week", "today", "yesterday", "last month".
fn window(words: &[String]) -> Option<u64> {
    for (i, word) in words.iter().enumerate() {
        let unit = |w: &str| -> Option<u64> {
            match w {
                "hour" | "hours" | "h" | "hrs" => Some(1),
                "day" | "days" | "d" => Some(24),
                "week" | "weeks" | "w" => Some(24 * 7),
                "month" | "months" => Some(24 * 30),
                _ => None,
            }
        };
        if let Ok(n) = word.parse::<u64>()
            && let Some(unit) = words.get(i + 1).and_then(|w| unit(w))
        {
            return Some(n.max(1) * unit);
        }
        // "48h", "7d"
        if let Some((number, suffix)) = word.split_at_checked(word.len().saturating_sub(1))
            && let (Ok(n), Some(unit)) = (number.parse::<u64>(), unit(suffix))
        {
            return Some(n.max(1) * unit);
        }
        if matches!(word.as_str(), "last" | "past" | "this")
            && let Some(unit) = words.get(i + 1).and_then(|w| unit(w))
        {
            return Some(unit);
        }
    }
    let has = |w: &str| words.iter().any(|x| x == w);
    if has("today") || has("tonight") || has("yesterday") {
        return Some(24);
    }
    if has("weekly") {
        return Some(24 * 7);
    }
    None
}

/// "top 10", "5 busiest", "ten biggest".
fn top_n(words: &[String]) -> Option<u32> {
    let number = |w: &str| -> Option<u32> {
        w.parse::<u32>().ok().or(match w {
            "three" => Some(3),
            "five" => Some(5),
            "ten" => Some(10),
            "twenty" => Some(20),
            _ => None,
        })
    };
    for (i, word) in words.iter().enumerate() {
        if word == "top" {
            return Some(words.get(i + 1).and_then(|w| number(w)).unwrap_or(10).clamp(1, 1000));
        }
        if let Some(n) = number(word)
            && words.get(i + 1).is_some_and(|w| {
                matches!(
                    w.as_str(),
                    "busiest" | "biggest" | "largest" | "noisiest" | "chattiest" | "heaviest"
                )
            })
        {
            return Some(n.clamp(1, 1000));
        }
    }
    None
}

/// "more than 100 MB", "over 1 GB".
fn volume(words: &[String]) -> Option<u64> {
    for (i, word) in words.iter().enumerate() {
        if !matches!(word.as_str(), "than" | "over" | "above" | "exceeding") {
            continue;
        }
        let Some(n) = words.get(i + 1).and_then(|w| w.parse::<f64>().ok()) else { continue };
        let scale = match words.get(i + 2).map(String::as_str) {
            Some("kb") => 1e3,
            Some("mb") => 1e6,
            Some("gb") => 1e9,
            Some("tb") => 1e12,
            _ => continue,
        };
        return Some((n * scale) as u64);
    }
    None
}

/// The query for an intent, before canonical printing.
fn render(intent: &Intent) -> String {
    let lookback = if intent.shape == Shape::NewPeers {
        // Newness needs history: look back a week before the window.
        intent.window_hours + 24 * 7
    } else {
        intent.window_hours
    };
    let mut stages = vec![format!("config timeframe = {lookback}h"), "dataset = xdr_data".into()];
    let mut filters = vec!["event_type = ENUM.STORY".to_string()];
    match intent.direction {
        Some(Direction::External) => {
            filters.push(format!("action_remote_ip not incidr \"{PRIVATE}\""));
        }
        Some(Direction::Internal) => filters.push(format!("action_remote_ip incidr \"{PRIVATE}\"")),
        None => {}
    }
    if !intent.ports.is_empty() {
        let ports: Vec<String> = intent.ports.iter().map(u16::to_string).collect();
        filters.push(format!("action_remote_port in ({})", ports.join(", ")));
    }
    stages.push(format!("filter {}", filters.join(" and ")));
    match intent.time_of_day {
        Some(TimeOfDay::Night) => {
            stages.push("alter hour = extract_time(_time, \"HOUR\")".into());
            stages.push("filter hour < 6 or hour >= 22".into());
        }
        Some(TimeOfDay::BusinessHours) => {
            stages.push("alter hour = extract_time(_time, \"HOUR\")".into());
            stages.push("filter hour >= 8 and hour < 18".into());
        }
        None => {}
    }
    if !intent.kinds.is_empty() {
        let kinds: Vec<String> = intent.kinds.iter().map(|k| format!("\"{k}\"")).collect();
        let side = if intent.kinds_are_targets { "action_remote_ip" } else { "action_local_ip" };
        stages.push(format!(
            "join type = inner (dataset = asset_inventory | filter xdm.asset.type.name in ({}) \
             | fields xdm.asset.name as device, xdm.asset.type.name as device_type, \
             xdm.asset.ipv4_addresses as device_ip) as inv inv.device_ip = {side}",
            kinds.join(", ")
        ));
    }
    // Who is reported: the talker, named by its agent hostname; when the question is
    // about who reaches a kind of device, the talker is the unknown.
    let by_device = if !intent.kinds.is_empty() && intent.kinds_are_targets {
        "action_local_ip, agent_hostname"
    } else if !intent.kinds.is_empty() {
        "action_local_ip, device, device_type"
    } else {
        "action_local_ip, agent_hostname"
    };
    match intent.shape {
        Shape::Listing | Shape::TopUpload(_) | Shape::TopDownload(_) | Shape::TopFlows(_) => {
            let peers = if !intent.kinds.is_empty() && intent.kinds_are_targets {
                "count_distinct(action_remote_ip) as targets"
            } else {
                "count_distinct(action_remote_ip) as peers"
            };
            stages.push(format!(
                "comp count() as flows, {peers}, sum(action_total_upload) as bytes_up, \
                 sum(action_total_download) as bytes_down, values(action_remote_port) as ports \
                 by {by_device}"
            ));
            if let Some(min) = intent.min_upload {
                stages.push(format!("filter bytes_up > {min}"));
            }
            let (key, limit) = match intent.shape {
                Shape::TopUpload(n) => ("bytes_up", n),
                Shape::TopDownload(n) => ("bytes_down", n),
                Shape::TopFlows(n) => ("flows", n),
                _ => ("flows", 100),
            };
            stages.push(format!("sort desc {key}"));
            stages.push(format!("limit {limit}"));
        }
        Shape::Scans => {
            stages.push(format!(
                "comp count_distinct(action_remote_ip) as targets, \
                 count_distinct(action_remote_port) as ports, count() as flows by {by_device}"
            ));
            stages.push("filter targets >= 20 or ports >= 20".into());
            stages.push("sort desc targets".into());
            stages.push("limit 100".into());
        }
        Shape::Beacons => {
            // Steady: at least one conversation per hour of the window with one peer,
            // small each time.
            stages.push(format!(
                "comp count() as flows, sum(action_total_upload) as bytes_up, \
                 min(_time) as first_seen, max(_time) as last_seen \
                 by {by_device}, action_remote_ip, action_remote_port"
            ));
            stages.push(format!("filter flows >= {}", intent.window_hours.max(1)));
            stages.push("alter bytes_per_flow = divide(bytes_up, flows)".into());
            stages.push("filter bytes_per_flow < 100000".into());
            stages.push("sort desc flows".into());
            stages.push("limit 100".into());
        }
        Shape::NewPeers => {
            stages.push(format!(
                "comp min(_time) as first_seen, count() as flows, \
                 sum(action_total_upload) as bytes_up by {by_device}, action_remote_ip, action_remote_port"
            ));
            stages.push(format!(
                "filter timestamp_diff(current_time(), first_seen, \"HOUR\") <= {}",
                intent.window_hours
            ));
            stages.push("sort desc flows".into());
            stages.push("limit 100".into());
        }
        Shape::Count => {
            stages.push(
                "comp count_distinct(action_local_ip) as devices, count() as flows, \
                 count_distinct(action_remote_ip) as peers"
                    .into(),
            );
        }
    }
    stages.join("\n| ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_reads_kinds_roles_ports_times_and_shapes() {
        let i = understand("Which cameras talk to external IPs at night?").unwrap();
        assert_eq!(i.kinds, ["IP Camera"]);
        assert!(!i.kinds_are_targets);
        assert_eq!(
            (i.direction, i.time_of_day),
            (Some(Direction::External), Some(TimeOfDay::Night))
        );
        let i = understand("Who talks Modbus or S7 to the PLCs in the last 7 days?").unwrap();
        assert_eq!(i.kinds, ["PLC"]);
        assert!(i.kinds_are_targets);
        assert_eq!(i.ports, [102, 502]);
        assert_eq!(i.window_hours, 168);
        let i = understand("top 5 devices by bytes uploaded to the internet").unwrap();
        assert_eq!(i.shape, Shape::TopUpload(5));
        let i = understand("any host scanning the network on port 8080?").unwrap();
        assert_eq!((i.shape, i.ports.as_slice()), (Shape::Scans, &[8080][..]));
        let i = understand("pumps that started talking to a new external peer").unwrap();
        assert_eq!(i.shape, Shape::NewPeers);
        let i = understand("devices that sent more than 100 MB outside after hours").unwrap();
        assert_eq!(i.min_upload, Some(100_000_000));
    }

    #[test]
    fn what_it_cannot_see_it_says_so() {
        for question in
            ["which users logged in to the historian?", "what is the weather", "show me files"]
        {
            let err = plan(question).unwrap_err();
            assert!(err.starts_with("I can't translate that offline"), "{question}: {err}");
        }
    }

    #[test]
    fn every_plan_parses_and_is_read_only() {
        for question in [
            "Which cameras talk to external IPs at night?",
            "Who talks Modbus or S7 to the PLCs?",
            "top 10 devices by bytes sent to the internet this week",
            "any scans in the last 48h",
            "beaconing monitors",
            "new external peers for pumps in the last 24 hours",
            "how many devices use telnet",
        ] {
            let plan = plan(question).unwrap();
            let (_, validation) = crate::xql::validate::check(&plan.xql, &hunt_validation());
            assert!(
                validation.valid && validation.read_only,
                "{question}: {validation:?}\n{}",
                plan.xql
            );
        }
    }
}
