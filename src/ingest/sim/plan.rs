//! The labelled part of a run: which devices get which injected scenario, benign change
//! or look-alike, when, and the flows the scenarios and one-off events add. The truth
//! file is written from here.
//!
//! Planning happens once, before any hour is generated, from its own random stream.
//! Injected scenarios and benign changes all fall after `baseline_until`; each injected
//! scenario takes a different device, and devices that a benign change touches are
//! avoided when another candidate exists, so a truth entry has one explanation.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::model::Service;

use super::Role;
use super::clock::{DAY, HOUR, MINUTE, SECOND, day_start, weekday};
use super::fleet::{FieldDevice, Fleet, Kind, SERVERS, Site, addr, allocate};
use super::flow::{Conn, SimFlow};
use super::random::{bytes_between, mix, secs_between, sub_rng, uniform_times};

/// Every labelled behaviour, in truth-file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Scenario {
    OutboundSshMedical,
    HttpsBeacon,
    NightBulkUpload,
    InternalPortSweep,
    RogueOtMaster,
    PublicDnsHighVolume,
    TelnetBruteforceCameras,
    BuildingControllerRdpSmb,
    FleetServerMove,
    FirmwareUpdate,
    NewDeviceJoins,
    DaylightSavingShift,
    JumpHostSsh,
    VendorCloudHeartbeat,
    NightlyImagingBackup,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::OutboundSshMedical => "outbound_ssh_medical",
            Scenario::HttpsBeacon => "https_beacon",
            Scenario::NightBulkUpload => "night_bulk_upload",
            Scenario::InternalPortSweep => "internal_port_sweep",
            Scenario::RogueOtMaster => "rogue_ot_master",
            Scenario::PublicDnsHighVolume => "public_dns_high_volume",
            Scenario::TelnetBruteforceCameras => "telnet_bruteforce_cameras",
            Scenario::BuildingControllerRdpSmb => "building_controller_rdp_smb",
            Scenario::FleetServerMove => "fleet_server_move",
            Scenario::FirmwareUpdate => "firmware_update",
            Scenario::NewDeviceJoins => "new_device_joins",
            Scenario::DaylightSavingShift => "daylight_saving_shift",
            Scenario::JumpHostSsh => "jump_host_ssh",
            Scenario::VendorCloudHeartbeat => "vendor_cloud_heartbeat",
            Scenario::NightlyImagingBackup => "nightly_imaging_backup",
        }
    }

    /// ATT&CK for ICS techniques of an injected scenario; none for benign ones.
    pub fn techniques(self) -> &'static [&'static str] {
        match self {
            Scenario::OutboundSshMedical => &["T0886", "T0869"],
            Scenario::HttpsBeacon => &["T0869", "T0885"],
            Scenario::NightBulkUpload => &["T0882"],
            Scenario::InternalPortSweep => &["T0846"],
            Scenario::RogueOtMaster => &["T0848", "T0855"],
            Scenario::PublicDnsHighVolume => &["T0869"],
            Scenario::TelnetBruteforceCameras => &["T0812", "T0886"],
            Scenario::BuildingControllerRdpSmb => &["T0886", "T0867"],
            _ => &[],
        }
    }

    pub fn benign(self) -> bool {
        self.techniques().is_empty()
    }
}

/// One truth entry before formatting: a device and the window its label covers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Label {
    pub scenario: Scenario,
    pub device_id: String,
    pub role: Role,
    pub start: i64,
    pub end: i64,
}

/// A fleet's move to the new pump server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ServerMove {
    pub pump_model: usize,
    pub at: i64,
}

/// The benign changes that alter routine traffic from their moment on.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Changes {
    pub server_move: Option<ServerMove>,
    /// A device silent until it joins: (fleet index, moment).
    pub joiner: Option<(usize, i64)>,
    /// A site whose local time moves one hour ahead: (site, moment).
    pub dst: Option<(Site, i64)>,
}

/// The run's time bounds, microseconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub start: i64,
    pub baseline_until: i64,
    pub end: i64,
}

/// Everything labelled about a run.
pub(crate) struct Plan {
    pub changes: Changes,
    /// Flows of scenarios and one-off events, in write order.
    pub events: Vec<SimFlow>,
    pub labels: Vec<Label>,
}

/// Which pump model moves to the new pump server, if the fleet has pumps. Decided
/// before the fleet is built, because the new server is in the inventory from the start.
pub(crate) fn moving_pump_model(seed: u64, total: usize) -> Option<usize> {
    let pumps = allocate(total)[Kind::InfusionPump as usize];
    // Models are dealt round-robin, so model 1 exists once there are two pumps.
    let models_present = pumps.min(2);
    (models_present > 0)
        .then(|| (mix(&[seed, TAG_PLAN, TAG_MOVE]) % models_present as u64) as usize)
}

impl Plan {
    pub fn build(seed: u64, fleet: &Fleet, bounds: Bounds, moving: Option<usize>) -> Plan {
        let mut planner = Planner {
            fleet,
            bounds,
            rng: sub_rng(&[seed, TAG_PLAN]),
            used: HashSet::new(),
            benign: HashSet::new(),
            used_remotes: HashSet::new(),
            changes: Changes::default(),
            events: Vec::new(),
            labels: Vec::new(),
        };

        // Benign changes first, so the injected scenarios can keep off their devices.
        planner.server_move(moving);
        planner.firmware_update();
        planner.new_device_joins();
        planner.daylight_saving_shift();

        planner.outbound_ssh_medical();
        planner.https_beacon();
        planner.night_bulk_upload();
        planner.internal_port_sweep();
        planner.rogue_ot_master();
        planner.public_dns_high_volume();
        planner.telnet_bruteforce_cameras();
        planner.building_controller_rdp_smb();

        planner.jump_host_ssh();
        planner.whole_period_labels(
            Scenario::VendorCloudHeartbeat,
            &[Kind::InfusionPump, Kind::PatientMonitor],
        );
        planner.whole_period_labels(Scenario::NightlyImagingBackup, &[Kind::Imaging]);

        let Planner { changes, mut events, mut labels, .. } = planner;
        events.sort_by_key(SimFlow::sort_key);
        // Stable: within a scenario, labels keep the order they were planned in.
        labels.sort_by_key(|label| label.scenario);
        Plan { changes, events, labels }
    }
}

const TAG_PLAN: u64 = 0x91a4;
const TAG_MOVE: u64 = 0x30;

/// The ports an internal sweep tries on every address.
const SWEEP_PORTS: [u16; 8] = [22, 23, 80, 102, 443, 502, 3389, 44818];

struct Planner<'a> {
    fleet: &'a Fleet,
    bounds: Bounds,
    rng: ChaCha8Rng,
    /// Devices that already carry an injected scenario.
    used: HashSet<usize>,
    /// Devices that a benign change touches.
    benign: HashSet<usize>,
    used_remotes: HashSet<Ipv4Addr>,
    changes: Changes,
    events: Vec<SimFlow>,
    labels: Vec<Label>,
}

impl Planner<'_> {
    fn device(&self, index: usize) -> &FieldDevice {
        &self.fleet.devices[index]
    }

    /// Labels a device. An injected scenario is labelled by the clock hours in which it
    /// actually added flows touching the device: one entry per run of consecutive such
    /// hours, from the first to just after the last flow start, so that no labelled
    /// window is one in which the attack left no trace.
    fn label(&mut self, scenario: Scenario, index: usize, start: i64, end: i64) {
        let device = self.device(index);
        let (ip, device_id) = (device.ip, device.row.device_id.clone());
        self.label_ip(scenario, Role::Subject, ip, &device_id, start, end);
    }

    fn label_ip(
        &mut self,
        scenario: Scenario,
        role: Role,
        ip: Ipv4Addr,
        device_id: &str,
        start: i64,
        end: i64,
    ) {
        if scenario.benign() {
            let device_id = device_id.to_string();
            self.labels.push(Label { scenario, device_id, role, start, end });
            return;
        }
        let mut starts: Vec<i64> = self
            .events
            .iter()
            .filter(|e| (e.orig == ip || e.resp == ip) && e.ts >= start && e.ts < end)
            .map(|e| e.ts)
            .collect();
        starts.sort_unstable();
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for ts in starts {
            match runs.last_mut() {
                Some((_, last)) if ts.div_euclid(HOUR) <= last.div_euclid(HOUR) + 1 => *last = ts,
                _ => runs.push((ts, ts)),
            }
        }
        for (first, last) in runs {
            let device_id = device_id.to_string();
            let (start, end) = (first, last + SECOND);
            self.labels.push(Label { scenario, device_id, role, start, end });
        }
    }

    fn candidates(&self, kinds: &[Kind]) -> Vec<usize> {
        kinds.iter().flat_map(|kind| self.fleet.of_kind(*kind).iter().copied()).collect()
    }

    /// Picks a device for an injected scenario: never one that already has one, and
    /// one untouched by benign changes when there is such a device.
    fn pick(&mut self, candidates: &[usize]) -> Option<usize> {
        // A device that is not on the network yet cannot be the one misbehaving.
        let joiner = self.changes.joiner.map(|(index, _)| index);
        let free: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|idx| !self.used.contains(idx) && Some(*idx) != joiner)
            .collect();
        let clean: Vec<usize> =
            free.iter().copied().filter(|idx| !self.benign.contains(idx)).collect();
        let pool = if clean.is_empty() { free } else { clean };
        let chosen = *pool.choose(&mut self.rng)?;
        self.used.insert(chosen);
        Some(chosen)
    }

    /// A window of `min..=max` minutes inside the scoring period, on whole minutes.
    fn window(&mut self, min_minutes: i64, max_minutes: i64) -> (i64, i64) {
        let length = self.rng.gen_range(min_minutes..=max_minutes) * MINUTE;
        let Bounds { baseline_until, end, .. } = self.bounds;
        let earliest = baseline_until + 30 * MINUTE;
        let latest = (end - length - 30 * MINUTE).max(earliest);
        let start = earliest + self.rng.gen_range(0..=(latest - earliest) / MINUTE) * MINUTE;
        (start, (start + length).min(end))
    }

    /// A moment in the first half of the scoring period, on a whole minute.
    fn early_moment(&mut self) -> i64 {
        let Bounds { baseline_until, end, .. } = self.bounds;
        let span = ((end - baseline_until) / 2 - 2 * HOUR).max(MINUTE);
        baseline_until + 2 * HOUR + self.rng.gen_range(0..span / MINUTE) * MINUTE
    }

    /// An external address no vendor and no other scenario uses, from the
    /// documentation ranges.
    fn new_remote(&mut self) -> Ipv4Addr {
        loop {
            let remote = if self.rng.gen_bool(0.5) {
                Ipv4Addr::new(192, 0, 2, self.rng.gen_range(1..=254))
            } else {
                Ipv4Addr::new(203, 0, 113, self.rng.gen_range(128..=254))
            };
            if self.used_remotes.insert(remote) {
                return remote;
            }
        }
    }

    fn port(&mut self) -> u16 {
        self.rng.gen_range(49152..=65535)
    }

    fn server_move(&mut self, moving: Option<usize>) {
        let Some(pump_model) = moving else { return };
        let at = self.early_moment();
        self.changes.server_move = Some(ServerMove { pump_model, at });
        for index in self.candidates(&[Kind::InfusionPump]) {
            if self.device(index).model == pump_model {
                self.benign.insert(index);
                self.label(Scenario::FleetServerMove, index, at, self.bounds.end);
            }
        }
    }

    /// One monitor model downloads a new image from its vendor's update server, every
    /// device within a day of the first.
    fn firmware_update(&mut self) {
        let monitors = self.candidates(&[Kind::PatientMonitor]);
        let mut models: Vec<usize> = monitors.iter().map(|idx| self.device(*idx).model).collect();
        models.sort_unstable();
        models.dedup();
        let Some(&model) = models.choose(&mut self.rng) else { return };

        let image = bytes_between(&mut self.rng, 100_000_000, 400_000_000);
        let first = self.early_moment();
        let spread = (self.bounds.end - first - HOUR).clamp(MINUTE, DAY);
        for index in monitors {
            let device = self.device(index);
            let (ip, Some(updates)) = (device.ip, device.spec().updates) else { continue };
            if device.model != model {
                continue;
            }
            let at = first + self.rng.gen_range(0..spread / SECOND) * SECOND;
            let received = image + bytes_between(&mut self.rng, 4_000, 9_000);
            let mbps = self.rng.gen_range(20.0..100.0);
            let duration = (received as f64 * 8.0 / (mbps * 1e6) * SECOND as f64) as i64;
            let sent = bytes_between(&mut self.rng, 30_000, 80_000);
            let port = self.port();
            let conn = Conn::new(at, ip, port, updates, 443);
            self.events.push(conn.tcp(Service::Ssl, duration, sent, received));
            self.benign.insert(index);
            self.label(Scenario::FirmwareUpdate, index, at, self.bounds.end);
        }
    }

    /// A device of a model with at least two more devices starts talking mid-run, so
    /// its peer group exists before it does.
    fn new_device_joins(&mut self) {
        let mut per_model: HashMap<(Kind, usize), usize> = HashMap::new();
        for device in &self.fleet.devices {
            *per_model.entry((device.kind, device.model)).or_default() += 1;
        }
        let pool: Vec<usize> = self
            .fleet
            .devices
            .iter()
            .filter(|device| per_model[&(device.kind, device.model)] >= 3)
            .map(|device| device.index)
            .filter(|idx| !self.benign.contains(idx))
            .collect();
        let Some(&index) = pool.choose(&mut self.rng) else { return };
        let at = self.early_moment();
        self.changes.joiner = Some((index, at));
        self.benign.insert(index);
        self.label(Scenario::NewDeviceJoins, index, at, self.bounds.end);
    }

    /// One site's clocks move an hour ahead, at 02:00 on the first Sunday of the
    /// scoring period if there is one, so its business hours start an hour earlier in
    /// UTC from then on.
    fn daylight_saving_shift(&mut self) {
        let affected = |site: Site| -> &'static [Kind] {
            match site {
                Site::Hospital => &[Kind::Imaging],
                Site::Campus => &[Kind::Printer, Kind::BadgeReader, Kind::Hvac],
                Site::Plant | Site::Datacenter => &[],
            }
        };
        let sites: Vec<Site> = [Site::Hospital, Site::Campus]
            .into_iter()
            .filter(|site| !self.candidates(affected(*site)).is_empty())
            .collect();
        let Some(&site) = sites.choose(&mut self.rng) else { return };

        let Bounds { baseline_until, end, .. } = self.bounds;
        let mut at = day_start(baseline_until) + 2 * HOUR;
        while at < baseline_until || weekday(at) != 6 {
            at += DAY;
        }
        if at >= end - HOUR {
            at = self.early_moment();
        }
        self.changes.dst = Some((site, at));
        for index in self.candidates(affected(site)) {
            self.label(Scenario::DaylightSavingShift, index, at, end);
        }
    }

    /// Several SSH sessions from a pump or monitor to an Internet address.
    fn outbound_ssh_medical(&mut self) {
        let pool = self.candidates(&[Kind::InfusionPump, Kind::PatientMonitor]);
        let Some(index) = self.pick(&pool) else { return };
        let (start, end) = self.window(60, 360);
        let remote = self.new_remote();
        // A tunnel that is re-established every quarter of an hour or so.
        let sessions = ((end - start) / (15 * MINUTE)).max(3) as usize;
        let ip = self.device(index).ip;
        for at in uniform_times(&mut self.rng, start, end - MINUTE, sessions) {
            let duration = secs_between(&mut self.rng, 60.0, 1200.0);
            let sent = bytes_between(&mut self.rng, 10_000, 90_000);
            let received = bytes_between(&mut self.rng, 10_000, 90_000);
            let port = self.port();
            let conn = Conn::new(at, ip, port, remote, 22);
            self.events.push(conn.tcp(Service::Ssh, duration, sent, received));
        }
        self.label(Scenario::OutboundSshMedical, index, start, end);
    }

    /// A call home every 60 s ± 2 s to an address nothing in the fleet has used.
    fn https_beacon(&mut self) {
        let pool = self.candidates(&[Kind::Camera, Kind::PatientMonitor]);
        let Some(index) = self.pick(&pool) else { return };
        let (start, end) = self.window(120, 360);
        let remote = self.new_remote();
        let ip = self.device(index).ip;
        let mut nominal = start;
        while nominal < end {
            let jitter = self.rng.gen_range(-2 * SECOND..=2 * SECOND);
            let at = (nominal + jitter).clamp(start, end - 1);
            let duration = secs_between(&mut self.rng, 0.08, 0.4);
            let sent = bytes_between(&mut self.rng, 250, 650);
            let received = bytes_between(&mut self.rng, 180, 520);
            let port = self.port();
            let conn = Conn::new(at, ip, port, remote, 443);
            self.events.push(conn.tcp(Service::Ssl, duration, sent, received));
            nominal += 60 * SECOND;
        }
        self.label(Scenario::HttpsBeacon, index, start, end);
    }

    /// 2–5 GB to an Internet address between 01:00 and 04:00 UTC, in tens of flows.
    fn night_bulk_upload(&mut self) {
        let pool = self.candidates(&[Kind::Imaging, Kind::Camera]);
        let Some(index) = self.pick(&pool) else { return };
        let Bounds { baseline_until, end, .. } = self.bounds;
        let mut nights = Vec::new();
        let mut night = day_start(baseline_until);
        while night + 4 * HOUR <= end {
            if night + HOUR >= baseline_until {
                nights.push(night);
            }
            night += DAY;
        }
        let (start, stop) = match nights.choose(&mut self.rng) {
            Some(&night) => (
                night + HOUR + self.rng.gen_range(0..=40) * MINUTE,
                night + 4 * HOUR - self.rng.gen_range(0..=40) * MINUTE,
            ),
            // A scoring period too short to hold a whole 01:00–04:00 night.
            None => (baseline_until, (baseline_until + 2 * HOUR).min(end)),
        };

        let remote = self.new_remote();
        let total = self.rng.gen_range(2.0e9..5.0e9);
        let transfers = self.rng.gen_range(20..=60);
        let weights: Vec<f64> = (0..transfers).map(|_| self.rng.gen_range(0.8..1.2)).collect();
        let weight_sum: f64 = weights.iter().sum();
        let slot = (stop - start) / transfers as i64;
        let ip = self.device(index).ip;
        for (idx, weight) in weights.iter().enumerate() {
            let at = start + idx as i64 * slot + self.rng.gen_range(0..(slot / 4).max(1));
            let sent = (total * weight / weight_sum) as u64;
            let mbps = self.rng.gen_range(30.0..80.0);
            let duration = (sent as f64 * 8.0 / (mbps * 1e6) * SECOND as f64) as i64;
            let received = bytes_between(&mut self.rng, 2_000, 12_000);
            let port = self.port();
            let conn = Conn::new(at, ip, port, remote, 443);
            self.events.push(conn.tcp(Service::Ssl, duration, sent, received));
        }
        self.label(Scenario::NightBulkUpload, index, start, stop);
    }

    /// A connect scan of a whole /24 on the usual ICS and admin ports, within an hour.
    fn internal_port_sweep(&mut self) {
        let pool = self.candidates(&[Kind::Printer, Kind::BadgeReader]);
        let Some(index) = self.pick(&pool) else { return };
        let (start, end) = self.window(20, 55);
        let ip = self.device(index).ip;

        // The plant cell if there is one: that is what such a sweep is after.
        let target_net = match self.fleet.of_kind(Kind::Plc).first() {
            Some(plc) => self.device(*plc).ip.octets(),
            None => SERVERS[0].ip.octets(),
        };
        let hosts = self.open_ports_by_host();
        let mut probes: Vec<(Ipv4Addr, u16)> = (1..=254u8)
            .map(|last| Ipv4Addr::new(target_net[0], target_net[1], target_net[2], last))
            .filter(|target| *target != ip)
            .flat_map(|target| SWEEP_PORTS.iter().map(move |port| (target, *port)))
            .collect();
        probes.shuffle(&mut self.rng);

        let times = uniform_times(&mut self.rng, start, end, probes.len());
        for ((target, port), at) in probes.into_iter().zip(times) {
            let conn = Conn::new(at, ip, self.port(), target, port);
            let rtt = self.rng.gen_range(150..2_000);
            let present = match self.changes.joiner {
                Some((joiner, joined)) => target != self.device(joiner).ip || at >= joined,
                None => true,
            };
            let flow = match hosts.get(&target).filter(|_| present) {
                Some(host) if host.open.contains(&port) => conn.tcp_open_then_reset(rtt),
                Some(host) if host.firewalled => conn.tcp_unanswered(self.rng.gen_range(1..=2)),
                Some(_) => conn.tcp_refused(rtt),
                None => conn.tcp_unanswered(self.rng.gen_range(1..=2)),
            };
            self.events.push(flow);
        }
        self.label(Scenario::InternalPortSweep, index, start, end);
    }

    fn open_ports_by_host(&self) -> HashMap<Ipv4Addr, Host> {
        let mut hosts: HashMap<Ipv4Addr, Host> = self
            .fleet
            .devices
            .iter()
            .map(|device| (device.ip, Host { open: device.spec().open_ports, firewalled: false }))
            .collect();
        // Windows servers drop what their firewall does not allow rather than refuse it.
        for server in &SERVERS {
            hosts.insert(server.ip, Host { open: server.open_ports, firewalled: true });
        }
        hosts
    }

    /// An unknown host in the plant cell writes to a PLC over its own protocol.
    fn rogue_ot_master(&mut self) {
        let plcs = self.candidates(&[Kind::Plc]);
        // Modbus is the textbook case, then S7; EtherNet/IP only if nothing else exists.
        let by_port = |port: u16| -> Vec<usize> {
            plcs.iter().copied().filter(|idx| self.device(*idx).spec().port == port).collect()
        };
        let pool = [by_port(502), by_port(102), plcs.clone()]
            .into_iter()
            .find(|pool| pool.iter().any(|idx| !self.used.contains(idx)))
            .unwrap_or_default();
        let Some(index) = self.pick(&pool) else { return };
        let (start, end) = self.window(60, 240);
        let device = self.device(index);
        let (plc_ip, spec) = (device.ip, device.spec());
        let [a, b, c, _] = plc_ip.octets();
        let rogue = Ipv4Addr::new(a, b, c, 250);
        // Bytes of one write request and of its acknowledgement.
        let (request, answer): ((u64, u64), u64) = match spec.port {
            502 => ((25, 140), 12),
            102 => ((60, 250), 22),
            _ => ((80, 300), 40),
        };

        let mut at = start + self.rng.gen_range(0..60) * SECOND;
        while at < end {
            let writes = self.rng.gen_range(5..=40u64);
            let sent =
                (0..writes).map(|_| bytes_between(&mut self.rng, request.0, request.1)).sum();
            let duration = secs_between(&mut self.rng, 2.0, 30.0);
            let port = self.port();
            let conn = Conn::new(at, rogue, port, plc_ip, spec.port);
            self.events.push(conn.tcp_exchanges(
                spec.service,
                duration,
                sent,
                writes * answer,
                writes,
            ));
            at += secs_between(&mut self.rng, 60.0, 300.0);
        }
        self.label(Scenario::RogueOtMaster, index, start, end);
    }

    /// Thousands of lookups an hour sent straight to a public resolver.
    fn public_dns_high_volume(&mut self) {
        let pool: Vec<usize> = Kind::ALL
            .into_iter()
            .filter(|kind| *kind != Kind::Plc)
            .flat_map(|kind| self.fleet.of_kind(kind).iter().copied())
            .collect();
        let Some(index) = self.pick(&pool) else { return };
        let (start, end) = self.window(60, 180);
        let resolver = if self.rng.gen_bool(0.5) {
            Ipv4Addr::new(8, 8, 8, 8)
        } else {
            Ipv4Addr::new(1, 1, 1, 1)
        };
        let per_hour = self.rng.gen_range(1500.0..4000.0);
        let lookups = (per_hour * (end - start) as f64 / HOUR as f64) as usize;
        let ip = self.device(index).ip;
        for at in uniform_times(&mut self.rng, start, end, lookups) {
            let query = bytes_between(&mut self.rng, 30, 70);
            let answer = query + bytes_between(&mut self.rng, 16, 240);
            let duration = secs_between(&mut self.rng, 0.005, 0.04);
            let port = self.port();
            let conn = Conn::new(at, ip, port, resolver, 53);
            self.events.push(conn.udp(Service::Dns, duration, (query, answer), (1, 1)));
        }
        self.label(Scenario::PublicDnsHighVolume, index, start, end);
    }

    /// Hundreds of telnet logins an hour against the cameras from a compromised device.
    fn telnet_bruteforce_cameras(&mut self) {
        // A camera that has not joined yet cannot be attacked.
        let joiner = self.changes.joiner.map(|(joiner, _)| joiner);
        let cameras: Vec<usize> = self
            .candidates(&[Kind::Camera])
            .into_iter()
            .filter(|camera| Some(*camera) != joiner)
            .collect();
        let pool: Vec<usize> = self
            .candidates(&[Kind::Printer, Kind::BadgeReader, Kind::Camera])
            .into_iter()
            .filter(|idx| cameras.iter().any(|camera| camera != idx))
            .collect();
        let Some(index) = self.pick(&pool) else { return };
        let targets: Vec<usize> = cameras.into_iter().filter(|camera| *camera != index).collect();
        let (start, end) = self.window(60, 180);
        let per_hour = self.rng.gen_range(150.0..400.0);
        let attempts = (per_hour * (end - start) as f64 / HOUR as f64) as usize;
        let ip = self.device(index).ip;
        for at in uniform_times(&mut self.rng, start, end, attempts) {
            let Some(&target) = targets.choose(&mut self.rng) else { break };
            let camera = self.device(target);
            let (camera_ip, telnet_open) = (camera.ip, camera.spec().open_ports.contains(&23));
            let conn = Conn::new(at, ip, self.port(), camera_ip, 23);
            let flow = if telnet_open {
                let duration = secs_between(&mut self.rng, 0.5, 6.0);
                let sent = bytes_between(&mut self.rng, 20, 80);
                let received = bytes_between(&mut self.rng, 40, 160);
                let reset = self.rng.gen_bool(0.4);
                conn.tcp_banner(Service::Telnet, duration, sent, received, reset)
            } else {
                conn.tcp_refused(self.rng.gen_range(200..1_500))
            };
            self.events.push(flow);
        }
        self.label(Scenario::TelnetBruteforceCameras, index, start, end);
    }

    /// An HVAC controller tries RDP and SMB on servers and workstations.
    fn building_controller_rdp_smb(&mut self) {
        let pool = self.candidates(&[Kind::Hvac]);
        let Some(index) = self.pick(&pool) else { return };
        let (start, end) = self.window(60, 240);
        let mut targets: Vec<(Ipv4Addr, &'static [u16])> = SERVERS
            .iter()
            .filter(|server| {
                [addr::FILES, addr::JUMP_HOST, addr::BACKUP, addr::PRINT, addr::SCADA]
                    .contains(&server.ip)
            })
            .map(|server| (server.ip, server.open_ports))
            .collect();
        let [a, b, c] = addr::WORKSTATION_NET;
        for _ in 0..4 {
            let workstation = Ipv4Addr::new(a, b, c, self.rng.gen_range(20..=60));
            targets.push((workstation, &[445, 3389]));
        }

        let attempts = self.rng.gen_range(20..=80);
        let ip = self.device(index).ip;
        // Servers that answered took part in the attack too: they are labelled, like the
        // PLC of a rogue master, so their windows count as attacked, not as false alarms.
        let mut answered: Vec<&'static str> = Vec::new();
        for at in uniform_times(&mut self.rng, start, end, attempts) {
            let Some(&(target, open)) = targets.choose(&mut self.rng) else { break };
            let port = if self.rng.gen_bool(0.5) { 3389 } else { 445 };
            if open.contains(&port)
                && let Some(server) = SERVERS.iter().find(|server| server.ip == target)
                && !answered.contains(&server.id)
            {
                answered.push(server.id);
            }
            let conn = Conn::new(at, ip, self.port(), target, port);
            let flow = match (open.contains(&port), port) {
                (true, 3389) => {
                    let duration = secs_between(&mut self.rng, 0.3, 4.0);
                    let sent = bytes_between(&mut self.rng, 1_000, 4_000);
                    let received = bytes_between(&mut self.rng, 1_000, 6_000);
                    conn.tcp(Service::Rdp, duration, sent, received)
                }
                (true, _) => {
                    let duration = secs_between(&mut self.rng, 0.05, 2.0);
                    let sent = bytes_between(&mut self.rng, 600, 3_500);
                    let received = bytes_between(&mut self.rng, 500, 2_500);
                    conn.tcp(Service::Smb, duration, sent, received)
                }
                (false, _) => conn.tcp_unanswered(2),
            };
            self.events.push(flow);
        }
        self.label(Scenario::BuildingControllerRdpSmb, index, start, end);
        answered.sort_unstable();
        for server in SERVERS.iter().filter(|server| answered.contains(&server.id)) {
            let scenario = Scenario::BuildingControllerRdpSmb;
            self.label_ip(scenario, Role::Victim, server.ip, server.id, start, end);
        }
    }

    /// Administrators SSH from the jump host into PLCs and HVAC controllers a few times
    /// a week, in office hours, over the whole run. Devices with a session in the
    /// scoring period get a label.
    fn jump_host_ssh(&mut self) {
        let joiner = self.changes.joiner.map(|(index, _)| index);
        let targets: Vec<usize> = self
            .candidates(&[Kind::Plc, Kind::Hvac])
            .into_iter()
            .filter(|idx| Some(*idx) != joiner)
            .collect();
        if targets.is_empty() {
            return;
        }
        let Bounds { start, baseline_until, end } = self.bounds;
        let mut workdays = Vec::new();
        let mut day = day_start(start);
        while day < end {
            if weekday(day) < 5 {
                workdays.push(day);
            }
            day += DAY;
        }
        let weeks = (end - start) as f64 / (7 * DAY) as f64;
        let visits = ((3.0 + targets.len() as f64 / 5.0) * weeks).round().max(1.0) as usize;

        let mut touched = Vec::new();
        for _ in 0..visits {
            let Some(&day) = workdays.choose(&mut self.rng) else { break };
            let mut at = day + 8 * HOUR + self.rng.gen_range(0..9 * 60) * MINUTE;
            for _ in 0..self.rng.gen_range(1..=3) {
                let Some(&target) = targets.choose(&mut self.rng) else { break };
                let duration = secs_between(&mut self.rng, 60.0, 900.0);
                if at >= start && at < end {
                    let sent = bytes_between(&mut self.rng, 5_000, 40_000);
                    let received = bytes_between(&mut self.rng, 10_000, 200_000);
                    let port = self.port();
                    let conn = Conn::new(at, addr::JUMP_HOST, port, self.device(target).ip, 22);
                    self.events.push(conn.tcp(Service::Ssh, duration, sent, received));
                    if at >= baseline_until {
                        touched.push(target);
                    }
                }
                at += duration + secs_between(&mut self.rng, 30.0, 300.0);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for index in touched {
            self.label(Scenario::JumpHostSsh, index, baseline_until, end);
        }
    }

    /// Labels every device of the kinds for the whole scoring period: the look-alikes
    /// that are routine traffic.
    fn whole_period_labels(&mut self, scenario: Scenario, kinds: &[Kind]) {
        let Bounds { baseline_until, end, .. } = self.bounds;
        for index in self.candidates(kinds) {
            self.label(scenario, index, baseline_until, end);
        }
    }
}

/// What a port scan finds at an address.
struct Host {
    open: &'static [u16],
    /// Drops SYNs to closed ports instead of refusing them.
    firewalled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_772_409_600 * SECOND;

    fn plan(seed: u64, devices: usize, days: i64) -> (Fleet, Plan) {
        let moving = moving_pump_model(seed, devices);
        let fleet = Fleet::build(seed, devices, moving);
        let bounds = Bounds {
            start: START,
            baseline_until: START + (days / 2).max(1) * DAY,
            end: START + days * DAY,
        };
        let plan = Plan::build(seed, &fleet, bounds, moving);
        (fleet, plan)
    }

    #[test]
    fn injected_scenarios_use_distinct_devices_after_the_baseline() {
        for seed in 0..20 {
            let (_, plan) = plan(seed, 60, 10);
            // A scenario may carry several labels (one per run of active hours, and
            // one for each victim it touches), but no device serves two scenarios.
            let mut owner: std::collections::HashMap<&str, Scenario> = Default::default();
            let mut scenarios = Vec::new();
            for label in plan.labels.iter().filter(|label| !label.scenario.benign()) {
                let first = *owner.entry(label.device_id.as_str()).or_insert(label.scenario);
                assert_eq!(first, label.scenario, "seed {seed}: {label:?}");
                if !scenarios.contains(&label.scenario) {
                    scenarios.push(label.scenario);
                }
            }
            assert_eq!(scenarios.len(), 8, "seed {seed}: {scenarios:?}");
            for label in &plan.labels {
                assert!(label.start >= START + 5 * DAY, "{label:?}");
                assert!(label.end <= START + 10 * DAY && label.start < label.end, "{label:?}");
            }
        }
    }

    #[test]
    fn small_and_short_runs_still_plan() {
        for devices in [1, 5, 12, 29] {
            let (_, plan) = plan(3, devices, 2);
            assert!(plan.labels.iter().all(|label| label.start < label.end));
            assert!(plan.events.windows(2).all(|w| w[0].ts <= w[1].ts));
        }
    }
}
