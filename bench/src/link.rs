//! The link a client's bytes cross: its rate (as bench.sh gives it to tc) and round trip.
//!
//! Two figures of issue 11 are measured against the link: a task's floor, bytes read ÷ rate
//! plus the local image's time, and the unit of miss latency, one block's transfer plus a
//! round trip (the least a miss can cost when the block is requested on arrival).

use anyhow::{bail, Context, Result};

/// The unit a missed read waits for at block granularity: BitTorrent's request size.
pub const BLOCK_BYTES: u64 = 16 * 1024;

/// Round trip between a client's and the seeder's namespaces when bench.sh has not measured
/// one: the median TCP connect time (curl's `time_connect`, 15 tries) across the bench's
/// topology (veth pairs through a bridge, tbf at 100mbit both ways, idle) on the project's
/// 2-core machine was 0.16 ms. At 100 Mbit/s it is a tenth of a block's 1.31 ms.
pub const DEFAULT_RTT_S: f64 = 0.000_16;

/// A link, as the summary uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// The rate of the path from seeder to client: the lesser of the client's link and the
    /// seeder's uplink, bits per second.
    pub bits_per_s: f64,
    /// Round trip, seconds.
    pub rtt_s: f64,
    /// Whether `rtt_s` was measured in this run (else it is [`DEFAULT_RTT_S`]).
    pub rtt_measured: bool,
}

impl Link {
    /// Seconds to move `bytes` at the link's rate.
    pub fn transfer_s(&self, bytes: f64) -> f64 {
        bytes * 8.0 / self.bits_per_s
    }

    /// The unit of miss latency: one block's transfer plus a round trip, seconds.
    pub fn miss_unit_s(&self) -> f64 {
        self.transfer_s(BLOCK_BYTES as f64) + self.rtt_s
    }

    /// One line saying what the link is and where its figures come from.
    pub fn describe(&self) -> String {
        format!(
            "link {:.0} Mbit/s; one 16 KiB block {:.2} ms + RTT {:.2} ms ({}) = {:.2} ms",
            self.bits_per_s / 1e6,
            self.transfer_s(BLOCK_BYTES as f64) * 1e3,
            self.rtt_s * 1e3,
            if self.rtt_measured {
                "measured by bench.sh"
            } else {
                "default, not measured in this run"
            },
            self.miss_unit_s() * 1e3
        )
    }
}

/// Parses a rate as tc(8) reads it, into bits per second: a bare number or `bit` is bits,
/// `bps` is bytes; `k`, `m`, `g`, `t` are powers of 1000 and `ki`, `mi`, `gi`, `ti` powers
/// of 1024 (`100mbit`, `12.5mbps`, `1gibit`); case does not matter.
pub fn parse_tc_rate(s: &str) -> Result<f64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("rate {s:?}: no number"))?;
    let (prefix, per_byte) = if let Some(p) = unit.strip_suffix("bps") {
        (p, 8.0)
    } else if let Some(p) = unit.strip_suffix("bit") {
        (p, 1.0)
    } else if unit.is_empty() {
        ("", 1.0)
    } else {
        bail!("rate {s:?}: unknown unit {unit:?} (tc's bit, kbit, mbit, mibit, bps, mbps, ...)");
    };
    let scale = match prefix {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0f64.powi(4),
        _ => bail!("rate {s:?}: unknown unit {unit:?}"),
    };
    let bits = v * scale * per_byte;
    if !(bits.is_finite() && bits > 0.0) {
        bail!("rate {s:?}: must be above zero");
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_rates() {
        assert_eq!(parse_tc_rate("100mbit").unwrap(), 100e6);
        assert_eq!(parse_tc_rate("400Mbit").unwrap(), 400e6);
        assert_eq!(parse_tc_rate("12.5mbps").unwrap(), 100e6);
        assert_eq!(parse_tc_rate("1kibit").unwrap(), 1024.0);
        assert_eq!(parse_tc_rate("8000").unwrap(), 8000.0);
        assert_eq!(parse_tc_rate("1bps").unwrap(), 8.0);
        for bad in ["", "mbit", "100mb", "0mbit", "100 furlongs"] {
            assert!(parse_tc_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn block_unit_at_100_mbit() {
        let l = Link {
            bits_per_s: 100e6,
            rtt_s: 0.0002,
            rtt_measured: true,
        };
        // 16384 bytes * 8 / 1e8 = 1.31072 ms, + 0.2 ms.
        assert!((l.miss_unit_s() - 0.00151072).abs() < 1e-12);
        assert!((l.transfer_s(17.3e6) - 1.384).abs() < 1e-9);
        assert!(l.describe().contains("= 1.51 ms"));
    }
}
