//! Everyday traffic: what each device and server does in one hour when nothing is
//! wrong. Heartbeats, polls, studies, print jobs, badge swipes, DNS and NTP, following
//! business hours and occupancy in the site's local time, with the benign changes
//! (a fleet's server move, a device joining, a DST shift) applied from their moment on.
//!
//! A device-hour draws from its own random stream `(seed, device, hour)`, and periodic
//! events take their phase and jitter from `(seed, device, stream)`, so any hour can be
//! generated on its own and the result does not depend on generation order.

use std::net::Ipv4Addr;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::model::Service;

use super::clock::{DAY, HOUR, MINUTE, SECOND, day_start, hour_of_day, is_business, is_occupied};
use super::fleet::{FieldDevice, Fleet, Kind, SERVERS, Site, addr};
use super::flow::{Conn, SimFlow};
use super::plan::Changes;
use super::random::{
    Periodic, bytes_between, log_uniform, mix, poisson_times, secs_between, sub_rng, unit,
};

/// What every hour of generation shares: the seed, the fleet, the run's start (the
/// origin of every periodic schedule) and the benign changes that alter routine
/// behaviour.
pub(crate) struct World<'a> {
    pub seed: u64,
    pub fleet: &'a Fleet,
    pub changes: &'a Changes,
    pub run_start: i64,
}

/// One hour of the run: `[start, end)`, the last one cut at the end of the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hour {
    pub idx: u64,
    pub start: i64,
    pub end: i64,
}

impl World<'_> {
    /// Local time at a site: UTC, one hour ahead after a DST shift at that site.
    pub fn local(&self, site: Site, at: i64) -> i64 {
        match self.changes.dst {
            Some((shifted, from)) if shifted == site && at >= from => at + HOUR,
            _ => at,
        }
    }

    /// Whether a fleet move has sent this pump to the new pump server by `at`.
    fn pump_server(&self, device: &FieldDevice, at: i64) -> Ipv4Addr {
        match self.changes.server_move {
            Some(moved) if moved.pump_model == device.model && at >= moved.at => {
                addr::NEW_PUMP_SERVER
            }
            _ => addr::PUMP_SERVERS[device.model.min(1)],
        }
    }
}

/// Appends one device's routine flows for one hour.
pub fn device_hour(world: &World, device: &FieldDevice, hour: Hour, out: &mut Vec<SimFlow>) {
    // A device that joins later is silent before its moment.
    let from = match world.changes.joiner {
        Some((index, at)) if index == device.index => hour.start.max(at),
        _ => hour.start,
    };
    if from >= hour.end {
        return;
    }
    let rng = sub_rng(&[world.seed, TAG_DEVICE_HOUR, device.index as u64, hour.idx]);
    let mut ctx = DeviceHour { world, device, from, to: hour.end, rng, out };

    ctx.dns();
    ctx.ntp();
    match device.kind {
        Kind::InfusionPump => ctx.pump(),
        Kind::PatientMonitor => ctx.monitor(),
        Kind::Imaging => ctx.imaging(),
        Kind::Hvac => ctx.hvac(),
        Kind::Camera => ctx.camera(),
        Kind::BadgeReader => ctx.badge_reader(),
        Kind::Printer => ctx.printer(),
        Kind::Plc => ctx.plc(),
    }
}

/// Appends the servers' own background for one hour: time sync, lookups, the DNS
/// server's forwarding and administrators' RDP sessions on the jump host.
pub(crate) fn servers_hour(world: &World, hour: Hour, out: &mut Vec<SimFlow>) {
    // The new pump server is racked from the start but silent until the move.
    let spare = world.changes.server_move.map(|moved| (addr::NEW_PUMP_SERVER, moved.at));
    let servers = SERVERS.iter().map(|spec| (spec.ip, i64::MIN)).chain(spare);
    for (position, (ip, live_from)) in servers.enumerate() {
        let from = hour.start.max(live_from);
        if from >= hour.end {
            continue;
        }
        let key = SERVER_KEY_BASE + position as u64;
        let mut rng = sub_rng(&[world.seed, TAG_DEVICE_HOUR, key, hour.idx]);

        let ntp_to = if ip == addr::NTP { addr::PUBLIC_NTP } else { addr::NTP };
        let ntp = Periodic {
            period: 1024 * SECOND,
            phase: (unit(&[world.seed, key, TAG_NTP]) * 1024.0 * SECOND as f64) as i64,
            jitter: 2 * SECOND,
        };
        ntp.each(world.run_start, from, hour.end, mix(&[world.seed, key, TAG_NTP]), |at| {
            let duration = secs_between(&mut rng, 0.0008, 0.03);
            out.push(Conn::new(at, ip, 123, ntp_to, 123).udp(
                Service::Ntp,
                duration,
                (48, 48),
                (1, 1),
            ));
        });

        let (resolver, lookups) = if ip == addr::DNS {
            (addr::UPSTREAM_DNS, 40.0 + world.fleet.devices.len() as f64 / 4.0)
        } else {
            (addr::DNS, 8.0)
        };
        for at in poisson_times(&mut rng, from, hour.end, lookups, |_| lookups) {
            let port = rng.gen_range(49152..=65535);
            let query = bytes_between(&mut rng, 30, 64);
            let answer = query + bytes_between(&mut rng, 16, 220);
            let duration = secs_between(&mut rng, 0.0003, 0.04);
            out.push(Conn::new(at, ip, port, resolver, 53).udp(
                Service::Dns,
                duration,
                (query, answer),
                (1, 1),
            ));
        }

        if ip == addr::JUMP_HOST {
            let admin_rate = |at: i64| if is_business(at) { 1.5 } else { 0.05 };
            for at in poisson_times(&mut rng, from, hour.end, 1.5, admin_rate) {
                let [a, b, c] = addr::WORKSTATION_NET;
                let workstation = Ipv4Addr::new(a, b, c, rng.gen_range(20..=60));
                let duration = secs_between(&mut rng, 600.0, 5400.0);
                let sent = bytes_between(&mut rng, 400_000, 5_000_000);
                let received = bytes_between(&mut rng, 5_000_000, 60_000_000);
                let port = rng.gen_range(49152..=65535);
                out.push(Conn::new(at, workstation, port, ip, 3389).tcp(
                    Service::Rdp,
                    duration,
                    sent,
                    received,
                ));
            }
        }
    }
}

/// Keys of the servers' random streams, above any field device index.
const SERVER_KEY_BASE: u64 = 1 << 40;

const TAG_DEVICE_HOUR: u64 = 0xd0;
const TAG_NTP: u64 = 0x7b;
const TAG_SERVER: u64 = 0x51;
const TAG_CLOUD: u64 = 0xc1;
const TAG_UPDATE: u64 = 0x0d;
const TAG_STREAM: u64 = 0x57;
const TAG_ECHO: u64 = 0xec;
const TAG_BACKUP: u64 = 0xbb;
const TAG_POLL: u64 = 0x90;
const TAG_HMI: u64 = 0x91;
const TAG_SIZE: u64 = 0x5e;
const TAG_PHASE: u64 = 0xf0;
const TAG_INTERVAL: u64 = 0x1e;

/// Everything one device-hour needs, so the per-kind behaviours read as a list of
/// conversations.
struct DeviceHour<'a, 'w> {
    world: &'a World<'w>,
    device: &'a FieldDevice,
    from: i64,
    to: i64,
    rng: ChaCha8Rng,
    out: &'a mut Vec<SimFlow>,
}

impl DeviceHour<'_, '_> {
    /// A per-device constant in `[0, 1)` for one stream: phases, sizes, intervals.
    fn trait_of(&self, stream: u64) -> f64 {
        unit(&[self.world.seed, self.device.index as u64, stream, TAG_PHASE])
    }

    /// The occurrences of a periodic stream within this hour.
    fn every(&self, stream: u64, period: i64, jitter: i64) -> Vec<i64> {
        let schedule =
            Periodic { period, phase: (self.trait_of(stream) * period as f64) as i64, jitter };
        let key = mix(&[self.world.seed, self.device.index as u64, stream]);
        let mut times = Vec::new();
        schedule.each(self.world.run_start, self.from, self.to, key, |at| times.push(at));
        times
    }

    /// Poisson event times at `per_hour(t)` events an hour, `max` being its ceiling.
    fn events(&mut self, max: f64, per_hour: impl Fn(i64) -> f64) -> Vec<i64> {
        poisson_times(&mut self.rng, self.from, self.to, max, per_hour)
    }

    fn local(&self, at: i64) -> i64 {
        self.world.local(self.device.site(), at)
    }

    /// An ephemeral source port; embedded stacks use the IANA range.
    fn port(&mut self) -> u16 {
        self.rng.gen_range(49152..=65535)
    }

    fn ip(&self) -> Ipv4Addr {
        self.device.ip
    }

    fn push(&mut self, flow: SimFlow) {
        self.out.push(flow);
    }

    fn dns(&mut self) {
        let (base, business_extra) = match self.device.kind {
            Kind::InfusionPump => (4.0, 0.0),
            Kind::PatientMonitor => (6.0, 0.0),
            Kind::Imaging => (3.0, 5.0),
            Kind::Hvac => (1.0, 0.0),
            Kind::Camera => (3.0, 0.0),
            Kind::BadgeReader => (1.0, 2.0),
            Kind::Printer => (2.0, 6.0),
            Kind::Plc => (0.0, 0.0),
        };
        let rate = self.device.rate;
        let site = self.device.site();
        let world = self.world;
        let per_hour = |at: i64| {
            (base + if is_business(world.local(site, at)) { business_extra } else { 0.0 }) * rate
        };
        for at in self.events((base + business_extra) * rate, per_hour) {
            let port = self.port();
            let query = bytes_between(&mut self.rng, 28, 60);
            let conn = Conn::new(at, self.ip(), port, addr::DNS, 53);
            if self.rng.gen_bool(0.01) {
                self.push(conn.udp_unanswered(Service::Dns, query));
                continue;
            }
            let answer = query + bytes_between(&mut self.rng, 16, 200);
            let duration = secs_between(&mut self.rng, 0.0004, 0.025);
            self.push(conn.udp(Service::Dns, duration, (query, answer), (1, 1)));
        }
    }

    fn ntp(&mut self) {
        // ntpd and SNTP clients settle on 256, 512 or 1024 s polls.
        let period = (256 << (self.trait_of(TAG_NTP) * 3.0) as i64) * SECOND;
        for at in self.every(TAG_NTP, period, 2 * SECOND) {
            let duration = secs_between(&mut self.rng, 0.0005, 0.004);
            let conn = Conn::new(at, self.ip(), 123, addr::NTP, 123);
            self.push(conn.udp(Service::Ntp, duration, (48, 48), (1, 1)));
        }
    }

    /// HTTPS heartbeats to the vendor cloud every 5 minutes, from pumps and monitors.
    fn cloud_heartbeat(&mut self) {
        let Some(cloud) = self.device.spec().cloud else { return };
        for at in self.every(TAG_CLOUD, 300 * SECOND, 15 * SECOND) {
            let port = self.port();
            let duration = secs_between(&mut self.rng, 0.08, 0.5);
            let sent = bytes_between(&mut self.rng, 600, 1100);
            let received = bytes_between(&mut self.rng, 350, 800);
            let conn = Conn::new(at, self.ip(), port, cloud, 443);
            self.push(conn.tcp(Service::Ssl, duration, sent, received));
        }
    }

    fn pump(&mut self) {
        let period = (300.0 / self.device.rate) as i64 * SECOND;
        for at in self.every(TAG_SERVER, period, 20 * SECOND) {
            let server = self.world.pump_server(self.device, at);
            let port = self.port();
            let duration = secs_between(&mut self.rng, 0.15, 1.2);
            let sent = bytes_between(&mut self.rng, 1200, 6000);
            let received = bytes_between(&mut self.rng, 2000, 9000);
            let conn = Conn::new(at, self.ip(), port, server, 443);
            self.push(conn.tcp(Service::Ssl, duration, sent, received));
        }
        self.cloud_heartbeat();
    }

    fn monitor(&mut self) {
        let spec = self.device.spec();
        let station = addr::CENTRAL_STATIONS[self.device.model.min(1)];
        let period = (60.0 / self.device.rate) as i64 * SECOND;
        for at in self.every(TAG_STREAM, period, 2 * SECOND) {
            let port = self.port();
            let duration = secs_between(&mut self.rng, 0.1, 1.5);
            let sent = bytes_between(&mut self.rng, 5000, 20000);
            let received = bytes_between(&mut self.rng, 120, 400);
            let conn = Conn::new(at, self.ip(), port, station, spec.port);
            self.push(conn.tcp(spec.service, duration, sent, received));
        }
        self.cloud_heartbeat();

        // The daily firmware check: a small HTTPS request to the vendor's update server.
        if let Some(updates) = spec.updates {
            for at in self.every(TAG_UPDATE, DAY, 10 * MINUTE) {
                let port = self.port();
                let duration = secs_between(&mut self.rng, 0.2, 0.9);
                let sent = bytes_between(&mut self.rng, 700, 1500);
                let received = bytes_between(&mut self.rng, 1500, 4500);
                let conn = Conn::new(at, self.ip(), port, updates, 443);
                self.push(conn.tcp(Service::Ssl, duration, sent, received));
            }
        }
    }

    fn imaging(&mut self) {
        // The CT takes trauma scans at night too; the MRI mostly waits for the morning.
        let is_ct = self.device.model == 0;
        let (day_rate, night_rate) = if is_ct { (2.2, 0.25) } else { (1.2, 0.04) };
        let rate = self.device.rate;
        let site = self.device.site();
        let world = self.world;
        let per_hour = |at: i64| {
            if is_business(world.local(site, at)) { day_rate * rate } else { night_rate * rate }
        };
        for at in self.events(day_rate * rate, per_hour) {
            // The worklist query, then the images once the scan is done.
            let port = self.port();
            let duration = secs_between(&mut self.rng, 0.05, 0.8);
            let sent = bytes_between(&mut self.rng, 400, 1200);
            let received = bytes_between(&mut self.rng, 800, 6000);
            let conn = Conn::new(at, self.ip(), port, addr::PACS, 104);
            self.push(conn.tcp(Service::Dicom, duration, sent, received));

            let scan = secs_between(&mut self.rng, 180.0, 900.0);
            let store_at = (at + scan).min(self.to - 1);
            let image_bytes = log_uniform(&mut self.rng, 100e6, 1e9) as u64;
            let images = image_bytes / 500_000 + 1;
            let mbps = self.rng.gen_range(250.0..900.0);
            let duration = (image_bytes as f64 * 8.0 / (mbps * 1e6) * SECOND as f64) as i64;
            let port = self.port();
            let conn = Conn::new(store_at, self.ip(), port, addr::PACS, 104);
            self.push(conn.tcp(Service::Dicom, duration, image_bytes, images * 210));
        }

        for at in self.every(TAG_ECHO, 300 * SECOND, 20 * SECOND) {
            let port = self.port();
            let duration = secs_between(&mut self.rng, 0.005, 0.04);
            let conn = Conn::new(at, self.ip(), port, addr::PACS, 104);
            self.push(conn.tcp(Service::Dicom, duration, 205, 210));
        }

        self.nightly_backup();
    }

    /// The nightly push of the modality's local archive to the backup server, around
    /// 02:00 UTC, split into one to three SMB transfers. Each night's run comes from
    /// its own stream so either hour it touches sees the same transfers.
    fn nightly_backup(&mut self) {
        let mut night = day_start(self.from - 3 * HOUR);
        while night < self.to {
            let day_idx = (night / DAY) as u64;
            let mut rng =
                sub_rng(&[self.world.seed, self.device.index as u64, TAG_BACKUP, day_idx]);
            let mut at = night + 2 * HOUR + rng.gen_range(-20 * MINUTE..20 * MINUTE);
            let total = rng.gen_range(1.0e9..4.0e9);
            let weights: Vec<f64> =
                (0..rng.gen_range(1..=3)).map(|_| rng.gen_range(0.5..1.5)).collect();
            let weight_sum: f64 = weights.iter().sum();
            for weight in weights {
                let sent = (total * weight / weight_sum) as u64;
                let mbps = rng.gen_range(400.0..900.0);
                let duration = (sent as f64 * 8.0 / (mbps * 1e6) * SECOND as f64) as i64;
                let port = rng.gen_range(49152..=65535);
                if at >= self.from && at < self.to {
                    let conn = Conn::new(at, self.ip(), port, addr::BACKUP, 445);
                    let received = sent / 1000 + 2048;
                    self.push(conn.tcp(Service::Smb, duration, sent, received));
                }
                at += duration + rng.gen_range(5 * SECOND..30 * SECOND);
            }
            night += DAY;
        }
    }

    fn hvac(&mut self) {
        let occupied = is_occupied(self.local(self.from));
        // The BMS polls every controller once a minute (several ReadPropertyMultiple).
        for at in self.every(TAG_POLL, 60 * SECOND, SECOND) {
            let requests = self.rng.gen_range(2..=6u64);
            let sent = requests * bytes_between(&mut self.rng, 25, 40);
            let per_answer = if occupied { (60, 180) } else { (40, 90) };
            let received = requests * bytes_between(&mut self.rng, per_answer.0, per_answer.1);
            let duration = secs_between(&mut self.rng, 0.02, 0.3);
            let conn = Conn::new(at, addr::BMS, 47808, self.ip(), 47808);
            self.push(conn.udp(Service::Bacnet, duration, (sent, received), (requests, requests)));
        }

        // Change-of-value notifications follow set-points, so the building's schedule.
        let rate = self.device.rate;
        let site = self.device.site();
        let world = self.world;
        let per_hour =
            |at: i64| if is_occupied(world.local(site, at)) { 24.0 * rate } else { 6.0 * rate };
        for at in self.events(24.0 * rate, per_hour) {
            let sent = bytes_between(&mut self.rng, 40, 110);
            let received = bytes_between(&mut self.rng, 12, 20);
            let duration = secs_between(&mut self.rng, 0.005, 0.04);
            let conn = Conn::new(at, self.ip(), 47808, addr::BMS, 47808);
            self.push(conn.udp(Service::Bacnet, duration, (sent, received), (1, 1)));
        }
    }

    fn camera(&mut self) {
        // The NVR holds one RTSP session per camera and re-opens it every 40–90 min;
        // Zeek logs each session once, at its start, with the whole stream's bytes.
        let session = ((40.0 + 50.0 * self.trait_of(TAG_STREAM)) * MINUTE as f64) as i64;
        let mbps = 1.5 + 4.5 * self.trait_of(TAG_SIZE);
        for at in self.every(TAG_STREAM, session, 0) {
            let local_hour = hour_of_day(self.local(at));
            // Quiet night scenes compress better.
            let scene = if (6..20).contains(&local_hour) { 1.0 } else { 0.6 };
            let duration = session - secs_between(&mut self.rng, 1.0, 20.0);
            let secs = duration as f64 / SECOND as f64;
            let received = (mbps * scene * 1e6 / 8.0 * secs) as u64;
            let sent = (secs / 5.0 * 100.0) as u64;
            let port = self.port();
            let conn = Conn::new(at, addr::NVR, port, self.ip(), 554);
            self.push(conn.tcp(Service::Rtsp, duration, sent, received));
        }

        // The NVR's ONVIF health check.
        for at in self.every(TAG_POLL, 60 * SECOND, SECOND) {
            let port = self.port();
            let duration = secs_between(&mut self.rng, 0.01, 0.12);
            let sent = bytes_between(&mut self.rng, 350, 700);
            let received = bytes_between(&mut self.rng, 500, 2500);
            let conn = Conn::new(at, addr::NVR, port, self.ip(), 80);
            self.push(conn.tcp(Service::Http, duration, sent, received));
        }
    }

    fn badge_reader(&mut self) {
        let spec = self.device.spec();
        let sizes = |heartbeat: bool| match (spec.service, heartbeat) {
            (Service::Ssl, true) => ((500, 900), (300, 600)),
            (Service::Ssl, false) => ((700, 1400), (400, 900)),
            (_, true) => ((40, 90), (30, 70)),
            (_, false) => ((150, 420), (80, 260)),
        };
        for at in self.every(TAG_SERVER, 60 * SECOND, 2 * SECOND) {
            self.badge_conversation(at, sizes(true));
        }

        let rate = self.device.rate;
        let site = self.device.site();
        let world = self.world;
        let per_hour =
            |at: i64| if is_business(world.local(site, at)) { 35.0 * rate } else { 1.5 * rate };
        for at in self.events(35.0 * rate, per_hour) {
            self.badge_conversation(at, sizes(false));
        }
    }

    fn badge_conversation(&mut self, at: i64, (sent, received): ((u64, u64), (u64, u64))) {
        let spec = self.device.spec();
        let port = self.port();
        let duration = secs_between(&mut self.rng, 0.005, 0.2);
        let sent = bytes_between(&mut self.rng, sent.0, sent.1);
        let received = bytes_between(&mut self.rng, received.0, received.1);
        let conn = Conn::new(at, self.ip(), port, addr::ACCESS_CONTROL, spec.port);
        self.push(conn.tcp(spec.service, duration, sent, received));
    }

    fn printer(&mut self) {
        // The print server's SNMP status poll.
        for at in self.every(TAG_POLL, 120 * SECOND, 3 * SECOND) {
            let gets = self.rng.gen_range(1..=4u64);
            let sent = gets * bytes_between(&mut self.rng, 45, 90);
            let received = gets * bytes_between(&mut self.rng, 60, 250);
            let duration = secs_between(&mut self.rng, 0.003, 0.06);
            let port = self.port();
            let conn = Conn::new(at, addr::PRINT, port, self.ip(), 161);
            self.push(conn.udp(Service::Snmp, duration, (sent, received), (gets, gets)));
        }

        let spec = self.device.spec();
        let rate = self.device.rate;
        let site = self.device.site();
        let world = self.world;
        let per_hour =
            |at: i64| if is_business(world.local(site, at)) { 9.0 * rate } else { 0.25 * rate };
        for at in self.events(9.0 * rate, per_hour) {
            let job = log_uniform(&mut self.rng, 15e3, 6e6) as u64;
            let status = bytes_between(&mut self.rng, 30, 1500);
            let mbps = self.rng.gen_range(8.0..60.0);
            let transfer = job as f64 * 8.0 / (mbps * 1e6);
            let duration = ((transfer + self.rng.gen_range(0.3..2.0)) * SECOND as f64) as i64;
            let port = self.port();
            let conn = Conn::new(at, addr::PRINT, port, self.ip(), spec.port);
            self.push(conn.tcp(spec.service, duration, job, status));
        }
    }

    fn plc(&mut self) {
        let spec = self.device.spec();
        // Request and answer sizes of one poll, fixed by the PLC's tag list.
        let (request, answer) = match spec.port {
            102 => (
                31 + (self.trait_of(TAG_SIZE) * 12.0) as u64,
                60 + (self.trait_of(TAG_HMI) * 180.0) as u64,
            ),
            44818 => (
                50 + (self.trait_of(TAG_SIZE) * 20.0) as u64,
                90 + (self.trait_of(TAG_HMI) * 210.0) as u64,
            ),
            _ => (12, 9 + 2 * (10 + (self.trait_of(TAG_SIZE) * 50.0) as u64)),
        };
        let scada = Poller {
            server: addr::SCADA,
            stream: TAG_POLL,
            reconnect: (180.0 / self.device.rate) as i64 * SECOND,
            interval: 0.5 + self.trait_of(TAG_INTERVAL),
            request,
            answer,
        };
        let hmi = Poller {
            server: addr::HMI,
            stream: TAG_HMI,
            reconnect: (420.0 / self.device.rate) as i64 * SECOND,
            interval: 2.0,
            request,
            answer: answer / 2 + 10,
        };
        for poller in [scada, hmi] {
            for at in self.every(poller.stream, poller.reconnect, 3 * SECOND) {
                let duration = poller.reconnect - secs_between(&mut self.rng, 1.0, 4.0);
                let polls = ((duration as f64 / SECOND as f64) / poller.interval) as u64;
                let port = self.port();
                let conn = Conn::new(at, poller.server, port, self.ip(), spec.port);
                let (sent, received) = (polls * poller.request, polls * poller.answer);
                self.push(conn.tcp_exchanges(spec.service, duration, sent, received, polls));
            }
        }
    }
}

/// A SCADA or HMI poll loop: a connection kept for `reconnect`, one request every
/// `interval` seconds.
struct Poller {
    server: Ipv4Addr,
    stream: u64,
    reconnect: i64,
    interval: f64,
    request: u64,
    answer: u64,
}
