//! One simulated connection as Zeek would log it, and builders that keep its packet and
//! IP-byte counts consistent with its payload bytes and connection state.
//!
//! The builders are the only place that knows TCP and UDP overheads, so every device
//! model and scenario gets the same arithmetic: a 1 GB DICOM transfer has the packet
//! count a 1448-byte MSS implies, a refused connection has one SYN and one RST.

use std::net::Ipv4Addr;

use crate::model::{ConnState, Proto, Service};

/// Payload bytes per full TCP segment (1500-byte MTU, IP and TCP headers with the
/// timestamp option).
const MSS: u64 = 1448;
/// IP + TCP header bytes of a data or ACK segment with timestamps.
const TCP_HEADER: u64 = 52;
/// IP + TCP header bytes of a SYN or SYN-ACK, which carry more options.
const SYN_HEADER: u64 = 60;
/// IP + TCP header bytes of a bare RST.
const RST_HEADER: u64 = 40;
/// IP + UDP header bytes.
const UDP_HEADER: u64 = 28;

/// A connection in the shape of one `conn.log` row. `duration == 0` means Zeek saw a
/// single packet and left duration and both byte counts unset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SimFlow {
    /// Start, in microseconds since the epoch.
    pub ts: i64,
    /// Microseconds; 0 when unset.
    pub duration: i64,
    pub orig: Ipv4Addr,
    pub orig_p: u16,
    pub resp: Ipv4Addr,
    pub resp_p: u16,
    pub proto: Proto,
    pub service: Service,
    pub state: ConnState,
    pub history: &'static str,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    pub orig_pkts: u64,
    pub resp_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_ip_bytes: u64,
}

impl SimFlow {
    /// The order rows are written in: by time, then by the connection's addresses and
    /// ports, so equal timestamps do not depend on which device was generated first.
    pub fn sort_key(&self) -> (i64, u32, u16, u32, u16) {
        (self.ts, u32::from(self.orig), self.orig_p, u32::from(self.resp), self.resp_p)
    }
}

/// Who talks to whom and when; the builders turn it into a `SimFlow`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conn {
    pub ts: i64,
    pub orig: Ipv4Addr,
    pub orig_p: u16,
    pub resp: Ipv4Addr,
    pub resp_p: u16,
}

impl Conn {
    pub fn new(ts: i64, orig: Ipv4Addr, orig_p: u16, resp: Ipv4Addr, resp_p: u16) -> Conn {
        Conn { ts, orig, orig_p, resp, resp_p }
    }

    fn flow(self, proto: Proto, service: Service, state: ConnState) -> SimFlow {
        SimFlow {
            ts: self.ts,
            duration: 0,
            orig: self.orig,
            orig_p: self.orig_p,
            resp: self.resp,
            resp_p: self.resp_p,
            proto,
            service,
            state,
            history: "",
            orig_bytes: 0,
            resp_bytes: 0,
            orig_pkts: 0,
            resp_pkts: 0,
            orig_ip_bytes: 0,
            resp_ip_bytes: 0,
        }
    }

    /// A complete TCP conversation (`SF`) that moves bulk data: full segments each way,
    /// with delayed ACKs for the other side's data.
    pub fn tcp(self, service: Service, duration: i64, sent: u64, received: u64) -> SimFlow {
        let orig_segments = sent.div_ceil(MSS);
        let resp_segments = received.div_ceil(MSS);
        // SYN, ACK, FIN besides the data; the SYN-ACK and FIN on the other side.
        let orig_pkts = 3 + orig_segments + resp_segments.div_ceil(2);
        let resp_pkts = 2 + resp_segments + orig_segments.div_ceil(2);
        self.tcp_sf(service, duration, (sent, received), (orig_pkts, resp_pkts))
    }

    /// A complete TCP conversation of `exchanges` request/response pairs, as a SCADA
    /// poll loop or a heartbeat channel makes: one segment per request and per answer.
    pub fn tcp_exchanges(
        self,
        service: Service,
        duration: i64,
        orig_bytes: u64,
        resp_bytes: u64,
        exchanges: u64,
    ) -> SimFlow {
        let orig_pkts = 3 + exchanges.max(orig_bytes.div_ceil(MSS));
        let resp_pkts = 2 + exchanges.max(resp_bytes.div_ceil(MSS));
        self.tcp_sf(service, duration, (orig_bytes, resp_bytes), (orig_pkts, resp_pkts))
    }

    fn tcp_sf(
        self,
        service: Service,
        duration: i64,
        (orig_bytes, resp_bytes): (u64, u64),
        (orig_pkts, resp_pkts): (u64, u64),
    ) -> SimFlow {
        let history = match (orig_bytes > 0, resp_bytes > 0) {
            (true, true) => "ShADadFf",
            (true, false) => "ShADaFf",
            (false, true) => "ShAdaFf",
            (false, false) => "ShAFf",
        };
        SimFlow {
            duration: duration.max(1),
            history,
            orig_bytes,
            resp_bytes,
            orig_pkts,
            resp_pkts,
            orig_ip_bytes: orig_bytes + orig_pkts * TCP_HEADER + (SYN_HEADER - TCP_HEADER),
            resp_ip_bytes: resp_bytes + resp_pkts * TCP_HEADER + (SYN_HEADER - TCP_HEADER),
            ..self.flow(Proto::Tcp, service, ConnState::SF)
        }
    }

    /// A short TCP exchange in which the server speaks first (a telnet or SSH banner)
    /// and the client then closes normally (`SF`) or with a reset (`RSTO`).
    pub fn tcp_banner(
        self,
        service: Service,
        duration: i64,
        orig_bytes: u64,
        resp_bytes: u64,
        reset: bool,
    ) -> SimFlow {
        let orig_pkts = 3 + orig_bytes.div_ceil(MSS);
        let resp_pkts = 2 + resp_bytes.div_ceil(MSS);
        let (state, history, resp_pkts) = if reset {
            (ConnState::RSTO, "ShAdDaR", resp_pkts - 1)
        } else {
            (ConnState::SF, "ShAdDaFf", resp_pkts)
        };
        SimFlow {
            duration: duration.max(1),
            history,
            orig_bytes,
            resp_bytes,
            orig_pkts,
            resp_pkts,
            orig_ip_bytes: orig_bytes + orig_pkts * TCP_HEADER + (SYN_HEADER - TCP_HEADER),
            resp_ip_bytes: resp_bytes + resp_pkts * TCP_HEADER + (SYN_HEADER - TCP_HEADER),
            ..self.flow(Proto::Tcp, service, state)
        }
    }

    /// A connect scan that found an open port: handshake, then the scanner resets.
    pub fn tcp_open_then_reset(self, rtt: i64) -> SimFlow {
        SimFlow {
            duration: rtt.max(1),
            history: "ShAR",
            orig_pkts: 3,
            resp_pkts: 1,
            orig_ip_bytes: SYN_HEADER + TCP_HEADER + RST_HEADER,
            resp_ip_bytes: SYN_HEADER,
            ..self.flow(Proto::Tcp, Service::Unknown, ConnState::RSTO)
        }
    }

    /// A SYN answered by a RST (`REJ`): the host is there, the port is closed.
    pub fn tcp_refused(self, rtt: i64) -> SimFlow {
        SimFlow {
            duration: rtt.max(1),
            history: "Sr",
            orig_pkts: 1,
            resp_pkts: 1,
            orig_ip_bytes: SYN_HEADER,
            resp_ip_bytes: RST_HEADER,
            ..self.flow(Proto::Tcp, Service::Unknown, ConnState::REJ)
        }
    }

    /// SYNs that nobody answered (`S0`). One SYN leaves duration unset; retries come
    /// after 1 s and 3 s, as a Linux stack sends them.
    pub fn tcp_unanswered(self, syns: u64) -> SimFlow {
        let syns = syns.clamp(1, 3);
        let duration = match syns {
            1 => 0,
            2 => SECOND_RETRY,
            _ => SECOND_RETRY * 3,
        };
        SimFlow {
            duration,
            history: "S",
            orig_pkts: syns,
            orig_ip_bytes: syns * SYN_HEADER,
            ..self.flow(Proto::Tcp, Service::Unknown, ConnState::S0)
        }
    }

    /// A UDP request and its answer(s) (`SF`, history `Dd`).
    pub fn udp(
        self,
        service: Service,
        duration: i64,
        (orig_bytes, resp_bytes): (u64, u64),
        (orig_pkts, resp_pkts): (u64, u64),
    ) -> SimFlow {
        let (orig_pkts, resp_pkts) = (orig_pkts.max(1), resp_pkts.max(1));
        SimFlow {
            duration: duration.max(1),
            history: "Dd",
            orig_bytes,
            resp_bytes,
            orig_pkts,
            resp_pkts,
            orig_ip_bytes: orig_bytes + orig_pkts * UDP_HEADER,
            resp_ip_bytes: resp_bytes + resp_pkts * UDP_HEADER,
            ..self.flow(Proto::Udp, service, ConnState::SF)
        }
    }

    /// One UDP datagram that got no answer (`S0`, history `D`): Zeek leaves duration
    /// and bytes unset, but the IP bytes still count.
    pub fn udp_unanswered(self, service: Service, payload: u64) -> SimFlow {
        SimFlow {
            history: "D",
            orig_pkts: 1,
            orig_ip_bytes: payload + UDP_HEADER,
            ..self.flow(Proto::Udp, service, ConnState::S0)
        }
    }
}

/// The first SYN retransmission of a Linux stack, in microseconds.
const SECOND_RETRY: i64 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn::new(0, Ipv4Addr::new(10, 0, 0, 1), 50000, Ipv4Addr::new(10, 0, 0, 2), 104)
    }

    #[test]
    fn bulk_tcp_packets_follow_the_payload() {
        let flow = conn().tcp(Service::Dicom, 2_000_000, 1_000_000_000, 20_000);
        assert_eq!(flow.state, ConnState::SF);
        assert_eq!(flow.history, "ShADadFf");
        assert!(flow.orig_pkts >= 1_000_000_000 / MSS);
        assert!(flow.orig_ip_bytes > flow.orig_bytes);
        assert!(flow.resp_pkts > flow.orig_pkts / 3);
    }

    #[test]
    fn failed_attempts_carry_no_payload() {
        let refused = conn().tcp_refused(400);
        assert_eq!((refused.state, refused.history), (ConnState::REJ, "Sr"));
        assert_eq!((refused.orig_bytes, refused.resp_bytes), (0, 0));
        let silent = conn().tcp_unanswered(1);
        assert_eq!((silent.state, silent.history, silent.duration), (ConnState::S0, "S", 0));
        assert_eq!(conn().tcp_unanswered(3).orig_pkts, 3);
    }

    #[test]
    fn udp_ip_bytes_add_headers_per_datagram() {
        let flow = conn().udp(Service::Dns, 900, (40, 120), (1, 1));
        assert_eq!((flow.orig_ip_bytes, flow.resp_ip_bytes), (68, 148));
        assert_eq!(flow.history, "Dd");
    }
}
