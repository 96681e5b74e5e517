//! An exact amount with the suffix family it is written in, and its canonical string as
//! resource.Quantity.String() in Go (`8141236Ki`, `1500`, `100m`).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

/// How an amount is written: the suffix family of Kubernetes' canonical quantity form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `k M G ...` and `m` (cpu, pods).
    DecimalSi,
    /// `Ki Mi Gi ...` (memory, storage, huge pages).
    BinarySi,
}

/// An exact amount in thousandths, with the format it is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    /// The value x 1000.
    pub milli: i128,
    /// Its written form.
    pub format: Format,
}

impl Amount {
    /// `value` whole units.
    pub fn units(value: i128, format: Format) -> Amount {
        Amount {
            milli: value * 1000,
            format,
        }
    }

    /// The canonical string, as resource.Quantity.String() in Go.
    pub fn canonical(&self) -> String {
        let m = self.milli;
        if m == 0 {
            return "0".into();
        }
        let binary = self.format == Format::BinarySi && m % 1000 == 0 && m.abs() >= 1024 * 1000;
        if binary {
            let (mut mant, mut exp) = (m / 1000, 0usize);
            while mant % 1024 == 0 && exp < 6 {
                mant /= 1024;
                exp += 1;
            }
            return format!("{mant}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp]);
        }
        // Decimal: mantissa x 10^exp with exp a multiple of 3, starting from milli (10^-3).
        let (mut mant, mut exp) = (m, -3i32);
        while mant % 10 == 0 && exp < 18 {
            mant /= 10;
            exp += 1;
        }
        let exp3 = exp.div_euclid(3) * 3;
        mant *= 10i128.pow((exp - exp3) as u32);
        let suffix = match exp3 {
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        format!("{mant}{suffix}")
    }

    /// As the API type.
    pub fn to_api(self) -> ApiQuantity {
        ApiQuantity(self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        use Format::*;
        for (milli, format, want) in [
            (0, BinarySi, "0"),
            (2000, DecimalSi, "2"),
            (1900, DecimalSi, "1900m"),
            (100, DecimalSi, "100m"),
            (110_000, DecimalSi, "110"),
            (1_000_000, DecimalSi, "1k"),
            (1_500_000, DecimalSi, "1500"),
            (8_336_625_664_000, BinarySi, "8141236Ki"),
            (2_097_152_000, BinarySi, "2Mi"),
            (1_073_741_824_000, BinarySi, "1Gi"),
            (94_580_335_255_000, BinarySi, "94580335255"),
            (512_000, BinarySi, "512"),
            (1_024_000, BinarySi, "1Ki"),
        ] {
            assert_eq!(
                Amount { milli, format }.canonical(),
                want,
                "{milli} {format:?}"
            );
        }
    }
}
