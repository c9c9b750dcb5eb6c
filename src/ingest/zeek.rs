//! The Zeek `conn.log` reader: tab-separated logs with a `#fields` header and Zeek JSON
//! lines, either plain or gzip-compressed, turned into canonical `Flow`s one at a time.
//!
//! The format is taken from the content (gzip magic bytes, then `#` for TSV or `{` for
//! JSON), never from the file name, because captures are renamed freely. The TSV path is
//! the hot one: a capture can hold hundreds of millions of lines, so it reuses one line
//! buffer, maps header names to column positions once, and parses numbers and IPv4
//! addresses straight from bytes without allocating. Only a skipped line allocates, for
//! its message. This file depends only on `model` and the error types in `ingest`.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{IngestError, ReadSummary, describe_start, json_error_text};
use crate::model::{ConnState, Flow, Proto, Service};

/// Reads one Zeek `conn.log` (TSV or JSON lines, plain or gzip) and hands every flow to
/// `on_flow`. Malformed lines are skipped and listed in the summary; messages name the
/// file as `path` was given.
pub fn read_flows(path: &Path, on_flow: &mut dyn FnMut(&Flow)) -> Result<ReadSummary, IngestError> {
    let file =
        File::open(path).map_err(|source| IngestError::Io { path: path.to_path_buf(), source })?;
    let reader = BufReader::with_capacity(READ_BUFFER, file);
    read_flows_from(&path.display().to_string(), reader, on_flow)
}

/// Like `read_flows`, over any buffered reader; `name` stands for the file in messages
/// and errors.
pub fn read_flows_from(
    name: &str,
    mut reader: impl BufRead,
    on_flow: &mut dyn FnMut(&Flow),
) -> Result<ReadSummary, IngestError> {
    let head = reader
        .fill_buf()
        .map_err(|source| IngestError::Io { path: PathBuf::from(name), source })?;
    if head.starts_with(&GZIP_MAGIC) {
        // MultiGzDecoder, not GzDecoder: `cat a.gz b.gz` and rotated logs written by
        // appending are several gzip members, and all of them are data.
        let mut decoded = BufReader::with_capacity(READ_BUFFER, MultiGzDecoder::new(reader));
        FlowReader::new(name, &mut decoded, true).run(on_flow)
    } else {
        FlowReader::new(name, &mut reader, false).run(on_flow)
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Big enough that a read is a few syscalls per megabyte, small enough to not matter.
const READ_BUFFER: usize = 256 * 1024;

/// A line longer than this is not a flow record. The cap keeps one bad line (say, a
/// binary file with no newlines) from growing the line buffer to the size of the file.
const MAX_LINE: usize = 1024 * 1024;

/// Column names as Zeek writes them; used for the header and for JSON keys.
const TS: &str = "ts";
const ORIG_H: &str = "id.orig_h";
const ORIG_P: &str = "id.orig_p";
const RESP_H: &str = "id.resp_h";
const RESP_P: &str = "id.resp_p";
const PROTO: &str = "proto";

const REQUIRED: [&str; 6] = [TS, ORIG_H, ORIG_P, RESP_H, RESP_P, PROTO];

/// What a flow is before its line fills it in; optional columns keep these values.
const BLANK_FLOW: Flow = Flow {
    ts: 0.0,
    orig_h: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    orig_p: 0,
    resp_h: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    resp_p: 0,
    proto: Proto::Other,
    service: Service::Unknown,
    duration: 0.0,
    orig_bytes: 0,
    resp_bytes: 0,
    orig_pkts: 0,
    resp_pkts: 0,
    conn_state: ConnState::Unknown,
};

/// One file being read: its lines, the format found in them, and the running summary.
struct FlowReader<'r> {
    name: &'r str,
    lines: Lines<'r>,
    gzip: bool,
    summary: ReadSummary,
}

enum Format {
    Tsv(Box<TsvState>),
    Json,
}

impl<'r> FlowReader<'r> {
    fn new(name: &'r str, reader: &'r mut dyn BufRead, gzip: bool) -> FlowReader<'r> {
        FlowReader { name, lines: Lines::new(reader), gzip, summary: ReadSummary::default() }
    }

    fn run(mut self, on_flow: &mut dyn FnMut(&Flow)) -> Result<ReadSummary, IngestError> {
        let mut format: Option<Format> = None;
        loop {
            let (line_no, line) = match self.lines.next() {
                Ok(Some(numbered)) => numbered,
                Ok(None) => break,
                Err(source) => return Err(self.read_error(source)),
            };
            let text = match line {
                Line::Text(text) => text,
                Line::TooLong => {
                    let message = format!("line is longer than {MAX_LINE} bytes");
                    self.summary.add_problem(self.name, line_no, message);
                    continue;
                }
            };

            let format = match &mut format {
                Some(format) => format,
                None => {
                    let start = trim_start(text);
                    match start.first() {
                        None => continue,
                        Some(b'#') => format.insert(Format::Tsv(Box::default())),
                        Some(b'{') => format.insert(Format::Json),
                        Some(_) => {
                            return Err(IngestError::UnknownFormat {
                                path: PathBuf::from(self.name),
                                found: describe_start(start),
                            });
                        }
                    }
                }
            };

            let parsed = match format {
                Format::Tsv(tsv) => match tsv.line(text) {
                    Ok(parsed) => parsed,
                    Err(fatal) => return Err(fatal.into_error(self.name)),
                },
                Format::Json => json_line(text),
            };
            match parsed {
                Parsed::Flow(flow) => {
                    self.summary.add_flow(flow.ts);
                    on_flow(&flow);
                }
                Parsed::Nothing => {}
                Parsed::Bad(message) => self.summary.add_problem(self.name, line_no, message),
            }
        }

        if format.is_none() {
            return Err(IngestError::Empty { path: PathBuf::from(self.name) });
        }
        tracing::debug!(
            file = self.name,
            flows = self.summary.flows,
            skipped = self.summary.skipped,
            "read flow file"
        );
        Ok(self.summary)
    }

    fn read_error(&self, source: io::Error) -> IngestError {
        let path = PathBuf::from(self.name);
        // flate2 reports a member that stops before its end, or a missing trailer, as
        // UnexpectedEof; anything else (a bad checksum, a disk error) is passed on.
        if self.gzip && source.kind() == io::ErrorKind::UnexpectedEof {
            IngestError::TruncatedGzip { path, flows: self.summary.flows }
        } else {
            IngestError::Io { path, source }
        }
    }
}

/// A reusable line buffer over a reader, counting lines.
struct Lines<'r> {
    reader: &'r mut dyn BufRead,
    buf: Vec<u8>,
    line_no: u64,
}

enum Line<'a> {
    /// The line without its `\n` or `\r\n`.
    Text(&'a [u8]),
    TooLong,
}

impl<'r> Lines<'r> {
    fn new(reader: &'r mut dyn BufRead) -> Lines<'r> {
        Lines { reader, buf: Vec::with_capacity(512), line_no: 0 }
    }

    /// The next line and its 1-based number, or `None` at the end.
    fn next(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let n = (&mut *self.reader).take(MAX_LINE as u64).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if n == MAX_LINE && self.buf.last() != Some(&b'\n') {
            self.skip_rest_of_line()?;
            return Ok(Some((self.line_no, Line::TooLong)));
        }

        let mut text = self.buf.as_slice();
        if let [rest @ .., b'\n'] = text {
            text = rest;
        }
        if let [rest @ .., b'\r'] = text {
            text = rest;
        }
        Ok(Some((self.line_no, Line::Text(text))))
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(());
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.reader.consume(end + 1);
                    return Ok(());
                }
                None => {
                    let len = chunk.len();
                    self.reader.consume(len);
                }
            }
        }
    }
}

/// What one line amounted to.
enum Parsed {
    Flow(Flow),
    /// A header, comment or blank line.
    Nothing,
    /// A malformed line; the message says why.
    Bad(String),
}

/// Header problems that make the rest of a TSV file unreadable.
enum Fatal {
    MissingFieldsHeader,
    MissingColumn(&'static str),
    UnsupportedSeparator(String),
}

impl Fatal {
    fn into_error(self, name: &str) -> IngestError {
        let path = PathBuf::from(name);
        match self {
            Fatal::MissingFieldsHeader => IngestError::MissingFieldsHeader { path },
            Fatal::MissingColumn(column) => IngestError::MissingColumn { path, column },
            Fatal::UnsupportedSeparator(separator) => {
                IngestError::UnsupportedSeparator { path, separator }
            }
        }
    }
}

/// The `Flow` field a TSV column fills, looked up by position for every line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Ts,
    OrigH,
    OrigP,
    RespH,
    RespP,
    Proto,
    Service,
    Duration,
    OrigBytes,
    RespBytes,
    OrigPkts,
    RespPkts,
    ConnState,
    Ignore,
}

impl Slot {
    fn for_name(name: &str) -> Slot {
        match name {
            TS => Slot::Ts,
            ORIG_H => Slot::OrigH,
            ORIG_P => Slot::OrigP,
            RESP_H => Slot::RespH,
            RESP_P => Slot::RespP,
            PROTO => Slot::Proto,
            "service" => Slot::Service,
            "duration" => Slot::Duration,
            "orig_bytes" => Slot::OrigBytes,
            "resp_bytes" => Slot::RespBytes,
            "orig_pkts" => Slot::OrigPkts,
            "resp_pkts" => Slot::RespPkts,
            "conn_state" => Slot::ConnState,
            _ => Slot::Ignore,
        }
    }
}

/// The header directives seen so far in a TSV file. Zeek allows a file to restate them
/// (concatenated logs do), so each `#fields` replaces the column map.
struct TsvState {
    separator: u8,
    unset: Vec<u8>,
    empty: Vec<u8>,
    columns: Option<Columns>,
}

impl Default for TsvState {
    fn default() -> TsvState {
        TsvState {
            separator: b'\t',
            unset: b"-".to_vec(),
            empty: b"(empty)".to_vec(),
            columns: None,
        }
    }
}

/// Column positions from a `#fields` line.
struct Columns {
    slots: Vec<Slot>,
    names: Vec<String>,
    /// Set when the header's last separator-delimited field holds several names split
    /// by spaces, as IoT-23 writes `tunnel_parents   label   detailed-label`: the
    /// position of that field and how many names it holds. Data lines are split the
    /// same way.
    spaced_tail: Option<(usize, usize)>,
}

/// A value that did not parse, kept until the line's column count is known: a short
/// line shifts every value, and then the count is the message that helps.
struct FieldError {
    column: usize,
    value: String,
    expected: &'static str,
}

impl TsvState {
    fn line(&mut self, text: &[u8]) -> Result<Parsed, Fatal> {
        if text.first() == Some(&b'#') {
            self.directive(text)?;
            return Ok(Parsed::Nothing);
        }
        if text.is_empty() {
            return Ok(Parsed::Nothing);
        }
        let Some(columns) = &self.columns else {
            return Err(Fatal::MissingFieldsHeader);
        };
        Ok(match self.record(columns, text) {
            Ok(flow) => Parsed::Flow(flow),
            Err(message) => Parsed::Bad(message),
        })
    }

    fn directive(&mut self, text: &[u8]) -> Result<(), Fatal> {
        // `#separator` is followed by a space (the separator is not known yet); the
        // other directives by the separator itself.
        if let Some(value) = text.strip_prefix(b"#separator ") {
            let decoded = unescape(value);
            return match decoded.as_slice() {
                [byte] => {
                    self.separator = *byte;
                    Ok(())
                }
                _ => Err(Fatal::UnsupportedSeparator(String::from_utf8_lossy(value).into_owned())),
            };
        }
        let sep = self.separator;
        let (name, value) = match text.iter().position(|&b| b == sep) {
            Some(at) => (&text[..at], &text[at + 1..]),
            None => (text, &b""[..]),
        };
        match name {
            b"#unset_field" => self.unset = value.to_vec(),
            b"#empty_field" => self.empty = value.to_vec(),
            b"#fields" => self.columns = Some(Columns::from_header(value, sep)?),
            _ => {}
        }
        Ok(())
    }

    fn record(&self, columns: &Columns, text: &[u8]) -> Result<Flow, String> {
        let mut flow = BLANK_FLOW;
        let mut error: Option<FieldError> = None;
        let mut column = 0;
        let mut rest = text;
        loop {
            let (field, next) = match rest.iter().position(|&b| b == self.separator) {
                Some(at) => (&rest[..at], Some(&rest[at + 1..])),
                None => (rest, None),
            };
            match columns.spaced_tail {
                Some((at, parts)) if next.is_none() && column == at => {
                    for part in SpacedParts::new(field, parts) {
                        self.field(columns, column, part, &mut flow, &mut error);
                        column += 1;
                    }
                }
                _ => {
                    self.field(columns, column, field, &mut flow, &mut error);
                    column += 1;
                }
            }
            match next {
                Some(next) => rest = next,
                None => break,
            }
        }

        if column != columns.slots.len() {
            return Err(format!("expected {} columns, found {column}", columns.slots.len()));
        }
        match error {
            None => Ok(flow),
            Some(FieldError { column, value, expected }) => {
                Err(format!("{} \"{value}\" is not {expected}", columns.names[column]))
            }
        }
    }

    #[inline]
    fn field(
        &self,
        columns: &Columns,
        column: usize,
        field: &[u8],
        flow: &mut Flow,
        error: &mut Option<FieldError>,
    ) {
        let Some(&slot) = columns.slots.get(column) else {
            return;
        };
        let unset = || same_bytes(field, &self.unset) || same_bytes(field, &self.empty);
        let ok = match slot {
            Slot::Ts => set(&mut flow.ts, parse_f64(field)),
            Slot::OrigH => set(&mut flow.orig_h, parse_ip(field)),
            Slot::RespH => set(&mut flow.resp_h, parse_ip(field)),
            Slot::OrigP => set(&mut flow.orig_p, parse_port(field)),
            Slot::RespP => set(&mut flow.resp_p, parse_port(field)),
            Slot::Proto => {
                flow.proto = Proto::parse(text_of(field));
                true
            }
            Slot::Service => {
                if !unset() {
                    flow.service = Service::parse(text_of(field));
                }
                true
            }
            Slot::ConnState => {
                if !unset() {
                    flow.conn_state = ConnState::parse(text_of(field));
                }
                true
            }
            Slot::Duration => set(&mut flow.duration, parse_f64(field)) || unset(),
            Slot::OrigBytes => set(&mut flow.orig_bytes, parse_u64(field)) || unset(),
            Slot::RespBytes => set(&mut flow.resp_bytes, parse_u64(field)) || unset(),
            Slot::OrigPkts => set(&mut flow.orig_pkts, parse_u64(field)) || unset(),
            Slot::RespPkts => set(&mut flow.resp_pkts, parse_u64(field)) || unset(),
            Slot::Ignore => true,
        };
        if !ok && error.is_none() {
            *error = Some(FieldError {
                column,
                value: String::from_utf8_lossy(field).into_owned(),
                expected: slot.expected(),
            });
        }
    }
}

impl Slot {
    /// The end of "<column> "<value>" is not ..." for a value that did not parse.
    fn expected(self) -> &'static str {
        match self {
            Slot::Ts => "a time",
            Slot::OrigH | Slot::RespH => "an IP address",
            Slot::OrigP | Slot::RespP => "a port",
            Slot::Duration => "a duration in seconds",
            Slot::OrigBytes | Slot::RespBytes | Slot::OrigPkts | Slot::RespPkts => "a count",
            Slot::Proto | Slot::Service | Slot::ConnState | Slot::Ignore => "valid",
        }
    }
}

impl Columns {
    fn from_header(value: &[u8], sep: u8) -> Result<Columns, Fatal> {
        let fields: Vec<&[u8]> = value.split(|&b| b == sep).collect();
        let mut names = Vec::with_capacity(fields.len() + 2);
        let mut spaced_tail = None;
        for (idx, field) in fields.iter().enumerate() {
            let text = String::from_utf8_lossy(field);
            let parts: Vec<&str> = text.split_ascii_whitespace().collect();
            if idx + 1 == fields.len() && parts.len() > 1 {
                spaced_tail = Some((names.len(), parts.len()));
                names.extend(parts.iter().map(|part| part.to_string()));
            } else {
                names.push(text.trim().to_string());
            }
        }

        for required in REQUIRED {
            if !names.iter().any(|name| name == required) {
                return Err(Fatal::MissingColumn(required));
            }
        }
        let slots = names.iter().map(|name| Slot::for_name(name)).collect();
        Ok(Columns { slots, names, spaced_tail })
    }
}

/// Splits a field on runs of spaces into at most `parts` pieces, the last one taking
/// the rest, so a label with a space in it stays one column.
struct SpacedParts<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> SpacedParts<'a> {
    fn new(field: &'a [u8], parts: usize) -> SpacedParts<'a> {
        SpacedParts { rest: trim_spaces(field), left: parts }
    }
}

impl<'a> Iterator for SpacedParts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 || self.rest.is_empty() {
            return None;
        }
        self.left -= 1;
        if self.left == 0 {
            return Some(std::mem::take(&mut self.rest));
        }
        let end = self.rest.iter().position(|b| b.is_ascii_whitespace());
        let end = end.unwrap_or(self.rest.len());
        let part = &self.rest[..end];
        self.rest = trim_spaces(&self.rest[end..]);
        Some(part)
    }
}

fn trim_spaces(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Skips leading whitespace and a UTF-8 byte-order mark, which editors on Windows add.
fn trim_start(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    bytes.trim_ascii_start()
}

/// Decodes the `\xHH` escapes Zeek writes in `#separator`.
fn unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut idx = 0;
    while idx < value.len() {
        if value[idx] == b'\\' && value.get(idx + 1) == Some(&b'x') {
            let hex = value.get(idx + 2..idx + 4).and_then(|hex| std::str::from_utf8(hex).ok());
            if let Some(byte) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(byte);
                idx += 4;
                continue;
            }
        }
        out.push(value[idx]);
        idx += 1;
    }
    out
}

/// Byte equality for the short unset markers. Written out because the slice `==` calls
/// `memcmp`, which showed up in profiles at this call rate.
#[inline]
fn same_bytes(field: &[u8], marker: &[u8]) -> bool {
    field.len() == marker.len() && field.iter().zip(marker).all(|(a, b)| a == b)
}

/// Stores a parsed value, or reports that there was none.
#[inline]
fn set<T>(slot: &mut T, value: Option<T>) -> bool {
    match value {
        Some(value) => {
            *slot = value;
            true
        }
        None => false,
    }
}

/// Text for the enum-like columns; invalid UTF-8 maps to the "other" variant.
fn text_of(field: &[u8]) -> &str {
    std::str::from_utf8(field).unwrap_or("\u{fffd}")
}

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses a finite decimal number. Zeek's `1545403816.962094` has 16 digits, which fit
/// exactly in an f64 mantissa; dividing that exact integer by an exact power of ten is
/// one correctly rounded operation, so this gives the same bits as `str::parse` at a
/// fraction of the cost. Anything else (signs, exponents, long digit runs) goes to
/// `str::parse`.
fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let mut frac_digits = 0usize;
    let mut seen_dot = false;
    for &byte in bytes {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                digits += 1;
                frac_digits += usize::from(seen_dot);
                if digits > 19 {
                    return parse_f64_slow(bytes);
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return parse_f64_slow(bytes),
        }
    }
    if digits == 0 || mantissa >= 1 << 53 {
        return parse_f64_slow(bytes);
    }
    Some(mantissa as f64 / POW10[frac_digits])
}

fn parse_f64_slow(bytes: &[u8]) -> Option<f64> {
    let value: f64 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    value.is_finite().then_some(value)
}

/// Parses an unsigned decimal integer with no sign or spaces.
fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in bytes {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

fn parse_port(bytes: &[u8]) -> Option<u16> {
    parse_u64(bytes).and_then(|port| u16::try_from(port).ok())
}

/// IPv4 from bytes by hand, as most flows carry it; IPv6 through the standard parser.
fn parse_ip(bytes: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4(bytes) {
        return Some(IpAddr::V4(v4));
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Dotted quad with no leading zeros (as `std` requires, since `010` is ambiguous).
fn parse_ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut idx = 0;
    let mut value: u32 = 0;
    let mut digits = 0;
    for &byte in bytes {
        match byte {
            b'0'..=b'9' => {
                if digits > 0 && value == 0 {
                    return None;
                }
                value = value * 10 + u32::from(byte - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && idx < 3 => {
                octets[idx] = value as u8;
                idx += 1;
                value = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if idx != 3 || digits == 0 {
        return None;
    }
    octets[3] = value as u8;
    Some(Ipv4Addr::from(octets))
}

/// One Zeek JSON log line. Keys are Zeek's flat names; some shippers nest the 4-tuple
/// under `id` instead, so that shape is read too. Values are kept as they came so a
/// bad one can be quoted back in the message.
#[derive(Default, Deserialize)]
#[serde(default)]
struct JsonConn<'a> {
    #[serde(borrow)]
    ts: Scalar<'a>,
    #[serde(borrow, rename = "id.orig_h")]
    orig_h: Scalar<'a>,
    #[serde(borrow, rename = "id.orig_p")]
    orig_p: Scalar<'a>,
    #[serde(borrow, rename = "id.resp_h")]
    resp_h: Scalar<'a>,
    #[serde(borrow, rename = "id.resp_p")]
    resp_p: Scalar<'a>,
    #[serde(borrow)]
    id: Option<JsonId<'a>>,
    #[serde(borrow)]
    proto: Scalar<'a>,
    #[serde(borrow)]
    service: Scalar<'a>,
    #[serde(borrow)]
    duration: Scalar<'a>,
    #[serde(borrow)]
    orig_bytes: Scalar<'a>,
    #[serde(borrow)]
    resp_bytes: Scalar<'a>,
    #[serde(borrow)]
    orig_pkts: Scalar<'a>,
    #[serde(borrow)]
    resp_pkts: Scalar<'a>,
    #[serde(borrow)]
    conn_state: Scalar<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct JsonId<'a> {
    #[serde(borrow)]
    orig_h: Scalar<'a>,
    #[serde(borrow)]
    orig_p: Scalar<'a>,
    #[serde(borrow)]
    resp_h: Scalar<'a>,
    #[serde(borrow)]
    resp_p: Scalar<'a>,
}

/// Any JSON value, narrowed to what a conn.log field can be.
#[derive(Debug, Default)]
enum Scalar<'a> {
    #[default]
    Missing,
    Null,
    Bool(bool),
    Int(u64),
    Neg(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Compound,
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Missing => Ok(()),
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(value) => write!(f, "{value}"),
            Scalar::Int(value) => write!(f, "{value}"),
            Scalar::Neg(value) => write!(f, "{value}"),
            Scalar::Float(value) => write!(f, "{value}"),
            Scalar::Str(value) => f.write_str(value),
            Scalar::Compound => f.write_str("[...]"),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar<'a>, D::Error> {
        deserializer.deserialize_any(ScalarVisitor(PhantomData))
    }
}

struct ScalarVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Bool(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Int(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar<'a>, E> {
        Ok(u64::try_from(value).map_or(Scalar::Neg(value), Scalar::Int))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Float(value))
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Str(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Str(Cow::Owned(value.to_string())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Str(Cow::Owned(value)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalar<'a>, E> {
        Ok(Scalar::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Scalar<'a>, D::Error> {
        Scalar::deserialize(inner)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }
}

impl Scalar<'_> {
    fn is_unset(&self) -> bool {
        match self {
            Scalar::Missing | Scalar::Null => true,
            Scalar::Str(text) => text.is_empty() || text == "-" || text == "(empty)",
            _ => false,
        }
    }

    /// Unix seconds from a number, a numeric string or RFC 3339 text (Zeek's
    /// `json_timestamps=JSON::TS_ISO8601`).
    fn time(&self) -> Option<f64> {
        match self {
            Scalar::Int(value) => Some(*value as f64),
            Scalar::Neg(value) => Some(*value as f64),
            Scalar::Float(value) => Some(*value),
            Scalar::Str(text) => parse_f64(text.as_bytes()).or_else(|| {
                let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
                Some(at.unix_timestamp_nanos() as f64 / 1e9)
            }),
            _ => None,
        }
    }

    fn count(&self) -> Option<u64> {
        match self {
            Scalar::Int(value) => Some(*value),
            Scalar::Float(value) if value.fract() == 0.0 && *value >= 0.0 => Some(*value as u64),
            Scalar::Str(text) => parse_u64(text.as_bytes()),
            _ => None,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Scalar::Int(value) => Some(*value as f64),
            Scalar::Float(value) => Some(*value),
            Scalar::Str(text) => parse_f64(text.as_bytes()),
            _ => None,
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        match self {
            Scalar::Str(text) => parse_ip(text.as_bytes()),
            _ => None,
        }
    }

    fn port(&self) -> Option<u16> {
        self.count().and_then(|port| u16::try_from(port).ok())
    }

    fn text(&self) -> &str {
        match self {
            Scalar::Str(text) => text,
            _ => "",
        }
    }
}

fn json_line(text: &[u8]) -> Parsed {
    if trim_start(text).is_empty() {
        return Parsed::Nothing;
    }
    let conn: JsonConn<'_> = match serde_json::from_slice(text) {
        Ok(conn) => conn,
        Err(err) => return Parsed::Bad(json_error_text(&err)),
    };
    match json_flow(conn) {
        Ok(flow) => Parsed::Flow(flow),
        Err(message) => Parsed::Bad(message),
    }
}

fn json_flow(conn: JsonConn<'_>) -> Result<Flow, String> {
    let JsonConn { ts, mut orig_h, mut orig_p, mut resp_h, mut resp_p, id, .. } = conn;
    if let Some(id) = id {
        for (flat, nested) in [
            (&mut orig_h, id.orig_h),
            (&mut orig_p, id.orig_p),
            (&mut resp_h, id.resp_h),
            (&mut resp_p, id.resp_p),
        ] {
            if matches!(flat, Scalar::Missing) {
                *flat = nested;
            }
        }
    }

    let mut flow = BLANK_FLOW;
    flow.ts = required(TS, &ts, "a time", Scalar::time)?;
    flow.orig_h = required(ORIG_H, &orig_h, "an IP address", Scalar::ip)?;
    flow.orig_p = required(ORIG_P, &orig_p, "a port", Scalar::port)?;
    flow.resp_h = required(RESP_H, &resp_h, "an IP address", Scalar::ip)?;
    flow.resp_p = required(RESP_P, &resp_p, "a port", Scalar::port)?;
    if matches!(conn.proto, Scalar::Missing) {
        return Err(format!("{PROTO} is missing"));
    }
    flow.proto = Proto::parse(conn.proto.text());
    if !conn.service.is_unset() {
        flow.service = Service::parse(conn.service.text());
    }
    if !conn.conn_state.is_unset() {
        flow.conn_state = ConnState::parse(conn.conn_state.text());
    }
    flow.duration = optional("duration", &conn.duration, "a duration in seconds", Scalar::number)?
        .unwrap_or(0.0);
    flow.orig_bytes =
        optional("orig_bytes", &conn.orig_bytes, "a count", Scalar::count)?.unwrap_or(0);
    flow.resp_bytes =
        optional("resp_bytes", &conn.resp_bytes, "a count", Scalar::count)?.unwrap_or(0);
    let pkts = |key, value| optional(key, value, "a count", Scalar::count);
    flow.orig_pkts = pkts("orig_pkts", &conn.orig_pkts)?.unwrap_or(0);
    flow.resp_pkts = pkts("resp_pkts", &conn.resp_pkts)?.unwrap_or(0);
    Ok(flow)
}

fn required<'a, T>(
    key: &str,
    value: &Scalar<'a>,
    expected: &str,
    convert: impl Fn(&Scalar<'a>) -> Option<T>,
) -> Result<T, String> {
    if matches!(value, Scalar::Missing) {
        return Err(format!("{key} is missing"));
    }
    convert(value).ok_or_else(|| format!("{key} \"{value}\" is not {expected}"))
}

fn optional<'a, T>(
    key: &str,
    value: &Scalar<'a>,
    expected: &str,
    convert: impl Fn(&Scalar<'a>) -> Option<T>,
) -> Result<Option<T>, String> {
    if value.is_unset() {
        return Ok(None);
    }
    convert(value).map(Some).ok_or_else(|| format!("{key} \"{value}\" is not {expected}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]
mod tests {
    use std::io::{Cursor, Write};

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    const HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n\
        #unset_field\t-\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\t\
        id.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\torig_pkts\t\
        resp_pkts\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\t\
        count\tcount\tstring\tcount\tcount\n";

    const LINE: &str = "1545403816.962094\tCrDn63WjJEmrWGjqf\t192.168.1.195\t41040\t\
        185.244.25.235\t80\ttcp\thttp\t3.139211\t120\t4500\tSF\t3\t5";

    /// Reads text and returns the summary and the flows, or the error.
    fn read(text: &str) -> Result<(ReadSummary, Vec<Flow>), IngestError> {
        read_bytes(text.as_bytes())
    }

    fn read_bytes(bytes: &[u8]) -> Result<(ReadSummary, Vec<Flow>), IngestError> {
        let mut flows = Vec::new();
        let summary = read_flows_from("conn.log", Cursor::new(bytes), &mut |f| flows.push(*f))?;
        Ok((summary, flows))
    }

    fn messages(summary: &ReadSummary) -> Vec<String> {
        summary.problems.iter().map(ToString::to_string).collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn reads_every_field_of_a_tsv_line() {
        let (summary, flows) = read(&format!("{HEADER}{LINE}\n#close\t2019\n")).unwrap();
        assert_eq!((summary.flows, summary.skipped), (1, 0));
        assert_eq!(
            flows[0],
            Flow {
                ts: 1545403816.962094,
                orig_h: "192.168.1.195".parse().unwrap(),
                orig_p: 41040,
                resp_h: "185.244.25.235".parse().unwrap(),
                resp_p: 80,
                proto: Proto::Tcp,
                service: Service::Http,
                duration: 3.139211,
                orig_bytes: 120,
                resp_bytes: 4500,
                orig_pkts: 3,
                resp_pkts: 5,
                conn_state: ConnState::SF,
            }
        );
        assert_eq!(summary.first_ts, Some(1545403816.962094));
        assert_eq!(summary.last_ts, Some(1545403816.962094));
    }

    #[test]
    fn columns_are_found_by_name_in_any_order_and_optional_ones_may_be_absent() {
        let text = "#fields\tproto\tid.resp_p\tid.resp_h\tresp_bytes\tid.orig_p\tid.orig_h\tts\n\
            udp\t53\t8.8.8.8\t77\t5353\t10.0.0.7\t100.5\n";
        let (_, flows) = read(text).unwrap();
        let flow = flows[0];
        assert_eq!((flow.proto, flow.resp_p, flow.orig_p, flow.ts), (Proto::Udp, 53, 5353, 100.5));
        assert_eq!(flow.resp_h, "8.8.8.8".parse::<IpAddr>().unwrap());
        assert_eq!(flow.orig_h, "10.0.0.7".parse::<IpAddr>().unwrap());
        assert_eq!((flow.resp_bytes, flow.orig_bytes, flow.orig_pkts), (77, 0, 0));
        assert_eq!((flow.service, flow.conn_state), (Service::Unknown, ConnState::Unknown));
    }

    #[test]
    fn a_missing_required_column_is_an_error_naming_it() {
        let text =
            "#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tproto\n1\t1.2.3.4\t1\t1.2.3.5\tudp\n";
        match read(text) {
            Err(IngestError::MissingColumn { path, column }) => {
                assert_eq!((path, column), (PathBuf::from("conn.log"), "id.resp_p"));
            }
            other => panic!("expected MissingColumn, got {other:?}"),
        }
    }

    #[test]
    fn unset_and_empty_values_become_zero_and_unknown() {
        let line = "1.5\tC1\t10.0.0.1\t1\t10.0.0.2\t2\ttcp\t-\t-\t-\t(empty)\t-\t-\t-";
        let (summary, flows) = read(&format!("{HEADER}{line}\n")).unwrap();
        assert_eq!(summary.skipped, 0);
        let flow = flows[0];
        assert_eq!(
            (flow.service, flow.conn_state, flow.duration),
            (Service::Unknown, ConnState::Unknown, 0.0)
        );
        assert_eq!(
            (flow.orig_bytes, flow.resp_bytes, flow.orig_pkts, flow.resp_pkts),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn honours_custom_separator_and_unset_markers() {
        let text = "#separator \\x2c\n#unset_field,NA\n#empty_field,EMPTY\n\
            #fields,ts,id.orig_h,id.orig_p,id.resp_h,id.resp_p,proto,service,orig_bytes\n\
            7.25,10.0.0.1,1,10.0.0.2,502,tcp,NA,EMPTY\n\
            8,10.0.0.1,1,10.0.0.2,502,tcp,modbus,12\n";
        let (summary, flows) = read(text).unwrap();
        assert_eq!((summary.flows, summary.skipped), (2, 0), "{:?}", summary.problems);
        assert_eq!((flows[0].service, flows[0].orig_bytes), (Service::Unknown, 0));
        assert_eq!(
            (flows[1].service, flows[1].orig_bytes, flows[1].resp_p),
            (Service::Modbus, 12, 502)
        );
    }

    #[test]
    fn a_multibyte_separator_is_refused() {
        let err = read("#separator \\x09\\x09\n#fields\tts\n").unwrap_err();
        assert!(matches!(err, IngestError::UnsupportedSeparator { .. }), "{err:?}");
    }

    #[test]
    fn iot23_space_separated_tail_is_split_in_header_and_lines() {
        let text = "#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\t\
            tunnel_parents   label   detailed-label\r\n\
            1.0\t10.0.0.1\t1\t10.0.0.2\t80\ttcp\tS0\t-   Malicious   PartOfAHorizontalPortScan\r\n\
            2.0\t10.0.0.1\t1\t10.0.0.2\t80\ttcp\tREJ\t-\tBenign\t-\r\n\
            3.0\t10.0.0.1\t1\t10.0.0.2\t80\ttcp\tSF\t-   Benign\r\n";
        let (summary, flows) = read(text).unwrap();
        assert_eq!(summary.flows, 2);
        assert_eq!(flows[0].conn_state, ConnState::S0);
        assert_eq!(flows[1].conn_state, ConnState::REJ);
        assert_eq!(messages(&summary), ["conn.log:4: expected 10 columns, found 9"]);
    }

    #[test]
    fn bad_values_skip_the_line_with_a_precise_message_and_reading_goes_on() {
        let good = "1.0\tC\t10.0.0.1\t1\t10.0.0.2\t2\tudp\t-\t-\t-\t-\t-\t-\t-";
        let lines = [
            good.to_string(),
            good.replace("\t2\tudp", "\tabc\tudp"),
            good.replace("10.0.0.1", "x"),
            good.replace("1.0\t", "yesterday\t"),
            good.replace("\t2\tudp", "\t70000\tudp"),
            good.replace("\tudp\t-\t-\t-", "\tudp\t-\t-\tlots"),
            good.replacen("\t-", "", 1),
            good.to_string(),
        ];
        let text = format!("{HEADER}{}\n", lines.join("\n"));
        let (summary, flows) = read(&text).unwrap();
        assert_eq!((summary.flows, summary.skipped, flows.len()), (2, 6, 2));
        assert_eq!(
            messages(&summary),
            [
                "conn.log:9: id.resp_p \"abc\" is not a port",
                "conn.log:10: id.orig_h \"x\" is not an IP address",
                "conn.log:11: ts \"yesterday\" is not a time",
                "conn.log:12: id.resp_p \"70000\" is not a port",
                "conn.log:13: orig_bytes \"lots\" is not a count",
                "conn.log:14: expected 14 columns, found 13",
            ]
        );
    }

    #[test]
    fn problems_keep_a_sample_but_count_every_skipped_line() {
        let bad = LINE.replace("\t80\t", "\tnope\t");
        let text = format!("{HEADER}{}{LINE}\n", format!("{bad}\n").repeat(500));
        let (summary, _) = read(&text).unwrap();
        assert_eq!((summary.flows, summary.skipped), (1, 500));
        assert_eq!(summary.problems.len(), crate::ingest::MAX_PROBLEMS);
    }

    #[test]
    fn data_before_fields_header_is_an_error() {
        let err = read(&format!("#separator \\x09\n{LINE}\n")).unwrap_err();
        assert!(matches!(err, IngestError::MissingFieldsHeader { .. }), "{err:?}");
        assert!(err.to_string().starts_with("conn.log: no #fields header"), "{err}");
    }

    #[test]
    fn empty_and_blank_files_are_errors_and_unknown_content_is_named() {
        for text in ["", "\n\n  \r\n"] {
            let err = read(text).unwrap_err();
            assert!(matches!(err, IngestError::Empty { .. }), "{err:?}");
        }
        let err = read("ts,orig\n1,2\n").unwrap_err();
        assert!(matches!(err, IngestError::UnknownFormat { .. }), "{err:?}");
        assert!(err.to_string().contains("\"ts,orig\""), "{err}");
    }

    #[test]
    fn a_header_only_file_has_no_flows_and_no_span() {
        let (summary, flows) = read(HEADER).unwrap();
        assert_eq!((summary.flows, summary.first_ts, flows.len()), (0, None, 0));
    }

    #[test]
    fn a_restated_header_remaps_the_columns() {
        let text = format!(
            "{HEADER}{LINE}\n#fields\tid.resp_p\tid.resp_h\tid.orig_p\tid.orig_h\tproto\tts\n\
             22\t10.0.0.9\t5000\t10.0.0.8\ttcp\t9.5\n"
        );
        let (summary, flows) = read(&text).unwrap();
        assert_eq!(summary.flows, 2);
        assert_eq!((flows[1].resp_p, flows[1].ts), (22, 9.5));
    }

    #[test]
    fn an_overlong_line_is_skipped_without_keeping_it() {
        let long = "x".repeat(MAX_LINE + 10);
        let text = format!("{HEADER}{long}\n{LINE}\n");
        let (summary, flows) = read(&text).unwrap();
        assert_eq!((summary.skipped, flows.len()), (1, 1));
        assert!(summary.problems[0].message.contains("longer than"));
        assert_eq!(summary.problems[0].line, 8);
    }

    #[test]
    fn json_lines_read_flat_and_nested_keys_numbers_and_iso_times() {
        let text = concat!(
            r#"{"ts":1545403816.962094,"uid":"C1","id.orig_h":"192.168.1.195","id.orig_p":41040,"#,
            r#""id.resp_h":"185.244.25.235","id.resp_p":80,"proto":"tcp","service":"http","#,
            r#""duration":3.5,"orig_bytes":10,"resp_bytes":20,"conn_state":"SF","#,
            r#""orig_pkts":1,"resp_pkts":2,"tunnel_parents":[],"local_orig":true}"#,
            "\n\n",
            r#"{"ts":"2018-12-21T14:50:16.5Z","id":{"orig_h":"fe80::1","orig_p":5353,"#,
            r#""resp_h":"ff02::fb","resp_p":5353},"proto":"udp","service":null}"#,
            "\n",
            r#"{"ts":1.0,"id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"10.0.0.2","#,
            r#""id.resp_p":"abc","proto":"tcp"}"#,
            "\n",
            r#"{"ts":1.0,"id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"10.0.0.2","#,
            r#""proto":"tcp"}"#,
            "\n",
            "{\"ts\": 1.0, oops}\n",
        );
        let (summary, flows) = read(text).unwrap();
        assert_eq!((summary.flows, summary.skipped), (2, 3));
        let first = flows[0];
        assert_eq!(first.ts, 1545403816.962094);
        assert_eq!((first.resp_p, first.service), (80, Service::Http));
        assert_eq!((first.duration, first.orig_bytes, first.resp_pkts), (3.5, 10, 2));
        assert_eq!(first.conn_state, ConnState::SF);
        let second = flows[1];
        assert_eq!(second.ts, 1545403816.5);
        assert_eq!(second.orig_h, "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (second.resp_p, second.proto, second.service),
            (5353, Proto::Udp, Service::Unknown)
        );
        let messages = messages(&summary);
        assert_eq!(messages[0], "conn.log:4: id.resp_p \"abc\" is not a port");
        assert_eq!(messages[1], "conn.log:5: id.resp_p is missing");
        assert!(messages[2].starts_with("conn.log:6: invalid JSON at column "), "{messages:?}");
    }

    #[test]
    fn gzip_is_detected_by_content_and_reads_like_plain() {
        let text = format!("{HEADER}{LINE}\n{LINE}\n");
        let plain = read(&text).unwrap();
        let compressed = read_bytes(&gzip(text.as_bytes())).unwrap();
        assert_eq!(plain, compressed);

        // Two members, as `cat a.gz b.gz` makes: both are read.
        let mut two = gzip(text.as_bytes());
        two.extend(gzip(format!("{LINE}\n").as_bytes()));
        assert_eq!(read_bytes(&two).unwrap().0.flows, 3);
    }

    #[test]
    fn truncated_gzip_is_an_error_after_delivering_the_complete_lines() {
        let text = format!("{HEADER}{}", format!("{LINE}\n").repeat(20_000));
        let compressed = gzip(text.as_bytes());
        let cut = &compressed[..compressed.len() / 2];
        let mut delivered = 0u64;
        let result = read_flows_from("conn.log.gz", Cursor::new(cut), &mut |_| delivered += 1);
        match result {
            Err(IngestError::TruncatedGzip { path, flows }) => {
                assert_eq!(path, PathBuf::from("conn.log.gz"));
                assert_eq!(flows, delivered);
                assert!(delivered > 1000 && delivered < 20_000, "{delivered}");
            }
            other => panic!("expected TruncatedGzip, got {other:?}"),
        }
        // Cut inside the 8-byte trailer: every line is there, the end is not.
        let cut = &compressed[..compressed.len() - 3];
        let err = read_bytes(cut).unwrap_err();
        assert!(matches!(err, IngestError::TruncatedGzip { flows: 20_000, .. }), "{err:?}");
    }

    #[test]
    fn fast_float_parse_gives_the_same_bits_as_std() {
        let samples = [
            "0",
            "0.0",
            "1",
            "1545403816.962094",
            "1540469197.400159",
            "3.139211",
            "0.000001",
            "70334.105742",
            "123456789012345678",
            "9007199254740993",
            "1.5e3",
            "-2.25",
            ".5",
            "5.",
            "12345678901234567890.5",
        ];
        for text in samples {
            assert_eq!(parse_f64(text.as_bytes()), text.parse().ok(), "{text}");
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let text = format!("{}.{:06}", 1_500_000_000 + x % 100_000_000, (x >> 32) % 1_000_000);
            assert_eq!(parse_f64(text.as_bytes()), text.parse().ok(), "{text}");
        }
        for bad in ["", ".", "1.2.3", "abc", "inf", "NaN", "1 "] {
            assert_eq!(parse_f64(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn ipv4_fast_path_agrees_with_std() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "192.168.1.195",
            "10.0.0.1",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..2.3",
            "1.2.3.",
            ".1.2.3",
            "1.2.3.4 ",
            "::1",
            "",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            assert_eq!(parse_ip(text.as_bytes()), text.parse().ok(), "{text}");
        }
    }

    #[test]
    fn integers_refuse_signs_spaces_and_overflow() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b"18446744073709551616"[..], b"-1", b"+1", b" 1", b"", b"1x"] {
            assert_eq!(parse_u64(bad), None);
        }
        assert_eq!(parse_port(b"65535"), Some(65535));
        assert_eq!(parse_port(b"65536"), None);
    }

    /// Timing for the author, not a check: `cargo test --release --lib parse_rate --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn parse_rate() {
        let line = "1545403816.962094\tCrDn63WjJEmrWGjqf\t192.168.100.195\t41040\t\
            185.244.125.235\t443\ttcp\tssl\t13.139211\t12345\t678901\tSF\t-\t-\t0\t\
            ShADadFf\t30\t14180\t28\t680000\t-   Malicious   C&C-HeartBeat\n";
        let header = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/iot23/CTU-IoT-Malware-Capture-34-1/conn.log.labeled"
        ))
        .unwrap();
        let header: String = header.lines().take(8).map(|l| format!("{l}\n")).collect();
        let n = 2_000_000;
        let text = format!("{header}{}", line.repeat(n));
        let mut ports = 0u64;
        let started = std::time::Instant::now();
        let summary = read_flows_from("x", Cursor::new(text.as_bytes()), &mut |f| {
            ports += u64::from(f.resp_p)
        })
        .unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(summary.flows, n as u64);
        println!("{} bytes/line, {:.2} M lines/s ({ports})", line.len(), n as f64 / secs / 1e6);
    }
}
