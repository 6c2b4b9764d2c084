//! Server-sent events framing: an upstream stream's bytes, as they arrive, into its events.
//!
//! Data flow: `routeguard.providers.http.SseStream.events` feeds each chunk read from the
//! upstream to one [`SseParser`] (through the pyo3 wrapper) and passes on the `(event, data)`
//! pairs it completes; the rest of a line, or of an event, waits for the next chunk. The rules
//! are the WHATWG event-stream ones the proxy relies on: lines end with LF (a CR before it,
//! or several, is dropped), a blank line dispatches the event when it has data, a line
//! starting with `:` is a comment, a field's value loses one leading space, `data` lines
//! join with LF, `event` names the event (empty when none; a name that is not UTF-8 stops
//! the framing with [`BadName`], after the events completed before its line) and other fields
//! are ignored. At the end of the body an unended last line counts, and an event with data is
//! dispatched.

/// One event: its `event` field (empty when none) and its data lines joined by LF.
pub type Event = (String, Vec<u8>);

/// An `event` line whose value is not UTF-8: its bytes and where decoding failed. The
/// parser is not to be fed again.
#[derive(Debug)]
pub struct BadName {
    /// The value's bytes.
    pub name: Vec<u8>,
    /// Why they are not UTF-8.
    pub error: std::str::Utf8Error,
}

/// The state between chunks: the unended line, and the event being read.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The unended line so far (an empty one frames as no line at all: a blank line only
    /// dispatches what `has_data` says is there, which the end of the body does too).
    line: Vec<u8>,
    event: String,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events `chunk` completes, appended to `out` (those before a [`BadName`] too).
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), BadName> {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let piece = &rest[..end];
            rest = &rest[end + 1..];
            if self.line.is_empty() {
                self.line_done(piece, out)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(piece);
                self.line_done(&line, out)?;
                line.clear();
                self.line = line; // its capacity is kept for the next unended line
            }
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// The end of the body: its unended last line, then the event it leaves, if any.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), BadName> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
        }
        if self.has_data {
            out.push(self.take_event());
        }
        Ok(())
    }

    fn take_event(&mut self) -> Event {
        self.has_data = false;
        (
            std::mem::take(&mut self.event),
            std::mem::take(&mut self.data),
        )
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), BadName> {
        let mut end = line.len();
        while end > 0 && line[end - 1] == b'\r' {
            end -= 1;
        }
        let line = &line[..end];
        if line.is_empty() {
            if self.has_data {
                out.push(self.take_event());
            } else {
                self.event.clear();
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => match std::str::from_utf8(value) {
                Ok(name) => {
                    self.event.clear();
                    self.event.push_str(name);
                }
                Err(error) => {
                    return Err(BadName {
                        name: value.to_vec(),
                        error,
                    })
                }
            },
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            assert!(p.feed(c, &mut out).is_ok());
        }
        assert!(p.finish(&mut out).is_ok());
        out.into_iter()
            .map(|(e, d)| (e, String::from_utf8(d).unwrap_or_default()))
            .collect()
    }

    fn pair(e: &str, d: &str) -> (String, String) {
        (e.to_string(), d.to_string())
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let body = b"event: a\r\ndata: {\"x\":1}\r\n\r\n: comment\ndata:2\ndata: 3\n\nid: 9\n\n";
        let want = vec![pair("a", "{\"x\":1}"), pair("", "2\n3")];
        assert_eq!(parse(&[body]), want);
        for cut in 0..body.len() {
            assert_eq!(parse(&[&body[..cut], &body[cut..]]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(parse(&bytes), want);
    }

    #[test]
    fn the_end_of_the_body_ends_the_last_event() {
        assert_eq!(parse(&[b"data: tail"]), vec![pair("", "tail")]);
        assert_eq!(parse(&[b"data: a\n"]), vec![pair("", "a")]);
        assert_eq!(parse(&[b"data:\n\n"]), vec![pair("", "")]);
        assert_eq!(parse(&[b"event: x\n\ndata: y\n\n"]), vec![pair("", "y")]);
        assert!(parse(&[b"event: x\n", b""]).is_empty());
    }

    #[test]
    fn a_name_that_is_not_utf8_stops_after_the_events_before_it() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let bad = p.feed(b"data: a\n\nevent: \xff\ndata: b\n\n", &mut out);
        assert_eq!(bad.map_err(|b| b.name), Err(vec![0xff]));
        assert_eq!(out, vec![(String::new(), b"a".to_vec())]);
    }
}
