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

/// Parses a link rate as bench.sh gives it both to tc(8) and to this tool, into bits per
/// second, through the one parser of every vmt tool (`vmt_formats::units::Rate`). Only the
/// forms both read alike are taken, `<number><k|m|M|G|T>bit` (`100mbit`, `1Gbit`): tc reads a
/// bare number as bits per second and `12.5mbps` as megabytes per second, the vmt tools as
/// bytes and megabits, so those are refused rather than read two ways.
pub fn parse_tc_rate(s: &str) -> Result<f64> {
    let t = s.trim();
    if !t.ends_with("bit") {
        bail!(
            "rate {s:?}: write it in bits, e.g. 100mbit or 1Gbit (tc and vmt read bare \
             numbers and `bps` units differently)"
        );
    }
    let rate: vmt_formats::units::Rate = t.parse().with_context(|| format!("rate {s:?}"))?;
    Ok(rate.bits_per_s() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_rates() {
        assert_eq!(parse_tc_rate("100mbit").unwrap(), 100e6);
        assert_eq!(parse_tc_rate("400Mbit").unwrap(), 400e6);
        assert_eq!(parse_tc_rate("1Gbit").unwrap(), 1e9);
        assert_eq!(parse_tc_rate("1.5kbit").unwrap(), 1500.0);
        for bad in ["", "mbit", "100mb", "0mbit", "100 furlongs"] {
            assert!(parse_tc_rate(bad).is_err(), "{bad}");
        }
    }

    /// Issue 16: `12.5mbps` was 100 Mbit/s here (as tc reads it) but 12.5 Mbit/s to
    /// `vmt-train --bandwidth`; a bare `8000` was bits here and bytes there. Every rate this
    /// tool takes now means what it means to the other tools, and the rest is refused.
    #[test]
    fn r16_3_3_link_rates_mean_what_they_mean_to_every_vmt_tool() {
        for same in ["100mbit", "400Mbit", "1Gbit", "250kbit"] {
            let vmt: vmt_formats::units::Rate = same.parse().unwrap();
            assert_eq!(
                parse_tc_rate(same).unwrap(),
                vmt.bits_per_s() as f64,
                "{same}"
            );
        }
        for two_ways in ["12.5mbps", "8000", "1bps", "10MB/s"] {
            let e = parse_tc_rate(two_ways).unwrap_err().to_string();
            assert!(e.contains("write it in bits"), "{two_ways}: {e}");
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
