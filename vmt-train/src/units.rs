//! Parsing of sizes (`4KiB`), bandwidths (`100Mbit`) and durations (`5s`) on the command line.
//!
//! Sizes take binary units (`K`, `KiB` = 1024) and decimal ones (`KB` = 1000); bandwidths are
//! bits per second unless the unit says bytes (`MB/s`); an optional `/s` or `ps` is accepted.

fn split_number(s: &str) -> Result<(f64, &str), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    Ok((value, unit.trim()))
}

/// A size in bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (v, unit) = split_number(s)?;
    let mult: f64 = match unit {
        "" | "B" => 1.0,
        "K" | "KiB" | "k" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TiB" => 1024f64.powi(4),
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let bytes = v * mult;
    if bytes.fract() != 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// A size in bytes that fits in 32 bits and is not 0.
pub fn parse_size_u32(s: &str) -> Result<u32, String> {
    let v = parse_size(s)?;
    if v == 0 {
        return Err(format!("{s:?} is zero"));
    }
    u32::try_from(v).map_err(|_| format!("{s:?} is larger than 4 GiB"))
}

/// A bandwidth in bits per second.
pub fn parse_bandwidth(s: &str) -> Result<f64, String> {
    let (v, unit) = split_number(s)?;
    let unit = unit
        .strip_suffix("/s")
        .or_else(|| unit.strip_suffix("ps"))
        .unwrap_or(unit);
    let bits: f64 = match unit {
        "bit" | "b" => 1.0,
        "kbit" | "Kbit" | "kb" => 1e3,
        "Mbit" | "mbit" | "Mb" => 1e6,
        "Gbit" | "gbit" | "Gb" => 1e9,
        "B" => 8.0,
        "KB" | "kB" => 8e3,
        "MB" => 8e6,
        "GB" => 8e9,
        "KiB" => 8.0 * 1024.0,
        "MiB" => 8.0 * 1048576.0,
        "GiB" => 8.0 * 1073741824.0,
        _ => {
            return Err(format!(
                "unknown bandwidth unit {unit:?} in {s:?} (use e.g. 100Mbit, 1Gbit, 12.5MB/s)"
            ))
        }
    };
    let r = v * bits;
    if !(r > 0.0 && r.is_finite()) {
        return Err(format!("bandwidth {s:?} must be positive"));
    }
    Ok(r)
}

/// A duration in microseconds.
pub fn parse_duration_us(s: &str) -> Result<u64, String> {
    let (v, unit) = split_number(s)?;
    let mult = match unit {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" | "" => 1e6,
        "m" | "min" => 60e6,
        _ => {
            return Err(format!(
                "unknown time unit {unit:?} in {s:?} (use us, ms, s, min)"
            ))
        }
    };
    let us = v * mult;
    if !us.is_finite() || us > u64::MAX as f64 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(us.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size_u32("0").is_err());
        assert_eq!(parse_bandwidth("100Mbit"), Ok(100e6));
        assert_eq!(parse_bandwidth("12.5MB/s"), Ok(100e6));
        assert!(parse_bandwidth("0Mbit").is_err());
        assert_eq!(parse_duration_us("5s"), Ok(5_000_000));
        assert_eq!(parse_duration_us("250ms"), Ok(250_000));
        assert!(parse_duration_us("5 fortnights").is_err());
    }
}
