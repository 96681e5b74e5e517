//! Kubernetes quantities (`100m`, `0.5`, `64Mi`, `1G`, `1e3`) parsed to exact integers.

/// A parsed quantity, kept in thousandths (milli-units) so CPU and memory use one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    milli: i128,
}

/// A quantity string that is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

impl Quantity {
    /// The value in milli-units (CPU millicores), rounded up as the API server does.
    pub fn milli_value(&self) -> i64 {
        self.milli.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// The value in whole units (bytes for memory), rounded up.
    pub fn value(&self) -> i64 {
        let v = if self.milli >= 0 {
            (self.milli + 999) / 1000
        } else {
            self.milli / 1000
        };
        v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

/// Parses a quantity: a decimal number (optionally signed, with a fraction or exponent) followed
/// by an optional suffix: binary `Ki Mi Gi Ti Pi Ei`, decimal `n u m k M G T P E`.
pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    let err = || QuantityError(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    // Exponent form: 1e3, 1E-3 (but not the suffix E alone).
    let (num, exp10): (&str, i32) =
        if let Some(rest) = suffix.strip_prefix(['e', 'E']).filter(|r| !r.is_empty()) {
            (num, rest.parse::<i32>().map_err(|_| err())?)
        } else {
            (num, 0)
        };
    let suffix = if exp10 != 0 || suffix.starts_with(['e', 'E']) && suffix.len() > 1 {
        ""
    } else {
        suffix
    };
    let (neg, digits) = match num.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err());
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
        || frac_part.len() > 18
    {
        return Err(err());
    }
    // value = mantissa * 10^(exp10 - frac_len) * multiplier; kept as milli.
    let mantissa: i128 = format!("{int_part}{frac_part}")
        .parse::<i128>()
        .map_err(|_| err())?;
    let (mul, dec_exp): (i128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        _ => return Err(err()),
    };
    // milli = mantissa * mul * 10^(dec_exp + exp10 - frac_len + 3), rounded up.
    let e = i64::from(dec_exp) + i64::from(exp10) - frac_part.len() as i64 + 3;
    let scaled = mantissa.checked_mul(mul).ok_or_else(err)?;
    let milli = if e >= 0 {
        let p = u32::try_from(e).ok().and_then(|e| 10i128.checked_pow(e));
        scaled.checked_mul(p.ok_or_else(err)?).ok_or_else(err)?
    } else {
        // Rounded up to a whole milli; a divisor beyond i128 leaves at most 1.
        match u32::try_from(-e).ok().and_then(|e| 10i128.checked_pow(e)) {
            Some(d) => scaled / d + i128::from(scaled % d != 0),
            None => i128::from(scaled != 0),
        }
    };
    Ok(Quantity {
        milli: if neg { -milli } else { milli },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory_forms() {
        let cases: &[(&str, i64, i64)] = &[
            // input, milli_value, value
            ("100m", 100, 1),
            ("1", 1000, 1),
            ("0.5", 500, 1),
            ("2.25", 2250, 3),
            ("64Mi", 64 * 1048576 * 1000, 64 * 1048576),
            ("1Gi", 1073741824000, 1073741824),
            ("1G", 1_000_000_000_000, 1_000_000_000),
            ("128974848", 128974848000, 128974848),
            ("129e6", 129_000_000_000, 129_000_000),
            ("123Ki", 125952000, 125952),
            ("1.5Gi", 1610612736000, 1610612736),
            ("0", 0, 0),
            ("1u", 1, 1),
            ("500n", 1, 1),
        ];
        for (input, milli, value) in cases {
            let q = parse_quantity(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.milli_value(), *milli, "{input} milli");
            assert_eq!(q.value(), *value, "{input} value");
        }
    }

    #[test]
    fn rejects_garbage() {
        for input in ["", "abc", "1Qi", "1.2.3", "--1", "m", "1 Mi"] {
            assert!(parse_quantity(input).is_err(), "{input} should not parse");
        }
    }

    /// Found while fuzzing: exponents at the edge of i32 overflowed (a panic in debug builds, a
    /// wrapped value in release), and a mantissa beyond i128 was read as 0.
    #[test]
    fn extreme_exponents_and_mantissas_are_errors_not_panics_or_zero() {
        for input in [
            "1e2147483647",
            "1e2147483645",
            "1.5e-2147483648n",
            "999999999999999999999999999999999999999999",
        ] {
            assert!(parse_quantity(input).is_err(), "{input} should not parse");
        }
        // Tiny positive amounts round up to one milli, as 500n does.
        for input in ["1e-2147483648", "1.5e-2147483648", "1e-40"] {
            assert_eq!(
                parse_quantity(input).map(|q| q.milli_value()),
                Ok(1),
                "{input}"
            );
        }
        assert_eq!(
            parse_quantity("0e-2147483648").map(|q| q.milli_value()),
            Ok(0)
        );
    }
}
