//! Go duration strings (`"10s"`, `"1m30s"`, `"2h0m0s"`, `"100ms"`), as `metav1.Duration` writes them.
//!
//! Bosun keeps durations as [`std::time::Duration`]: negative durations, which Go accepts,
//! are rejected at parse time because no kubelet setting bosun supports means anything by them.

use std::fmt::Write as _;
use std::time::Duration;

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDurationError {
    /// The string that did not parse.
    pub input: String,
    /// What is wrong with it, when more can be said than "invalid".
    pub reason: Option<&'static str>,
}

impl std::fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid duration {:?}", self.input)?;
        if let Some(reason) = self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseDurationError {}

/// Nanoseconds in one unit of each suffix Go's `time.ParseDuration` accepts.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration string (`time.ParseDuration` grammar); negative durations are an error.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |reason| ParseDurationError {
        input: input.to_string(),
        reason,
    };
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err(None));
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err(None));
        }
        let unit_len = rest
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let (unit, rest) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(err(Some("missing unit")));
        }
        let per_unit = unit_nanos(unit).ok_or_else(|| err(Some("unknown unit")))?;
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err(Some("overflow")))?
        };
        let mut nanos = int
            .checked_mul(per_unit)
            .ok_or_else(|| err(Some("overflow")))?;
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut scale = per_unit;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * scale;
        }
        total = total
            .checked_add(nanos)
            .ok_or_else(|| err(Some("overflow")))?;
        s = rest;
    }
    // Go durations are int64 nanoseconds.
    if total > i64::MAX as u128 {
        return Err(err(Some("overflow")));
    }
    if negative && total != 0 {
        return Err(err(Some("must not be negative")));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats a duration as Go's `Duration.String` does: `"0s"`, `"100ms"`, `"1m30s"`, `"2h0m0s"`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    if nanos < 1_000_000_000 {
        let (unit, per) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("\u{b5}s", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        push_decimal(&mut out, nanos / per, nanos % per, per);
        out.push_str(unit);
        return out;
    }
    let secs = d.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    push_decimal(
        &mut out,
        u128::from(seconds),
        u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    out.push('s');
    out
}

/// Writes `whole.frac` with `frac` out of `per`, trailing zeros trimmed.
fn push_decimal(out: &mut String, whole: u128, frac: u128, per: u128) {
    let _ = write!(out, "{whole}");
    if frac > 0 {
        let width = per.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// `#[serde(with = "duration::serde")]` for a [`Duration`] written as a Go duration string.
pub mod serde {
    use super::{format, parse};
    use serde::de::{Deserializer, Error, Visitor};
    use serde::ser::Serializer;
    use std::time::Duration;

    /// Serializes as a Go duration string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Deserializes from a Go duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct GoDuration;
        impl Visitor<'_> for GoDuration {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"10s\" or \"1m30s\"")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(GoDuration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("10s", s(10)),
            ("+10s", s(10)),
            ("1m30s", s(90)),
            ("2h0m0s", s(7200)),
            ("100ms", ms(100)),
            ("1.5s", ms(1500)),
            (".5s", ms(500)),
            ("1.s", s(1)),
            ("1h1m1s1ms1us1ns", Duration::new(3661, 1_001_001)),
            ("3\u{b5}s", Duration::from_micros(3)),
            ("3\u{3bc}s", Duration::from_micros(3)),
            ("1.0000000019s", Duration::new(1, 1)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(*want), "{input}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for input in [
            "", "abc", "10", "s", "1x", "-1s", ".s", "1.2.3s", "10 s", "1e3s",
        ] {
            let err = parse(input).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid duration {input:?}")),
                "{input}: {err}"
            );
        }
        assert_eq!(
            parse("-1s").unwrap_err().to_string(),
            "invalid duration \"-1s\": must not be negative"
        );
        assert!(parse("9999999999h").is_err());
    }

    #[test]
    fn formats_as_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(10), "10ns"),
            (Duration::from_nanos(1500), "1.5\u{b5}s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::new(3661, 500_000_000), "1h1m1.5s"),
        ];
        for (d, want) in cases {
            assert_eq!(format(*d), *want);
            assert_eq!(parse(want), Ok(*d), "round trip {want}");
        }
    }
}
