//! OTLP trace export requests (`ExportTraceServiceRequest`) written as protobuf wire bytes.
//!
//! Data flow: the pyo3 wrapper (`py::otlp`) walks a batch of finished spans grouped by
//! resource and scope and drives a [`Writer`]: it opens each length-delimited message, writes
//! its scalar fields, and closes it, which puts the message's length in front of it. Field
//! numbers are opentelemetry-proto's (`trace.proto`, `common.proto`, `resource.proto`).
//! Nothing here knows Python: an attribute's value arrives as one [`Value`] call per scalar
//! (arrays open and close around their items), so the encoder allocates nothing per field.

/// Field numbers of the messages written here.
pub mod field {
    /// `ExportTraceServiceRequest.resource_spans`.
    pub const RESOURCE_SPANS: u32 = 1;
    /// `ResourceSpans.resource`.
    pub const RESOURCE: u32 = 1;
    /// `ResourceSpans.scope_spans`.
    pub const SCOPE_SPANS: u32 = 2;
    /// `ResourceSpans.schema_url` and `ScopeSpans.schema_url`.
    pub const SCHEMA_URL: u32 = 3;
    /// `Resource.attributes`.
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    /// `ScopeSpans.scope`.
    pub const SCOPE: u32 = 1;
    /// `ScopeSpans.spans`.
    pub const SPANS: u32 = 2;
    /// `InstrumentationScope.name`, `.version`, `.attributes`.
    pub const SCOPE_NAME: u32 = 1;
    /// `InstrumentationScope.version`.
    pub const SCOPE_VERSION: u32 = 2;
    /// `InstrumentationScope.attributes`.
    pub const SCOPE_ATTRIBUTES: u32 = 3;
    /// `Span.attributes`.
    pub const SPAN_ATTRIBUTES: u32 = 9;
}

/// OTLP span flags: bit 8 says whether the parent's remoteness is known, bit 9 that it is
/// remote (W3C trace flags stay out, as the SDK's encoder leaves them).
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Where an open length-delimited message's payload starts (see [`Writer::open`]).
#[derive(Debug, Clone, Copy)]
#[must_use = "an opened message must be closed"]
pub struct Open(usize);

/// What a span carries besides its attributes, in the SDK's terms (kind counted from 0:
/// INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER; status code UNSET 0, OK 1, ERROR 2).
#[derive(Debug, Clone)]
pub struct SpanHead<'a> {
    /// The 128-bit trace id.
    pub trace_id: u128,
    /// The span's own id.
    pub span_id: u64,
    /// The W3C `tracestate` header value, when the span has one.
    pub trace_state: Option<&'a str>,
    /// The parent span's id and whether that parent is remote.
    pub parent: Option<(u64, bool)>,
    /// The span's name.
    pub name: &'a str,
    /// The SDK's kind value (0-based).
    pub kind: u32,
    /// Start and end, nanoseconds since the epoch.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
}

/// A protobuf writer over one growing buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.buf.push((n as u8 & 0x7F) | 0x80);
            n >>= 7;
        }
        self.buf.push(n as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from(field << 3 | wire_type));
    }

    /// Open a length-delimited field (a sub-message); [`Writer::close`] ends it.
    pub fn open(&mut self, field: u32) -> Open {
        self.tag(field, 2);
        self.buf.push(0); // the length's place: one byte, widened on close when needed
        Open(self.buf.len())
    }

    /// Close the message `open` began: its length, as the shortest varint, before it.
    pub fn close(&mut self, open: Open) {
        let start = open.0;
        let len = self.buf.len() - start;
        if len < 0x80 {
            self.buf[start - 1] = len as u8;
            return;
        }
        let mut head = [0u8; 10];
        let mut n = len as u64;
        let mut used = 0;
        while n >= 0x80 {
            head[used] = (n as u8 & 0x7F) | 0x80;
            n >>= 7;
            used += 1;
        }
        head[used] = n as u8;
        used += 1;
        // Widen the one reserved byte to `used` and write the length there.
        self.buf
            .splice(start - 1..start, head[..used].iter().copied());
    }

    /// A length-delimited field of raw bytes (a string's UTF-8, a bytes value).
    pub fn bytes(&mut self, field: u32, data: &[u8]) {
        self.tag(field, 2);
        self.varint(data.len() as u64);
        self.buf.extend_from_slice(data);
    }

    /// A varint field.
    pub fn uint(&mut self, field: u32, n: u64) {
        self.tag(field, 0);
        self.varint(n);
    }

    fn fixed64(&mut self, field: u32, n: u64) {
        self.tag(field, 1);
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    fn fixed32(&mut self, field: u32, n: u32) {
        self.tag(field, 5);
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    /// Open a `KeyValue` (as field `field` of its message) named `key`, and its `AnyValue`:
    /// write one value (or an array) next, then [`Writer::close_key_value`].
    pub fn open_key_value(&mut self, field: u32, key: &str) -> (Open, Open) {
        let kv = self.open(field);
        self.bytes(1, key.as_bytes());
        (kv, self.open(2))
    }

    /// Close what [`Writer::open_key_value`] opened.
    pub fn close_key_value(&mut self, (kv, value): (Open, Open)) {
        self.close(value);
        self.close(kv);
    }

    /// Write one scalar into the `AnyValue` open now.
    pub fn value(&mut self, value: Value<'_>) {
        match value {
            Value::Str(s) => self.bytes(1, s.as_bytes()),
            Value::Bool(b) => self.uint(2, u64::from(b)),
            Value::Int(n) => self.uint(3, n), // int64 as two's complement
            Value::Double(x) => self.fixed64(4, x.to_bits()),
            Value::Bytes(b) => self.bytes(7, b),
        }
    }

    /// Open an `ArrayValue` in the `AnyValue` open now; each item is [`Writer::open_item`],
    /// at most one [`Writer::value`] (none: an empty value), [`Writer::close`].
    pub fn open_array(&mut self) -> Open {
        self.open(5)
    }

    /// Open one item (an `AnyValue`) of the array open now.
    pub fn open_item(&mut self) -> Open {
        self.open(1)
    }

    /// Fields 1-8 of a `Span` (open it first with `open(field::SPANS)`).
    pub fn span_head(&mut self, head: &SpanHead<'_>) {
        self.bytes(1, &head.trace_id.to_be_bytes());
        self.bytes(2, &head.span_id.to_be_bytes());
        if let Some(state) = head.trace_state.filter(|s| !s.is_empty()) {
            self.bytes(3, state.as_bytes());
        }
        if let Some((parent, _)) = head.parent {
            self.bytes(4, &parent.to_be_bytes());
        }
        self.bytes(5, head.name.as_bytes());
        self.uint(6, u64::from(head.kind) + 1); // the proto's kinds count UNSPECIFIED as 0
        self.fixed64(7, head.start_ns);
        self.fixed64(8, head.end_ns);
    }

    /// The fields of a `Span` after its attributes: the counts of dropped attributes, events
    /// and links (written when not 0), the status (always present, as the SDK's encoder
    /// writes it) and the flags.
    pub fn span_tail(
        &mut self,
        head: &SpanHead<'_>,
        dropped: (u32, u32, u32),
        status: (Option<&str>, u32),
    ) {
        for (number, count) in [(10, dropped.0), (12, dropped.1), (14, dropped.2)] {
            if count > 0 {
                self.uint(number, u64::from(count));
            }
        }
        let open = self.open(15);
        if let Some(message) = status.0.filter(|m| !m.is_empty()) {
            self.bytes(2, message.as_bytes());
        }
        if status.1 != 0 {
            self.uint(3, u64::from(status.1));
        }
        self.close(open);
        let mut flags = HAS_IS_REMOTE;
        if let Some((_, true)) = head.parent {
            flags |= IS_REMOTE;
        }
        self.fixed32(16, flags);
    }
}

/// One scalar attribute value.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// A string.
    Str(&'a str),
    /// A boolean.
    Bool(bool),
    /// An int64, as its two's-complement bits.
    Int(u64),
    /// A double.
    Double(f64),
    /// Raw bytes.
    Bytes(&'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_varint(buf: &[u8], at: &mut usize) -> u64 {
        let (mut n, mut shift) = (0u64, 0);
        loop {
            let b = buf[*at];
            *at += 1;
            n |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return n;
            }
            shift += 7;
        }
    }

    #[test]
    fn short_and_long_messages_carry_their_exact_length() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut w = Writer::new();
            let open = w.open(2);
            w.bytes(1, &vec![b'x'; len]);
            w.close(open);
            let buf = w.finish();
            assert_eq!(buf[0], 2 << 3 | 2);
            let mut at = 1;
            let outer = read_varint(&buf, &mut at) as usize;
            assert_eq!(
                outer,
                buf.len() - at,
                "outer length of a {len}-byte payload"
            );
            assert_eq!(buf[at], 1 << 3 | 2);
            at += 1;
            assert_eq!(read_varint(&buf, &mut at) as usize, len);
            assert_eq!(buf.len() - at, len);
        }
    }

    #[test]
    fn a_span_is_written_field_by_field() {
        let head = SpanHead {
            trace_id: 0x0102,
            span_id: 0x0304,
            trace_state: None,
            parent: Some((0x05, true)),
            name: "chat m",
            kind: 1,
            start_ns: 7,
            end_ns: 9,
        };
        let mut w = Writer::new();
        w.span_head(&head);
        let kv = w.open_key_value(field::SPAN_ATTRIBUTES, "k");
        w.value(Value::Int((-1i64) as u64));
        w.close_key_value(kv);
        w.span_tail(&head, (0, 0, 0), (Some("bad"), 2));
        let buf = w.finish();
        let mut want = vec![0x0a, 16];
        want.extend_from_slice(&0x0102u128.to_be_bytes());
        want.extend_from_slice(&[0x12, 8]);
        want.extend_from_slice(&0x0304u64.to_be_bytes());
        want.extend_from_slice(&[0x22, 8]);
        want.extend_from_slice(&5u64.to_be_bytes());
        want.extend_from_slice(&[0x2a, 6]);
        want.extend_from_slice(b"chat m");
        want.extend_from_slice(&[0x30, 2, 0x39]);
        want.extend_from_slice(&7u64.to_le_bytes());
        want.push(0x41);
        want.extend_from_slice(&9u64.to_le_bytes());
        // KeyValue {key "k", value {int_value -1 (ten varint bytes)}}
        want.extend_from_slice(&[0x4a, 16, 0x0a, 1, b'k', 0x12, 11, 0x18]);
        want.extend_from_slice(&[0xff; 9]);
        want.push(0x01);
        want.extend_from_slice(&[0x7a, 7, 0x12, 3, b'b', b'a', b'd', 0x18, 2]);
        want.extend_from_slice(&[0x85, 0x01]);
        want.extend_from_slice(&0x300u32.to_le_bytes());
        assert_eq!(buf, want);
    }
}
