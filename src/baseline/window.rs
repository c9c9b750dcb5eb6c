//! Streaming accumulation of flows into per-device time windows.
//!
//! Each flow is attributed to the device at either end (both, when both are devices) and
//! folded into that device's window: counters, one entry per peer and one per
//! conversation kind. Nothing per flow is kept, so memory grows with devices, windows
//! and the distinct peers and conversations inside them, never with the flow count.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::model::{Device, Flow, Inventory, Proto, is_internal};

/// A hasher for the dense integer ids this module hands out itself. They come from a
/// counter, not from input, so a fast multiplicative hash is safe here.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Direction of a conversation as seen from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Out,
    In,
}

/// What kind of party the other end of a conversation is. Devices are classed by their
/// type, so a fleet moving to a new server of the same type changes no conversation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerClass {
    /// An inventoried device or server, by its `device_type`.
    Device(String),
    /// A local address that the inventory does not know.
    UnknownInternal,
    /// Broadcast and multicast.
    Multicast,
    External,
}

impl PeerClass {
    pub fn label(&self) -> String {
        match self {
            PeerClass::Device(kind) if kind.is_empty() => "device".to_string(),
            PeerClass::Device(kind) => kind.clone(),
            PeerClass::UnknownInternal => "unknown internal host".to_string(),
            PeerClass::Multicast => "multicast".to_string(),
            PeerClass::External => "external".to_string(),
        }
    }
}

/// A conversation kind: (peer class, port, protocol, direction), packed into one
/// integer. The port is the responder's port, which names the service either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TupleKey(u64);

impl TupleKey {
    pub(crate) fn new(class: u32, port: u16, proto: Proto, direction: Direction) -> TupleKey {
        let proto_bits = match proto {
            Proto::Tcp => 0u64,
            Proto::Udp => 1,
            Proto::Icmp => 2,
            Proto::Other => 3,
        };
        let dir_bit = u64::from(direction == Direction::In);
        TupleKey(u64::from(class) << 20 | u64::from(port) << 4 | proto_bits << 1 | dir_bit)
    }

    pub fn class_id(self) -> u32 {
        (self.0 >> 20) as u32
    }

    pub fn port(self) -> u16 {
        (self.0 >> 4) as u16
    }

    pub fn proto(self) -> Proto {
        match (self.0 >> 1) & 0b11 {
            0 => Proto::Tcp,
            1 => Proto::Udp,
            2 => Proto::Icmp,
            _ => Proto::Other,
        }
    }

    pub fn direction(self) -> Direction {
        if self.0 & 1 == 1 { Direction::In } else { Direction::Out }
    }
}

/// Everything known about the devices and peers of one detection run.
#[derive(Debug, Default)]
pub struct Registry {
    pub devices: Vec<Device>,
    by_ip: HashMap<IpAddr, u32>,
    /// Without an inventory, any local address that originates a flow becomes a device.
    pub discover: bool,
    pub classes: Vec<PeerClass>,
    class_ids: HashMap<PeerClass, u32>,
    pub peers: Vec<IpAddr>,
    peer_ids: HashMap<IpAddr, u32>,
    /// Class id of every peer, by peer id.
    peer_class: Vec<u32>,
}

impl Registry {
    pub fn from_inventory(inventory: &Inventory) -> Registry {
        let mut registry = Registry::default();
        for device in inventory.devices() {
            registry.add_device(device.clone());
        }
        registry
    }

    pub fn discovering() -> Registry {
        Registry { discover: true, ..Registry::default() }
    }

    fn add_device(&mut self, device: Device) -> u32 {
        let id = self.devices.len() as u32;
        self.by_ip.insert(device.ip, id);
        self.devices.push(device);
        id
    }

    fn device_or_discover(&mut self, ip: &IpAddr, originates: bool) -> Option<u32> {
        if let Some(id) = self.by_ip.get(ip) {
            return Some(*id);
        }
        if self.discover && originates && is_internal(ip) && !is_multicast(ip) {
            let device = Device {
                device_id: ip.to_string(),
                ip: *ip,
                mac: String::new(),
                hostname: String::new(),
                device_type: "unknown".to_string(),
                vendor: String::new(),
                model: String::new(),
                firmware: String::new(),
                segment: String::new(),
                site: String::new(),
                criticality: crate::model::Criticality::Medium,
                tags: Default::default(),
            };
            return Some(self.add_device(device));
        }
        None
    }

    fn peer_id(&mut self, ip: &IpAddr) -> u32 {
        if let Some(id) = self.peer_ids.get(ip) {
            return *id;
        }
        let class = if let Some(device) = self.by_ip.get(ip) {
            PeerClass::Device(self.devices[*device as usize].device_type.clone())
        } else if is_multicast(ip) {
            PeerClass::Multicast
        } else if is_internal(ip) {
            if self.discover {
                PeerClass::Device("unknown".to_string())
            } else {
                PeerClass::UnknownInternal
            }
        } else {
            PeerClass::External
        };
        let class_id = match self.class_ids.get(&class) {
            Some(id) => *id,
            None => {
                let id = self.classes.len() as u32;
                self.classes.push(class.clone());
                self.class_ids.insert(class, id);
                id
            }
        };
        let id = self.peers.len() as u32;
        self.peers.push(*ip);
        self.peer_ids.insert(*ip, id);
        self.peer_class.push(class_id);
        id
    }

    pub fn peer_class_id(&self, peer: u32) -> u32 {
        self.peer_class[peer as usize]
    }

    pub fn class_of_peer(&self, peer: u32) -> &PeerClass {
        &self.classes[self.peer_class[peer as usize] as usize]
    }

    pub fn class(&self, class_id: u32) -> &PeerClass {
        &self.classes[class_id as usize]
    }

    pub fn peer_is_external(&self, peer: u32) -> bool {
        matches!(self.class_of_peer(peer), PeerClass::External)
    }

    pub fn peer_is_internal_endpoint(&self, peer: u32) -> bool {
        matches!(self.class_of_peer(peer), PeerClass::Device(_) | PeerClass::UnknownInternal)
    }
}

fn is_multicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.octets()[3] == 255,
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// One peer of a device inside one window.
#[derive(Clone, Debug)]
pub struct PeerAcc {
    pub flows_out: u32,
    pub flows_in: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first: Flow,
    /// Inter-arrival statistics of outbound flows, for beacon detection.
    last_out_ts: f64,
    n_gaps: u32,
    sum_gap: f64,
    sum_gap_sq: f64,
}

impl PeerAcc {
    /// How regular the outbound connections to this peer are: 1 for a perfect
    /// metronome, 0 for irregular or too few connections to tell.
    pub fn periodicity(&self) -> f64 {
        if self.n_gaps < 6 {
            return 0.0;
        }
        let n = f64::from(self.n_gaps);
        let mean = self.sum_gap / n;
        if mean <= 0.5 {
            return 0.0;
        }
        let variance = (self.sum_gap_sq / n - mean * mean).max(0.0);
        let cv = variance.sqrt() / mean;
        (1.0 - cv).clamp(0.0, 1.0)
    }

    pub fn mean_gap(&self) -> f64 {
        if self.n_gaps == 0 { 0.0 } else { self.sum_gap / f64::from(self.n_gaps) }
    }
}

/// One conversation kind of a device inside one window.
#[derive(Clone, Debug)]
pub struct TupleAcc {
    pub flows: u32,
    pub failed: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first: Flow,
}

/// What one device did in one window.
#[derive(Clone, Debug)]
pub struct WindowAcc {
    pub device: u32,
    pub window_idx: i64,
    pub flows: u32,
    pub flows_out: u32,
    pub failed_out: u32,
    pub external_flows: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent_external: u64,
    pub peers: IdMap<u32, PeerAcc>,
    pub tuples: IdMap<TupleKey, TupleAcc>,
}

impl WindowAcc {
    fn new(device: u32, window_idx: i64) -> WindowAcc {
        WindowAcc {
            device,
            window_idx,
            flows: 0,
            flows_out: 0,
            failed_out: 0,
            external_flows: 0,
            bytes_sent: 0,
            bytes_received: 0,
            bytes_sent_external: 0,
            peers: IdMap::default(),
            tuples: IdMap::default(),
        }
    }

    fn add(&mut self, flow: &Flow, direction: Direction, peer: u32, tuple: TupleKey, ext: bool) {
        let (sent, received) = match direction {
            Direction::Out => (flow.orig_bytes, flow.resp_bytes),
            Direction::In => (flow.resp_bytes, flow.orig_bytes),
        };
        let failed = flow.conn_state.is_failed();
        self.flows += 1;
        self.bytes_sent += sent;
        self.bytes_received += received;
        if direction == Direction::Out {
            self.flows_out += 1;
            self.failed_out += u32::from(failed);
        }
        if ext {
            self.external_flows += 1;
            self.bytes_sent_external += sent;
        }

        let peer_acc = self.peers.entry(peer).or_insert_with(|| PeerAcc {
            flows_out: 0,
            flows_in: 0,
            bytes_sent: 0,
            bytes_received: 0,
            first: *flow,
            last_out_ts: f64::NAN,
            n_gaps: 0,
            sum_gap: 0.0,
            sum_gap_sq: 0.0,
        });
        peer_acc.bytes_sent += sent;
        peer_acc.bytes_received += received;
        match direction {
            Direction::Out => {
                peer_acc.flows_out += 1;
                if peer_acc.last_out_ts.is_finite() {
                    let gap = (flow.ts - peer_acc.last_out_ts).abs();
                    peer_acc.n_gaps += 1;
                    peer_acc.sum_gap += gap;
                    peer_acc.sum_gap_sq += gap * gap;
                }
                peer_acc.last_out_ts = flow.ts;
            }
            Direction::In => peer_acc.flows_in += 1,
        }

        match self.tuples.entry(tuple) {
            Entry::Occupied(mut slot) => {
                let acc = slot.get_mut();
                acc.flows += 1;
                acc.failed += u32::from(failed);
                acc.bytes_sent += sent;
                acc.bytes_received += received;
            }
            Entry::Vacant(slot) => {
                slot.insert(TupleAcc {
                    flows: 1,
                    failed: u32::from(failed),
                    bytes_sent: sent,
                    bytes_received: received,
                    first: *flow,
                });
            }
        }
    }
}

/// Windows of one period (baseline or scoring), keyed by device and window index.
#[derive(Debug, Default)]
pub struct Windows {
    pub windows: Vec<WindowAcc>,
    index: IdMap<(u32, i64), u32>,
}

impl Windows {
    fn slot(&mut self, device: u32, window_idx: i64) -> &mut WindowAcc {
        let next = self.windows.len() as u32;
        let idx = *self.index.entry((device, window_idx)).or_insert(next);
        if idx == next {
            self.windows.push(WindowAcc::new(device, window_idx));
        }
        &mut self.windows[idx as usize]
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }
}

/// Folds flows into the windows of the devices at either end.
pub fn accumulate(registry: &mut Registry, windows: &mut Windows, window_secs: f64, flow: &Flow) {
    let window_idx = (flow.ts / window_secs).floor() as i64;

    let orig_dev = registry.device_or_discover(&flow.orig_h, true);
    let resp_dev = registry.device_or_discover(&flow.resp_h, false);

    if let Some(device) = orig_dev {
        let peer = registry.peer_id(&flow.resp_h);
        let tuple = tuple_for(registry, peer, flow, Direction::Out);
        let ext = registry.peer_is_external(peer);
        windows.slot(device, window_idx).add(flow, Direction::Out, peer, tuple, ext);
    }
    if let Some(device) = resp_dev
        && Some(device) != orig_dev
    {
        let peer = registry.peer_id(&flow.orig_h);
        let tuple = tuple_for(registry, peer, flow, Direction::In);
        let ext = registry.peer_is_external(peer);
        windows.slot(device, window_idx).add(flow, Direction::In, peer, tuple, ext);
    }
}

fn tuple_for(registry: &Registry, peer: u32, flow: &Flow, direction: Direction) -> TupleKey {
    TupleKey::new(registry.peer_class[peer as usize], flow.resp_p, flow.proto, direction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnState, Service};

    fn flow(ts: f64, orig: &str, resp: &str, port: u16) -> Flow {
        Flow {
            ts,
            orig_h: orig.parse().unwrap(),
            orig_p: 40000,
            resp_h: resp.parse().unwrap(),
            resp_p: port,
            proto: Proto::Tcp,
            service: Service::Unknown,
            duration: 1.0,
            orig_bytes: 100,
            resp_bytes: 1000,
            orig_pkts: 3,
            resp_pkts: 3,
            conn_state: ConnState::SF,
        }
    }

    #[test]
    fn tuple_key_round_trips_its_parts() {
        let key = TupleKey::new(4321, 44818, Proto::Udp, Direction::In);
        assert_eq!(key.class_id(), 4321);
        assert_eq!(key.port(), 44818);
        assert_eq!(key.proto(), Proto::Udp);
        assert_eq!(key.direction(), Direction::In);
    }

    #[test]
    fn discovered_devices_get_windows_and_periodicity() {
        let mut registry = Registry::discovering();
        let mut windows = Windows::default();
        for i in 0..20 {
            let ts = 3600.0 + f64::from(i) * 60.0;
            accumulate(&mut registry, &mut windows, 3600.0, &flow(ts, "10.0.0.5", "8.8.4.4", 443));
        }
        assert_eq!(registry.devices.len(), 1);
        assert_eq!(windows.len(), 1);
        let window = &windows.windows[0];
        assert_eq!(window.flows, 20);
        assert_eq!(window.bytes_sent, 2000);
        assert_eq!(window.external_flows, 20);
        let peer = window.peers.values().next().unwrap();
        assert!(peer.periodicity() > 0.99);
        assert!((peer.mean_gap() - 60.0).abs() < 1e-6);
    }

    #[test]
    fn a_flow_between_two_devices_counts_for_both_directions() {
        let mut registry = Registry::discovering();
        let mut windows = Windows::default();
        accumulate(&mut registry, &mut windows, 3600.0, &flow(10.0, "10.0.0.9", "10.0.0.5", 22));
        accumulate(&mut registry, &mut windows, 3600.0, &flow(20.0, "10.0.0.5", "10.0.0.9", 53));
        assert_eq!(windows.len(), 2);
        let first = &windows.windows[0];
        assert_eq!(first.flows_out, 1);
        assert_eq!(first.flows, 2);
    }
}
