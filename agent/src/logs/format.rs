//! One record of the CRI log format: `<RFC3339Nano time> <stdout|stderr> <tags> <content>`,
//! where the first tag is `P` for a partial line (the content continues in the next record) and
//! `F` for the end of a line.

use k8s_openapi::jiff::Timestamp;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

/// One parsed record; borrows the line it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the runtime wrote it.
    pub time: Timestamp,
    /// The timestamp as written (for the `timestamps` prefix).
    pub time_text: &'a [u8],
    /// The stream.
    pub stream: Stream,
    /// The content: with its newline for a full line, without one for a partial record.
    pub content: &'a [u8],
}

/// Why a line is not a CRI log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A field is missing.
    #[error("{0} is not found")]
    Missing(&'static str),
    /// The timestamp is not RFC 3339.
    #[error("unexpected timestamp format")]
    Timestamp,
    /// The stream is neither stdout nor stderr.
    #[error("unexpected stream type")]
    Stream,
}

fn split_field<'a>(line: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    let i = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(ParseError::Missing(what))?;
    Ok((&line[..i], &line[i + 1..]))
}

/// Parses one line as read from the file (with its trailing newline, if it had one).
pub fn parse(line: &[u8]) -> Result<Record<'_>, ParseError> {
    let (time_text, rest) = split_field(line, "timestamp")?;
    let time = std::str::from_utf8(time_text)
        .ok()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .ok_or(ParseError::Timestamp)?;
    let (stream, rest) = split_field(rest, "stream type")?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(ParseError::Stream),
    };
    let (tags, mut content) = split_field(rest, "log tag")?;
    let partial = tags.split(|&b| b == b':').next() == Some(b"P");
    if partial && content.last() == Some(&b'\n') {
        content = &content[..content.len() - 1];
    }
    Ok(Record {
        time,
        time_text,
        stream,
        content,
    })
}

/// The timestamp as the kubelet prints it with `timestamps=true` (Go's RFC3339Nano with exactly
/// nine fractional digits, `Z` for UTC, the written offset otherwise), from the text as written.
pub fn fixed_nanos(time_text: &[u8]) -> Vec<u8> {
    // `YYYY-MM-DDTHH:MM:SS` is 19 bytes; a fraction and the zone follow.
    let mut out = Vec::with_capacity(35);
    let secs = time_text.get(..19).unwrap_or(time_text);
    out.extend_from_slice(secs);
    let mut rest = time_text.get(19..).unwrap_or_default();
    let mut digits = 0;
    out.push(b'.');
    if rest.first() == Some(&b'.') {
        rest = &rest[1..];
        while let Some(&d) = rest.first().filter(|d| d.is_ascii_digit()) {
            if digits < 9 {
                out.push(d);
                digits += 1;
            }
            rest = &rest[1..];
        }
    }
    out.extend(std::iter::repeat_n(b'0', 9 - digits));
    match rest {
        b"z" | b"+00:00" | b"-00:00" => out.push(b'Z'),
        zone => out.extend_from_slice(zone),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_partial_records() {
        let r = parse(b"2026-12-02T16:42:29.123456789Z stdout F hello\n").unwrap();
        assert_eq!(r.stream, Stream::Stdout);
        assert_eq!(r.content, b"hello\n");
        assert_eq!(r.time_text, b"2026-12-02T16:42:29.123456789Z");
        assert_eq!(r.time.as_nanosecond() % 1_000_000_000, 123_456_789);
        let p = parse(b"2026-12-02T16:42:29Z stderr P part\n").unwrap();
        assert_eq!((p.stream, p.content), (Stream::Stderr, &b"part"[..]));
        // Tags may carry more after a colon; an empty content is a line of its own.
        let t = parse(b"2026-12-02T16:42:29+01:00 stdout F:x \n").unwrap();
        assert_eq!(t.content, b"\n");
    }

    #[test]
    fn rejects_what_is_not_a_record() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"garbage", ParseError::Missing("timestamp")),
            (b"yesterday stdout F x\n", ParseError::Timestamp),
            (b"2026-12-02T16:42:29Z", ParseError::Missing("timestamp")),
            (b"2026-12-02T16:42:29Z stdin F x\n", ParseError::Stream),
            (
                b"2026-12-02T16:42:29Z stdout",
                ParseError::Missing("stream type"),
            ),
            (
                b"2026-12-02T16:42:29Z stdout F",
                ParseError::Missing("log tag"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse(line).unwrap_err(),
                *want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn timestamps_print_with_nine_digits() {
        let cases: &[(&str, &str)] = &[
            (
                "2026-12-02T16:42:29.123456789Z",
                "2026-12-02T16:42:29.123456789Z",
            ),
            ("2026-12-02T16:42:29.1Z", "2026-12-02T16:42:29.100000000Z"),
            ("2026-12-02T16:42:29Z", "2026-12-02T16:42:29.000000000Z"),
            (
                "2026-12-02T16:42:29.5+01:00",
                "2026-12-02T16:42:29.500000000+01:00",
            ),
            (
                "2026-12-02T16:42:29.5+00:00",
                "2026-12-02T16:42:29.500000000Z",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                String::from_utf8(fixed_nanos(input.as_bytes())).unwrap(),
                *want
            );
        }
    }
}
