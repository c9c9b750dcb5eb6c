//! The simulated fleet: the kinds of device a hospital, an office campus and a plant
//! run, the vendors and models of each, the servers they talk to, and how `--devices`
//! is split among the kinds and turned into inventory rows with addresses.
//!
//! Everything here is a fixed catalogue plus seeded choices (firmware, MAC, per-device
//! rate); no traffic is made here. Addresses are plain arithmetic on a device's place
//! in its kind, so each kind is one subnet (a /16 that looks like a /24 for small
//! fleets) and `.250` of every /24 is never assigned: the rogue master lives there.

use std::net::{IpAddr, Ipv4Addr};

use crate::model::{Criticality, Device, Service};

use super::random::{mix, unit};

/// What a field device is. The order is the inventory order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    InfusionPump,
    PatientMonitor,
    Imaging,
    Hvac,
    Camera,
    BadgeReader,
    Printer,
    Plc,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::InfusionPump,
        Kind::PatientMonitor,
        Kind::Imaging,
        Kind::Hvac,
        Kind::Camera,
        Kind::BadgeReader,
        Kind::Printer,
        Kind::Plc,
    ];

    pub fn spec(self) -> &'static KindSpec {
        &KINDS[self as usize]
    }
}

/// Where a device stands; schedules follow the site's local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Site {
    Hospital,
    Campus,
    Plant,
    Datacenter,
}

impl Site {
    pub fn name(self) -> &'static str {
        match self {
            Site::Hospital => "hospital-main",
            Site::Campus => "campus-hq",
            Site::Plant => "plant-east",
            Site::Datacenter => "datacenter",
        }
    }
}

/// A kind's place in the network and its share of the fleet.
pub(crate) struct KindSpec {
    pub device_type: &'static str,
    pub id_prefix: &'static str,
    pub segment: &'static str,
    /// Second octet of the kind's `10.x.0.0/16`.
    pub net: u8,
    pub site: Site,
    /// Relative share of `--devices`.
    pub weight: usize,
    pub models: &'static [ModelSpec],
}

/// One vendor model: what the inventory says about it and how it talks.
pub(crate) struct ModelSpec {
    pub vendor: &'static str,
    pub model: &'static str,
    pub host_prefix: &'static str,
    pub firmware: &'static [&'static str],
    pub oui: [u8; 3],
    pub criticality: Criticality,
    /// The port of the model's main conversation (with its server, or from it).
    pub port: u16,
    pub service: Service,
    /// TCP ports that answer a SYN, for port scans.
    pub open_ports: &'static [u16],
    /// The vendor cloud the model heartbeats to, if it does.
    pub cloud: Option<Ipv4Addr>,
    /// The vendor update server the model checks in with daily, if it does.
    pub updates: Option<Ipv4Addr>,
}

const fn model(vendor: &'static str, model: &'static str, host_prefix: &'static str) -> ModelSpec {
    ModelSpec {
        vendor,
        model,
        host_prefix,
        firmware: &[],
        oui: [0, 0, 0],
        criticality: Criticality::Medium,
        port: 0,
        service: Service::Unknown,
        open_ports: &[],
        cloud: None,
        updates: None,
    }
}

const PUMPS: [ModelSpec; 2] = [
    ModelSpec {
        firmware: &["12.1.2", "12.1.3", "12.3.0"],
        oui: [0x00, 0x1a, 0x3f],
        criticality: Criticality::Critical,
        port: 443,
        service: Service::Ssl,
        cloud: Some(Ipv4Addr::new(198, 51, 100, 10)),
        ..model("BD", "Alaris 8015", "alaris8015")
    },
    ModelSpec {
        firmware: &["8.00.01", "8.01.00"],
        oui: [0x00, 0x0b, 0x9d],
        criticality: Criticality::Critical,
        port: 443,
        service: Service::Ssl,
        cloud: Some(Ipv4Addr::new(198, 51, 100, 11)),
        ..model("Baxter", "Sigma Spectrum", "spectrum")
    },
];

const MONITORS: [ModelSpec; 2] = [
    ModelSpec {
        firmware: &["M.00.03", "M.00.05", "N.01.02"],
        oui: [0x00, 0x09, 0xfb],
        criticality: Criticality::Critical,
        port: 24105,
        open_ports: &[24105],
        cloud: Some(Ipv4Addr::new(198, 51, 100, 12)),
        updates: Some(Ipv4Addr::new(203, 0, 113, 20)),
        ..model("Philips", "IntelliVue MX800", "mx800")
    },
    ModelSpec {
        firmware: &["3.1.1", "3.2.0", "3.3.1"],
        oui: [0x00, 0x1b, 0x8f],
        criticality: Criticality::Critical,
        port: 2000,
        open_ports: &[2000],
        cloud: Some(Ipv4Addr::new(198, 51, 100, 13)),
        updates: Some(Ipv4Addr::new(203, 0, 113, 21)),
        ..model("GE HealthCare", "CARESCAPE B650", "b650")
    },
];

const IMAGING: [ModelSpec; 2] = [
    ModelSpec {
        firmware: &["VA30A", "VA40A"],
        oui: [0x00, 0x0e, 0x8c],
        criticality: Criticality::High,
        port: 104,
        service: Service::Dicom,
        open_ports: &[104, 445, 3389],
        ..model("Siemens Healthineers", "SOMATOM go.Up", "ct-goup")
    },
    ModelSpec {
        firmware: &["5.7.1", "5.9.0"],
        oui: [0x00, 0x09, 0xfc],
        criticality: Criticality::High,
        port: 104,
        service: Service::Dicom,
        open_ports: &[104, 445],
        ..model("Philips", "Ingenia 1.5T", "mr-ingenia")
    },
];

const HVAC: [ModelSpec; 2] = [
    ModelSpec {
        firmware: &["10.1", "11.0"],
        oui: [0x00, 0x10, 0x7e],
        port: 47808,
        service: Service::Bacnet,
        open_ports: &[80],
        ..model("Johnson Controls", "FEC2611", "fec2611")
    },
    ModelSpec {
        firmware: &["V6.00.150", "V7.00.310"],
        oui: [0x00, 0xa0, 0x03],
        port: 47808,
        service: Service::Bacnet,
        open_ports: &[80, 443],
        ..model("Siemens", "Desigo PXC5.E003", "pxc5")
    },
];

const CAMERAS: [ModelSpec; 2] = [
    ModelSpec {
        firmware: &["10.12.166", "11.3.70"],
        oui: [0xac, 0xcc, 0x8e],
        port: 554,
        service: Service::Rtsp,
        open_ports: &[80, 443, 554],
        ..model("Axis", "P3245-LV", "axis-p3245")
    },
    ModelSpec {
        firmware: &["V5.7.3", "V5.7.12"],
        oui: [0x44, 0x19, 0xb6],
        criticality: Criticality::Low,
        port: 554,
        service: Service::Rtsp,
        // Telnet still answers on this firmware line, which is what a brute force
        // against the cameras goes after.
        open_ports: &[23, 80, 443, 554],
        ..model("Hikvision", "DS-2CD2143G2-I", "hik-2143")
    },
];

const BADGE_READERS: [ModelSpec; 2] = [
    ModelSpec {
        firmware: &["3.5.2.1483", "3.7.0.36"],
        oui: [0x00, 0x06, 0x8e],
        port: 4070,
        open_ports: &[80, 4070],
        ..model("HID", "VertX EVO V2000", "vertx-v2000")
    },
    ModelSpec {
        firmware: &["1.9.4", "2.0.1"],
        oui: [0x00, 0x06, 0x8e],
        port: 443,
        service: Service::Ssl,
        open_ports: &[443],
        ..model("HID", "Aero X1100A", "aero-x1100")
    },
];

const PRINTERS: [ModelSpec; 2] = [
    ModelSpec {
        firmware: &["2409081_000591", "2506116_001232"],
        oui: [0x3c, 0xd9, 0x2b],
        criticality: Criticality::Low,
        port: 9100,
        open_ports: &[80, 443, 631, 9100],
        ..model("HP", "LaserJet Enterprise M611", "hp-m611")
    },
    ModelSpec {
        firmware: &["72.51.22", "72.68.31"],
        oui: [0x00, 0x00, 0xaa],
        criticality: Criticality::Low,
        port: 631,
        service: Service::Http,
        open_ports: &[80, 443, 631, 9100],
        ..model("Xerox", "VersaLink C405", "xrx-c405")
    },
];

const PLCS: [ModelSpec; 3] = [
    ModelSpec {
        firmware: &["V2.9.4", "V3.0.3", "V3.1.1"],
        oui: [0x00, 0x1b, 0x1b],
        criticality: Criticality::Critical,
        port: 102,
        service: Service::S7comm,
        open_ports: &[80, 102, 443],
        ..model("Siemens", "S7-1500 CPU 1516-3 PN/DP", "s7-1516")
    },
    ModelSpec {
        firmware: &["33.011", "34.014", "35.011"],
        oui: [0x00, 0x00, 0xbc],
        criticality: Criticality::Critical,
        port: 44818,
        service: Service::Enip,
        open_ports: &[80, 44818],
        ..model("Rockwell Automation", "ControlLogix 1756-L83E", "clx-l83e")
    },
    ModelSpec {
        firmware: &["3.40", "3.50"],
        oui: [0x00, 0x80, 0xf4],
        criticality: Criticality::High,
        port: 502,
        service: Service::Modbus,
        open_ports: &[80, 502],
        ..model("Schneider Electric", "Modicon M340 BMXP342020", "m340")
    },
];

const KINDS: [KindSpec; 8] = [
    KindSpec {
        device_type: "Infusion Pump",
        id_prefix: "pump",
        segment: "clinical-devices",
        net: 20,
        site: Site::Hospital,
        weight: 18,
        models: &PUMPS,
    },
    KindSpec {
        device_type: "Patient Monitor",
        id_prefix: "mon",
        segment: "patient-monitoring",
        net: 21,
        site: Site::Hospital,
        weight: 14,
        models: &MONITORS,
    },
    KindSpec {
        device_type: "Imaging Modality",
        id_prefix: "img",
        segment: "imaging",
        net: 22,
        site: Site::Hospital,
        weight: 6,
        models: &IMAGING,
    },
    KindSpec {
        device_type: "HVAC Controller",
        id_prefix: "hvac",
        segment: "building-automation",
        net: 40,
        site: Site::Campus,
        weight: 8,
        models: &HVAC,
    },
    KindSpec {
        device_type: "IP Camera",
        id_prefix: "cam",
        segment: "cameras",
        net: 41,
        site: Site::Campus,
        weight: 14,
        models: &CAMERAS,
    },
    KindSpec {
        device_type: "Badge Reader",
        id_prefix: "badge",
        segment: "physical-security",
        net: 42,
        site: Site::Campus,
        weight: 8,
        models: &BADGE_READERS,
    },
    KindSpec {
        device_type: "Printer",
        id_prefix: "prn",
        segment: "office-printers",
        net: 43,
        site: Site::Campus,
        weight: 8,
        models: &PRINTERS,
    },
    KindSpec {
        device_type: "PLC",
        id_prefix: "plc",
        segment: "ot-cell-1",
        net: 60,
        site: Site::Plant,
        weight: 14,
        models: &PLCS,
    },
];

/// Fixed addresses of the internal servers and of the Internet services every site
/// uses. Vendor clouds and update servers are in the model catalogue.
pub(crate) mod addr {
    use std::net::Ipv4Addr;

    pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 53);
    pub const NTP: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 123);
    /// One pump server per pump model, in catalogue order.
    pub const PUMP_SERVERS: [Ipv4Addr; 2] =
        [Ipv4Addr::new(10, 10, 1, 20), Ipv4Addr::new(10, 10, 1, 21)];
    /// The pump server a fleet move goes to; silent until then.
    pub const NEW_PUMP_SERVER: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 22);
    /// One central station per monitor model, in catalogue order.
    pub const CENTRAL_STATIONS: [Ipv4Addr; 2] =
        [Ipv4Addr::new(10, 10, 1, 30), Ipv4Addr::new(10, 10, 1, 31)];
    pub const PACS: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 40);
    pub const BACKUP: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 45);
    pub const BMS: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 50);
    pub const NVR: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 60);
    pub const ACCESS_CONTROL: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 70);
    pub const PRINT: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 80);
    pub const SCADA: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 90);
    pub const HMI: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 91);
    pub const JUMP_HOST: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 100);
    pub const FILES: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 110);
    /// Office workstations: reachable, not in the device inventory.
    pub const WORKSTATION_NET: [u8; 3] = [10, 30, 1];
    /// Where the internal resolver forwards; devices never use it directly.
    pub const UPSTREAM_DNS: Ipv4Addr = Ipv4Addr::new(9, 9, 9, 9);
    /// Where the internal NTP server syncs.
    pub const PUBLIC_NTP: Ipv4Addr = Ipv4Addr::new(162, 159, 200, 123);
}

/// One internal server as the inventory lists it.
pub(crate) struct ServerSpec {
    pub id: &'static str,
    pub hostname: &'static str,
    pub ip: Ipv4Addr,
    pub device_type: &'static str,
    pub vendor: &'static str,
    pub model: &'static str,
    pub firmware: &'static str,
    pub open_ports: &'static [u16],
}

const WINDOWS: &str = "Windows Server 2022";
const WINDOWS_BUILD: &str = "10.0.20348.2849";

pub(crate) const SERVERS: [ServerSpec; 16] = [
    server("srv-dns-01", "dns01", addr::DNS, "DNS Server", "Microsoft", WINDOWS, &[53, 3389]),
    ServerSpec {
        firmware: "7.08.007",
        ..server("srv-ntp-01", "ntp01", addr::NTP, "NTP Server", "Meinberg", "LANTIME M300", &[22])
    },
    ServerSpec {
        firmware: "12.1.3.12",
        ..server(
            "srv-pump-01",
            "pumpsrv01",
            addr::PUMP_SERVERS[0],
            "Pump Server",
            "BD",
            "Alaris Systems Manager",
            &[443, 3389],
        )
    },
    ServerSpec {
        firmware: "2.4.1",
        ..server(
            "srv-pump-02",
            "pumpsrv02",
            addr::PUMP_SERVERS[1],
            "Pump Server",
            "Baxter",
            "Dose IQ Safety Software",
            &[443, 3389],
        )
    },
    ServerSpec {
        firmware: "C.02.01",
        ..server(
            "srv-cs-01",
            "central01",
            addr::CENTRAL_STATIONS[0],
            "Central Station",
            "Philips",
            "IntelliVue Information Center iX",
            &[24105, 3389],
        )
    },
    ServerSpec {
        firmware: "2.1.4",
        ..server(
            "srv-cs-02",
            "central02",
            addr::CENTRAL_STATIONS[1],
            "Central Station",
            "GE HealthCare",
            "CARESCAPE Central Station",
            &[2000, 3389],
        )
    },
    ServerSpec {
        firmware: "26.1",
        ..server("srv-pacs-01", "pacs01", addr::PACS, "PACS", "Sectra", "Sectra PACS", &[104, 443])
    },
    ServerSpec {
        firmware: "12.3.0.310",
        ..server(
            "srv-backup-01",
            "backup01",
            addr::BACKUP,
            "Backup Server",
            "Veeam",
            "Backup & Replication",
            &[445, 3389, 9392],
        )
    },
    ServerSpec {
        firmware: "13.0",
        ..server(
            "srv-bms-01",
            "bms01",
            addr::BMS,
            "BMS Server",
            "Johnson Controls",
            "Metasys ADX",
            &[443, 3389],
        )
    },
    ServerSpec {
        firmware: "2024 R2",
        ..server(
            "srv-nvr-01",
            "nvr01",
            addr::NVR,
            "NVR",
            "Milestone",
            "XProtect Corporate",
            &[80, 443, 3389],
        )
    },
    ServerSpec {
        firmware: "8.2",
        ..server(
            "srv-acs-01",
            "acs01",
            addr::ACCESS_CONTROL,
            "Access Control Server",
            "LenelS2",
            "OnGuard",
            &[443, 4070, 3389],
        )
    },
    server(
        "srv-print-01",
        "print01",
        addr::PRINT,
        "Print Server",
        "Microsoft",
        WINDOWS,
        &[445, 631, 3389],
    ),
    ServerSpec {
        firmware: "2023 R2 P01",
        ..server(
            "srv-scada-01",
            "scada01",
            addr::SCADA,
            "SCADA Server",
            "AVEVA",
            "System Platform",
            &[445, 3389],
        )
    },
    ServerSpec {
        firmware: "V20",
        ..server(
            "srv-hmi-01",
            "hmi01",
            addr::HMI,
            "HMI Server",
            "Siemens",
            "WinCC Unified",
            &[80, 443, 3389],
        )
    },
    server(
        "srv-jump-01",
        "jump01",
        addr::JUMP_HOST,
        "Jump Host",
        "Microsoft",
        WINDOWS,
        &[22, 3389],
    ),
    server(
        "srv-files-01",
        "files01",
        addr::FILES,
        "File Server",
        "Microsoft",
        WINDOWS,
        &[445, 3389],
    ),
];

const fn server(
    id: &'static str,
    hostname: &'static str,
    ip: Ipv4Addr,
    device_type: &'static str,
    vendor: &'static str,
    model: &'static str,
    open_ports: &'static [u16],
) -> ServerSpec {
    let firmware = WINDOWS_BUILD;
    ServerSpec { id, hostname, ip, device_type, vendor, model, firmware, open_ports }
}

/// A field device: its place in the fleet, its catalogue entry and its inventory row.
pub(crate) struct FieldDevice {
    /// Position in the fleet; the key of all of the device's random streams.
    pub index: usize,
    pub kind: Kind,
    /// Index into the kind's models.
    pub model: usize,
    pub ip: Ipv4Addr,
    /// How busy this device is compared with its peers, 0.7–1.3.
    pub rate: f64,
    pub row: Device,
}

impl FieldDevice {
    pub fn spec(&self) -> &'static ModelSpec {
        &self.kind.spec().models[self.model]
    }

    pub fn site(&self) -> Site {
        self.kind.spec().site
    }
}

/// The field devices and the servers they talk to.
pub(crate) struct Fleet {
    pub devices: Vec<FieldDevice>,
    /// Indices into `devices`, per kind in `Kind::ALL` order.
    pub by_kind: [Vec<usize>; 8],
    pub servers: Vec<Device>,
}

impl Fleet {
    /// Builds `total` field devices split among the kinds by weight. `new_pump_server`
    /// adds the spare pump server of that pump model, which a fleet move will use.
    pub fn build(seed: u64, total: usize, new_pump_server: Option<usize>) -> Fleet {
        let counts = allocate(total);
        let mut devices = Vec::with_capacity(total);
        let mut by_kind: [Vec<usize>; 8] = Default::default();
        for (kind, count) in Kind::ALL.into_iter().zip(counts) {
            for place in 0..count {
                let index = devices.len();
                by_kind[kind as usize].push(index);
                devices.push(field_device(seed, kind, place, index));
            }
        }

        let mut servers: Vec<Device> = SERVERS.iter().map(server_row).collect();
        if let Some(pump_model) = new_pump_server {
            let old = &SERVERS[2 + pump_model.min(1)];
            servers.push(server_row(&ServerSpec {
                id: "srv-pump-03",
                hostname: "pumpsrv03",
                ip: addr::NEW_PUMP_SERVER,
                ..*old
            }));
        }
        Fleet { devices, by_kind, servers }
    }

    pub fn of_kind(&self, kind: Kind) -> &[usize] {
        &self.by_kind[kind as usize]
    }
}

/// Splits the fleet among the kinds by weight (largest remainder), with at least three
/// of each kind once there are 30 devices, so every kind has a peer group.
/// Every field-device model the simulator uses, as (vendor, model); servers excluded.
pub fn field_models() -> Vec<(&'static str, &'static str)> {
    KINDS.iter().flat_map(|kind| kind.models.iter().map(|m| (m.vendor, m.model))).collect()
}

pub(crate) fn allocate(total: usize) -> [usize; 8] {
    let floor = if total >= 30 { 3 } else { 0 };
    let mut counts = [floor; 8];
    let rest = total - floor * counts.len();
    let weight_sum: usize = KINDS.iter().map(|kind| kind.weight).sum();

    let mut remainders = [(0usize, 0usize); 8];
    let mut given = 0;
    for (idx, kind) in KINDS.iter().enumerate() {
        let share = rest * kind.weight;
        counts[idx] += share / weight_sum;
        given += share / weight_sum;
        remainders[idx] = (share % weight_sum, idx);
    }
    // Largest remainder first; ties go to the kind listed first.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, idx) in remainders.iter().take(rest - given) {
        counts[*idx] += 1;
    }
    counts
}

fn field_device(seed: u64, kind: Kind, place: usize, index: usize) -> FieldDevice {
    let spec = kind.spec();
    let model = place % spec.models.len();
    let model_spec = &spec.models[model];
    let ip = Ipv4Addr::new(10, spec.net, 1 + (place / 200) as u8, 10 + (place % 200) as u8);

    let key = index as u64;
    let firmware_pick = unit(&[seed, key, TAG_FIRMWARE]) * model_spec.firmware.len() as f64;
    let firmware = model_spec.firmware.get(firmware_pick as usize).copied().unwrap_or("");
    let mac_tail = mix(&[seed, key, TAG_MAC]).to_be_bytes();
    let [a, b, c] = model_spec.oui;
    let mac = format!(
        "{a:02x}:{b:02x}:{c:02x}:{:02x}:{:02x}:{:02x}",
        mac_tail[0], mac_tail[1], mac_tail[2]
    );

    let row = Device {
        device_id: format!("{}-{:04}", spec.id_prefix, place + 1),
        ip: IpAddr::V4(ip),
        mac,
        hostname: format!("{}-{:04}", model_spec.host_prefix.to_ascii_lowercase(), place + 1),
        device_type: spec.device_type.to_string(),
        vendor: model_spec.vendor.to_string(),
        model: model_spec.model.to_string(),
        firmware: firmware.to_string(),
        segment: spec.segment.to_string(),
        site: spec.site.name().to_string(),
        criticality: model_spec.criticality,
        tags: Default::default(),
    };
    let rate = 0.7 + 0.6 * unit(&[seed, key, TAG_RATE]);
    FieldDevice { index, kind, model, ip, rate, row }
}

fn server_row(spec: &ServerSpec) -> Device {
    Device {
        device_id: spec.id.to_string(),
        ip: IpAddr::V4(spec.ip),
        mac: {
            let [_, _, _, last] = spec.ip.octets();
            format!("00:50:56:8a:01:{last:02x}")
        },
        hostname: spec.hostname.to_string(),
        device_type: spec.device_type.to_string(),
        vendor: spec.vendor.to_string(),
        model: spec.model.to_string(),
        firmware: spec.firmware.to_string(),
        segment: "servers".to_string(),
        site: Site::Datacenter.name().to_string(),
        criticality: Criticality::High,
        tags: Default::default(),
    }
}

const TAG_FIRMWARE: u64 = 0xf1;
const TAG_MAC: u64 = 0xaa;
const TAG_RATE: u64 = 0x4a;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_gets_three_once_the_fleet_is_30() {
        for total in [30, 60, 61, 99, 10_000] {
            let counts = allocate(total);
            assert_eq!(counts.iter().sum::<usize>(), total);
            assert!(counts.iter().all(|c| *c >= 3), "{total}: {counts:?}");
        }
    }

    #[test]
    fn small_fleets_are_split_too() {
        for total in 0..30 {
            assert_eq!(allocate(total).iter().sum::<usize>(), total);
        }
        assert_eq!(allocate(1), [1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn addresses_are_unique_and_skip_the_rogue_slot() {
        let fleet = Fleet::build(7, 2_000, Some(1));
        let mut ips: Vec<Ipv4Addr> = fleet.devices.iter().map(|d| d.ip).collect();
        ips.extend(fleet.servers.iter().filter_map(|s| match s.ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }));
        let before = ips.len();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), before);
        assert!(ips.iter().all(|ip| ip.octets()[3] != 250));
        assert_eq!(fleet.servers.len(), SERVERS.len() + 1);
        let spare = fleet.servers.last().map(|server| server.model.as_str());
        assert_eq!(spare, Some("Dose IQ Safety Software"));
    }
}
