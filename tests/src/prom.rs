//! A strict parser of the Prometheus text exposition format (0.0.4), as Prometheus' own parser
//! checks it: HELP/TYPE before a family's samples, one TYPE per family, valid metric and label
//! names, escaped label values, float values, optional integer timestamps, every sample named after
//! its family (histogram and summary suffixes), no duplicate series.

use std::collections::{BTreeMap, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` suffixes for histograms).
    pub name: String,
    /// Labels by name.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
    /// Timestamp in milliseconds, if given.
    pub timestamp_ms: Option<i64>,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name -> TYPE.
    pub types: BTreeMap<String, String>,
    /// Family name -> HELP text.
    pub help: BTreeMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Parses `{a="x",b="y"}` at the start of `s`; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = rest[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].trim_start();
        rest = rest.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or }".into());
        }
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return Some(base);
        }
    }
    None
}

/// Parses `text`, failing on the first violation with its line number.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut seen = HashSet::new();
    let mut done_families = HashSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim_start();
            let mut parts = c.splitn(3, ' ');
            let kw = parts.next().unwrap_or_default();
            if kw != "HELP" && kw != "TYPE" {
                continue;
            }
            let name = parts.next().ok_or_else(|| err("no metric name".into()))?;
            if !valid_metric_name(name) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            let arg = parts.next().unwrap_or_default();
            if current.as_deref() != Some(name) {
                if done_families.contains(name) {
                    return Err(err(format!("family {name} declared twice")));
                }
                if let Some(c) = current.take() {
                    done_families.insert(c);
                }
                current = Some(name.to_string());
            }
            if kw == "TYPE" {
                if !matches!(
                    arg,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    return Err(err(format!("bad type {arg:?}")));
                }
                if e.types.insert(name.into(), arg.into()).is_some() {
                    return Err(err(format!("second TYPE for {name}")));
                }
                if e.samples
                    .iter()
                    .any(|s| family_of(&s.name, &e.types) == Some(name))
                {
                    return Err(err("TYPE after samples".into()));
                }
            } else if e.help.insert(name.into(), arg.into()).is_some() {
                return Err(err(format!("second HELP for {name}")));
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value =
            parse_value(fields.next().ok_or_else(|| err("no value".into()))?).map_err(err)?;
        let timestamp_ms = match fields.next() {
            None => None,
            Some(t) => Some(t.parse().map_err(|_| err(format!("bad timestamp {t:?}")))?),
        };
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = family_of(name, &e.types).unwrap_or(name).to_string();
        if current.as_deref() != Some(family.as_str()) {
            if done_families.contains(&family) {
                return Err(err(format!("samples of {family} not together")));
            }
            if let Some(c) = current.take() {
                done_families.insert(c);
            }
            current = Some(family.clone());
        }
        if e.types.get(&family).map(String::as_str) == Some("histogram")
            && name.ends_with("_bucket")
            && !labels.contains_key("le")
        {
            return Err(err("histogram bucket without le".into()));
        }
        let key = format!("{name}{labels:?}");
        if !seen.insert(key) {
            return Err(err("duplicate series".into()));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
            timestamp_ms,
        });
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_rejects_invalid() {
        let ok = "# HELP a_total Help.\n# TYPE a_total counter\na_total{x=\"1\\\"q\"} 3 1700000000000\n\
                  # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
        let e = parse(ok).unwrap();
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.samples[0].labels["x"], "1\"q");
        assert_eq!(e.samples[0].timestamp_ms, Some(1_700_000_000_000));
        for bad in [
            "a{x=1} 1\n",
            "a 1\na 2\n",
            "1a 1\n",
            "a{x=\"1\"} x\n",
            "# TYPE a counter\n# TYPE a gauge\n",
            "# TYPE h histogram\nh_bucket 1\n",
            "a 1\nb 1\na{x=\"y\"} 1\n",
            "a 1 1.5\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
