//! Writes flows as a Zeek `conn.log` in its tab-separated form: the `#` header lines
//! Zeek writes, one row per flow in the standard column order, `-` for unset fields and
//! a `#close` line at the end.
//!
//! This is the hot loop of the simulator (millions of rows), so a row is built in one
//! reused buffer and numbers and addresses are formatted by hand, without allocating.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};

use crate::model::is_internal;

use super::clock::{DAY, SECOND};
use super::flow::SimFlow;

const FIELDS: &str = "ts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\t\
duration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\t\
orig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents";

const TYPES: &str = "time\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\t\
count\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]";

/// A `conn.log` being written. Rows must be handed over in time order.
pub(crate) struct ConnLogWriter<W: Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: Write> ConnLogWriter<W> {
    /// Writes the header, stamping `#open` with `opened` (microseconds, UTC).
    pub fn new(mut out: W, opened: i64) -> io::Result<ConnLogWriter<W>> {
        writeln!(out, "#separator \\x09")?;
        writeln!(out, "#set_separator\t,")?;
        writeln!(out, "#empty_field\t(empty)")?;
        writeln!(out, "#unset_field\t-")?;
        writeln!(out, "#path\tconn")?;
        writeln!(out, "#open\t{}", zeek_stamp(opened))?;
        writeln!(out, "#fields\t{FIELDS}")?;
        writeln!(out, "#types\t{TYPES}")?;
        Ok(ConnLogWriter { out, line: Vec::with_capacity(256) })
    }

    /// Writes one row; `uid` is the connection's Zeek UID.
    pub fn write(&mut self, flow: &SimFlow, uid: &Uid) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        push_micros(line, flow.ts);
        line.push(b'\t');
        line.extend_from_slice(&uid.0);
        line.push(b'\t');
        push_ip(line, flow.orig);
        line.push(b'\t');
        push_u64(line, u64::from(flow.orig_p));
        line.push(b'\t');
        push_ip(line, flow.resp);
        line.push(b'\t');
        push_u64(line, u64::from(flow.resp_p));
        line.push(b'\t');
        line.extend_from_slice(flow.proto.as_str().as_bytes());
        line.push(b'\t');
        line.extend_from_slice(flow.service.as_str().as_bytes());
        line.push(b'\t');
        // Zeek sets duration and byte counts only when the connection lasted at all.
        if flow.duration > 0 {
            push_micros(line, flow.duration);
            line.push(b'\t');
            push_u64(line, flow.orig_bytes);
            line.push(b'\t');
            push_u64(line, flow.resp_bytes);
        } else {
            line.extend_from_slice(b"-\t-\t-");
        }
        line.push(b'\t');
        line.extend_from_slice(flow.state.as_str().as_bytes());
        line.push(b'\t');
        line.push(local_flag(flow.orig));
        line.push(b'\t');
        line.push(local_flag(flow.resp));
        line.extend_from_slice(b"\t0\t");
        if flow.history.is_empty() {
            line.push(b'-');
        } else {
            line.extend_from_slice(flow.history.as_bytes());
        }
        for count in [flow.orig_pkts, flow.orig_ip_bytes, flow.resp_pkts, flow.resp_ip_bytes] {
            line.push(b'\t');
            push_u64(line, count);
        }
        line.extend_from_slice(b"\t-\n");
        self.out.write_all(line)
    }

    /// Writes `#close` with `closed` and hands back the writer, flushed.
    pub fn close(mut self, closed: i64) -> io::Result<W> {
        writeln!(self.out, "#close\t{}", zeek_stamp(closed))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A Zeek connection UID: `C` and 17 base62 characters.
pub(crate) struct Uid([u8; 18]);

impl Uid {
    /// Builds a UID from two random words; 17 base62 digits hold about 101 bits.
    pub fn from_words(high: u64, low: u64) -> Uid {
        const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut uid = [b'C'; 18];
        let (mut high, mut low) = (high, low);
        for slot in uid[1..11].iter_mut() {
            *slot = DIGITS[(high % 62) as usize];
            high /= 62;
        }
        for slot in uid[11..].iter_mut() {
            *slot = DIGITS[(low % 62) as usize];
            low /= 62;
        }
        Uid(uid)
    }
}

/// Zeek's `T`/`F` for `local_orig`/`local_resp`, as a sensor with private ranges in
/// `Site::local_nets` writes them.
fn local_flag(ip: Ipv4Addr) -> u8 {
    if is_internal(&IpAddr::V4(ip)) { b'T' } else { b'F' }
}

fn push_u64(line: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[at..]);
}

/// Microseconds as seconds with exactly six decimals, as Zeek prints times.
fn push_micros(line: &mut Vec<u8>, micros: i64) {
    if micros < 0 {
        line.push(b'-');
    }
    let micros = micros.unsigned_abs();
    push_u64(line, micros / SECOND as u64);
    line.push(b'.');
    let fraction = micros % SECOND as u64;
    let mut digits = [b'0'; 6];
    let mut rest = fraction;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    line.extend_from_slice(&digits);
}

fn push_ip(line: &mut Vec<u8>, ip: Ipv4Addr) {
    for (idx, octet) in ip.octets().into_iter().enumerate() {
        if idx > 0 {
            line.push(b'.');
        }
        push_u64(line, u64::from(octet));
    }
}

/// `#open`/`#close` stamps: `YYYY-MM-DD-HH-MM-SS`, here in UTC.
fn zeek_stamp(at: i64) -> String {
    let days = at.div_euclid(DAY);
    let secs = at.rem_euclid(DAY) / SECOND;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}-{:02}-{:02}-{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::sim::flow::Conn;
    use crate::model::Service;

    #[test]
    fn writes_rows_like_zeek() {
        let mut writer =
            ConnLogWriter::new(Vec::new(), 1_772_409_600 * SECOND).expect("a Vec takes writes");
        let conn = Conn::new(
            1_772_409_600 * SECOND + 26_074,
            Ipv4Addr::new(10, 20, 1, 10),
            50123,
            Ipv4Addr::new(198, 51, 100, 10),
            443,
        );
        let flow = conn.tcp(Service::Ssl, 3_909_013, 83, 6721);
        writer.write(&flow, &Uid::from_words(1, 2)).expect("a Vec takes writes");
        writer.write(&conn.tcp_unanswered(1), &Uid::from_words(3, 4)).expect("a Vec takes writes");
        let bytes = writer.close(1_772_496_000 * SECOND).expect("a Vec takes writes");
        let text = String::from_utf8(bytes).expect("the log is ASCII");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#separator \\x09");
        assert_eq!(lines[5], "#open\t2026-03-02-00-00-00");
        assert_eq!(lines[6].split('\t').count(), 22);
        assert_eq!(lines[7].split('\t').count(), 22);
        assert_eq!(
            lines[8],
            "1772409600.026074\tC10000000002000000\t10.20.1.10\t50123\t198.51.100.10\t443\ttcp\t\
             ssl\t3.909013\t83\t6721\tSF\tT\tF\t0\tShADadFf\t7\t455\t8\t7145\t-"
        );
        let silent: Vec<&str> = lines[9].split('\t').collect();
        assert_eq!(&silent[7..12], ["-", "-", "-", "-", "S0"]);
        assert_eq!(lines[10], "#close\t2026-03-03-00-00-00");
    }

    #[test]
    fn uids_are_zeek_shaped() {
        let uid = Uid::from_words(u64::MAX, u64::MAX);
        assert_eq!(uid.0.len(), 18);
        assert_eq!(uid.0[0], b'C');
        assert!(uid.0.iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn formats_micros_and_dates() {
        let mut line = Vec::new();
        push_micros(&mut line, 5);
        assert_eq!(line, b"0.000005");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_514), (2026, 3, 2));
    }
}
