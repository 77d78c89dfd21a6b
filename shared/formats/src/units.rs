//! Sizes, rates and durations as people type them, with one exact meaning each.
//!
//! Every flag of every vmt tool that takes a size, a rate or a duration parses it here, so
//! `10MB` means the same everywhere:
//! - [`Size`]: bytes. `KB`, `MB`, `GB`, `TB` are powers of 1000; `KiB`, `MiB`, `GiB`, `TiB`
//!   powers of 1024; a bare number or `B` is bytes. A decimal is accepted when it makes whole
//!   bytes (`1.5MiB`, `2.5KB`), not otherwise (`1.5B`). Single letters (`K`, `M`) are refused as
//!   ambiguous, with a hint naming both meanings.
//! - [`Rate`]: bits per second. Units ending in `bit` or `b` count bits with SI prefixes
//!   (`100Mbit`, `1Gbit`, `100Mb`, `100Mbps`); units ending in `B` count bytes with SI or binary
//!   prefixes (`12.5MB/s`, `10MiB/s`); `/s` or `ps` may follow; a bare number is bytes per
//!   second (what the swarm's limits always took). Zero is refused: no flag means unlimited.
//! - durations: [`parse_duration`] through `humantime` (`5s`, `250ms`, `1m30s`, `0s`).
//!
//! Numbers are parsed as exact decimals, never through floating point, so `0.1GB` is exactly
//! 100,000,000 bytes. Every error names the input, what was wrong and what is expected, on one
//! line (clap prints it after the flag's name).
//!
//! ```
//! use vmt_formats::units::{parse_duration, Rate, Size};
//! # fn main() -> Result<(), vmt_formats::units::UnitError> {
//! assert_eq!("1.5MiB".parse::<Size>()?.bytes(), 1_572_864);
//! assert_eq!("10MB".parse::<Size>()?.bytes(), 10_000_000);
//! let rate: Rate = "100Mbit".parse()?;
//! assert_eq!((rate.bits_per_s(), rate.bytes_per_s()), (100_000_000, 12_500_000));
//! assert_eq!(parse_duration("1m30s")?.as_secs(), 90);
//! assert!("10M".parse::<Size>().is_err()); // MB or MiB?
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a quantity is expected to look like, for error messages and help texts.
pub const SIZE_FORMS: &str =
    "bytes with an optional unit: B, KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024), e.g. 4096, 256KiB, 1.5GB";
/// See [`SIZE_FORMS`].
pub const RATE_FORMS: &str =
    "bits per second (100Mbit, 1Gbit, 100Mbps) or bytes per second (12.5MB/s, 10MiB/s, or a bare number)";
/// See [`SIZE_FORMS`].
pub const DURATION_FORMS: &str = "a duration such as 5s, 250ms, 1m30s or 0s";
/// The units paragraph of every vmt tool's `--help`.
pub const HELP: &str = "Units: sizes are bytes, KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB \
(powers of 1024), decimals allowed when they make whole bytes (1.5MiB); rates are bits per \
second (100Mbit, 1Gbit) or bytes per second (12.5MB/s, 10MiB/s, a bare number); durations \
are like 5s, 250ms, 1m30s.";

/// Which kind of quantity failed to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// A [`Size`].
    Size,
    /// A [`Rate`].
    Rate,
    /// A duration.
    Duration,
}

impl Quantity {
    fn forms(self) -> &'static str {
        match self {
            Quantity::Size => SIZE_FORMS,
            Quantity::Rate => RATE_FORMS,
            Quantity::Duration => DURATION_FORMS,
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Size => "size",
            Quantity::Rate => "rate",
            Quantity::Duration => "duration",
        })
    }
}

/// What was wrong with the input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// It does not start with a number.
    NoNumber,
    /// The unit is not one of the accepted ones.
    UnknownUnit(String),
    /// The unit has two common meanings; the hint says which units to write instead.
    AmbiguousUnit {
        /// The unit as typed.
        unit: String,
        /// What to write instead.
        hint: &'static str,
    },
    /// The value is not a whole number of the base unit (bytes, bits per second).
    NotWhole,
    /// The value does not fit the type (or the flag's limit).
    TooLarge,
    /// The value is zero where zero means nothing.
    Zero,
    /// `humantime`'s reason.
    Duration(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoNumber => f.write_str("it does not start with a number"),
            Problem::UnknownUnit(u) => write!(f, "unknown unit {u:?}"),
            Problem::AmbiguousUnit { unit, hint } => write!(f, "{unit:?} is ambiguous: {hint}"),
            Problem::NotWhole => f.write_str("it is not a whole number of the base unit"),
            Problem::TooLarge => f.write_str("it is too large"),
            Problem::Zero => f.write_str("it is zero"),
            Problem::Duration(e) => f.write_str(e),
        }
    }
}

/// A size, rate or duration that could not be parsed: the input, the reason, and the forms
/// that are accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {quantity} {input:?}: {} (expected {})", self.reason(), quantity.forms())]
pub struct UnitError {
    /// What was being parsed.
    pub quantity: Quantity,
    /// The text as given.
    pub input: String,
    /// What was wrong.
    pub problem: Problem,
}

impl UnitError {
    /// The problem, in the words of this quantity.
    fn reason(&self) -> String {
        match (&self.problem, self.quantity) {
            (Problem::NotWhole, Quantity::Rate) => {
                "it is not a whole number of bits per second".into()
            }
            (Problem::NotWhole, _) => "it is not a whole number of bytes".into(),
            (p, _) => p.to_string(),
        }
    }

    fn new(quantity: Quantity, input: &str, problem: Problem) -> UnitError {
        UnitError {
            quantity,
            input: input.to_string(),
            problem,
        }
    }
}

/// A number as typed: `mantissa / 10^scale`, exact.
#[derive(Clone, Copy, Debug)]
struct Decimal {
    mantissa: u128,
    scale: u32,
}

/// Most decimal digits kept: beyond this `u128` arithmetic could overflow.
const MAX_DIGITS: usize = 30;

/// Splits `s` into an exact decimal and the (trimmed) unit after it.
fn split_number(s: &str) -> Result<(Decimal, &str), Problem> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(Problem::NoNumber);
    }
    if int.trim_start_matches('0').len() + frac.len() > MAX_DIGITS {
        return Err(Problem::TooLarge);
    }
    let mut mantissa = 0u128;
    for d in int.trim_start_matches('0').bytes().chain(frac.bytes()) {
        mantissa = mantissa * 10 + u128::from(d - b'0');
    }
    Ok((
        Decimal {
            mantissa,
            scale: frac.len() as u32,
        },
        unit.trim(),
    ))
}

impl Decimal {
    /// `self * mult` if that is a whole number.
    fn times(self, mult: u128) -> Result<u128, Problem> {
        let num = self.mantissa.checked_mul(mult).ok_or(Problem::TooLarge)?;
        let den = 10u128.pow(self.scale);
        if num % den != 0 {
            return Err(Problem::NotWhole);
        }
        Ok(num / den)
    }
}

/// Multiplier of an SI prefix letter (either case for k, upper case otherwise).
fn si(prefix: &str) -> Option<u128> {
    Some(match prefix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    })
}

/// Multiplier of a binary prefix (`Ki`, `Mi`, `Gi`, `Ti`; any case).
fn binary(prefix: &str) -> Option<u128> {
    Some(match prefix.to_ascii_lowercase().as_str() {
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return None,
    })
}

/// Bytes per unit of a size unit (without `/s`), or why it is refused.
fn byte_unit(unit: &str) -> Result<u128, Problem> {
    if unit.is_empty() {
        return Ok(1);
    }
    if let Some(prefix) = unit.strip_suffix('B') {
        if let Some(m) = si(prefix).or_else(|| binary(prefix)) {
            return Ok(m);
        }
    }
    if let Some(prefix) = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix("iB"))
        .or_else(|| unit.strip_suffix("IB"))
    {
        if let Some(m) = binary(&format!("{prefix}i")) {
            return Ok(m);
        }
    }
    if matches!(unit, "k" | "K" | "m" | "M" | "g" | "G" | "t" | "T") {
        return Err(Problem::AmbiguousUnit {
            unit: unit.to_string(),
            hint: "write KB/MB/GB/TB for powers of 1000 or KiB/MiB/GiB/TiB for powers of 1024",
        });
    }
    if matches!(unit, "kb" | "mb" | "gb" | "tb" | "Kb" | "Mb" | "Gb" | "Tb") {
        return Err(Problem::AmbiguousUnit {
            unit: unit.to_string(),
            hint: "a size is in bytes: write KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024)",
        });
    }
    Err(Problem::UnknownUnit(unit.to_string()))
}

/// Bits per second per unit of a rate unit, or why it is refused.
fn rate_unit(unit: &str) -> Result<u128, Problem> {
    let per_s = unit
        .strip_suffix("/s")
        .or_else(|| unit.strip_suffix("ps"))
        .unwrap_or(unit)
        .trim_end();
    if let Some(prefix) = per_s
        .strip_suffix("bit")
        .or_else(|| per_s.strip_suffix('b'))
    {
        // SI prefixes only; a lower-case m can only mean mega here (millibits are no rate).
        let prefix = if prefix == "m" { "M" } else { prefix };
        return si(prefix).ok_or_else(|| Problem::UnknownUnit(unit.to_string()));
    }
    match byte_unit(per_s) {
        Ok(m) => Ok(m * 8),
        Err(Problem::AmbiguousUnit { unit, .. }) => Err(Problem::AmbiguousUnit {
            unit,
            hint: "write Mbit (bits) or MB/s, MiB/s (bytes) per second",
        }),
        Err(_) => Err(Problem::UnknownUnit(unit.to_string())),
    }
}

/// A number of bytes. Parse with [`str::parse`]; see the module doc for the accepted forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(u64);

impl Size {
    /// A size of `bytes`.
    pub const fn from_bytes(bytes: u64) -> Size {
        Size(bytes)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size as a `u32`, for block and piece sizes; `None` if it does not fit.
    pub fn to_u32(self) -> Option<u32> {
        u32::try_from(self.0).ok()
    }
}

impl FromStr for Size {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Size, UnitError> {
        let err = |p| UnitError::new(Quantity::Size, s, p);
        let (value, unit) = split_number(s.trim()).map_err(err)?;
        let bytes = value.times(byte_unit(unit).map_err(err)?).map_err(err)?;
        u64::try_from(bytes)
            .map(Size)
            .map_err(|_| err(Problem::TooLarge))
    }
}

impl fmt::Display for Size {
    /// The exact size in the largest binary unit that divides it (`256KiB`, `1536B`), as it
    /// would be typed back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if self.0 != 0 && self.0 % (1 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A size that is not zero and fits 32 bits (block and piece sizes), for clap's `value_parser`.
pub fn parse_size_u32(s: &str) -> Result<u32, UnitError> {
    let size: Size = s.parse()?;
    match size.to_u32() {
        Some(0) => Err(UnitError::new(Quantity::Size, s, Problem::Zero)),
        Some(v) => Ok(v),
        None => Err(UnitError::new(Quantity::Size, s, Problem::TooLarge)),
    }
}

/// A data rate in whole bits per second, never zero. Parse with [`str::parse`]; see the module
/// doc for the accepted forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// A rate of `bytes` per second; `None` for zero or more than `u64::MAX` bits per second.
    pub fn from_bytes_per_s(bytes: u64) -> Option<Rate> {
        bytes.checked_mul(8).filter(|&b| b > 0).map(Rate)
    }

    /// Bits per second.
    pub const fn bits_per_s(self) -> u64 {
        self.0
    }

    /// Bytes per second, rounded down (exact for every rate given in bytes, and for bit rates
    /// that are whole bytes, such as `100Mbit` = 12,500,000 B/s); at least 1.
    pub fn bytes_per_s(self) -> u64 {
        (self.0 / 8).max(1)
    }
}

impl FromStr for Rate {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Rate, UnitError> {
        let err = |p| UnitError::new(Quantity::Rate, s, p);
        let (value, unit) = split_number(s.trim()).map_err(err)?;
        // A bare number is bytes per second.
        let mult = if unit.is_empty() {
            8
        } else {
            rate_unit(unit).map_err(err)?
        };
        let bits = value.times(mult).map_err(err)?;
        match u64::try_from(bits) {
            Ok(0) => Err(err(Problem::Zero)),
            Ok(b) => Ok(Rate(b)),
            Err(_) => Err(err(Problem::TooLarge)),
        }
    }
}

impl fmt::Display for Rate {
    /// In bits per second with the largest SI prefix that keeps it exact (`100Mbit/s`), as it
    /// would be typed back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (div, unit) in [
            (1_000_000_000_000, "Tbit/s"),
            (1_000_000_000, "Gbit/s"),
            (1_000_000, "Mbit/s"),
            (1_000, "kbit/s"),
        ] {
            if self.0 % div == 0 {
                return write!(f, "{}{unit}", self.0 / div);
            }
        }
        write!(f, "{}bit/s", self.0)
    }
}

/// Parses a duration with `humantime` (`5s`, `250ms`, `1m30s`, `0s`).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| UnitError::new(Quantity::Duration, s, Problem::Duration(e.to_string())))
}

/// A duration in whole microseconds, for the simulator's clock; durations past `u64::MAX` µs
/// (half a million years) are refused.
pub fn parse_duration_us(s: &str) -> Result<u64, UnitError> {
    let d = parse_duration(s)?;
    u64::try_from(d.as_micros())
        .map_err(|_| UnitError::new(Quantity::Duration, s, Problem::TooLarge))
}

/// `bytes` for people: `1.50 MiB`, `512 B` (binary units, two decimals).
pub fn human_bytes(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{value:.2} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.2} TiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> Result<u64, Problem> {
        s.parse::<Size>().map(Size::bytes).map_err(|e| e.problem)
    }

    fn rate(s: &str) -> Result<u64, Problem> {
        s.parse::<Rate>()
            .map(Rate::bits_per_s)
            .map_err(|e| e.problem)
    }

    #[test]
    fn sizes_have_exact_meanings() {
        let cases: [(&str, u64); 20] = [
            ("4096", 4096),
            ("0", 0),
            ("17B", 17),
            ("1KB", 1000),
            ("1kB", 1000),
            ("1KiB", 1024),
            ("10MB", 10_000_000),
            ("10MiB", 10 << 20),
            ("2GB", 2_000_000_000),
            ("2GiB", 2 << 30),
            ("3TB", 3_000_000_000_000),
            ("3TiB", 3 << 40),
            // Binary units in any case; spaces around the number and before the unit.
            ("256kib", 256 << 10),
            (" 64 MiB ", 64 << 20),
            ("1.5MiB", 1_572_864),
            ("2.5KB", 2500),
            // Exact, not through f64.
            ("0.1GB", 100_000_000),
            (".5KiB", 512),
            ("007KB", 7000),
            ("1.50MiB", 1_572_864),
        ];
        for (input, want) in cases {
            assert_eq!(size(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn size_errors_name_the_problem() {
        assert_eq!(size("1.5B"), Err(Problem::NotWhole));
        assert_eq!(size("1.0000001KiB"), Err(Problem::NotWhole));
        assert_eq!(size("KiB"), Err(Problem::NoNumber));
        assert_eq!(size(""), Err(Problem::NoNumber));
        assert_eq!(size("1.2.3MB"), Err(Problem::NoNumber));
        assert_eq!(size("-5MB"), Err(Problem::NoNumber));
        assert_eq!(
            size("12 parsecs"),
            Err(Problem::UnknownUnit("parsecs".into()))
        );
        assert!(matches!(size("10M"), Err(Problem::AmbiguousUnit { .. })));
        assert!(matches!(size("10Mb"), Err(Problem::AmbiguousUnit { .. })));
        assert_eq!(size("16EiB"), Err(Problem::UnknownUnit("EiB".into())));
        assert_eq!(size("20000000TB"), Err(Problem::TooLarge));
        assert_eq!(
            size("99999999999999999999999999999999"),
            Err(Problem::TooLarge)
        );
        let e = "12 parsecs".parse::<Size>().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid size \"12 parsecs\": unknown unit \"parsecs\""),
            "{e}"
        );
        assert!(e.contains("KiB") && e.contains("powers of 1000"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn narrow_sizes() {
        assert_eq!(parse_size_u32("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size_u32("0").unwrap_err().problem, Problem::Zero);
        assert_eq!(
            parse_size_u32("4GiB").unwrap_err().problem,
            Problem::TooLarge
        );
    }

    #[test]
    fn rates_in_bits_or_bytes() {
        let cases: [(&str, u64); 15] = [
            ("100Mbit", 100_000_000),
            ("100Mbit/s", 100_000_000),
            // tc's spelling.
            ("100mbit", 100_000_000),
            ("100Mbps", 100_000_000),
            ("100Mb", 100_000_000),
            ("1Gbit", 1_000_000_000),
            ("64kbit", 64_000),
            ("300bit/s", 300),
            ("1.5Mbit", 1_500_000),
            ("12.5MB/s", 100_000_000),
            ("12.5MB", 100_000_000),
            ("10MiB/s", 80 << 20),
            ("256KiB", 8 << 18),
            // A bare number is bytes per second.
            ("12500000", 100_000_000),
            ("1", 8),
        ];
        for (input, want) in cases {
            assert_eq!(rate(input), Ok(want), "{input:?}");
        }
        let r: Rate = "100Mbit".parse().unwrap();
        assert_eq!(r.bytes_per_s(), 12_500_000);
        let r: Rate = "10MiB/s".parse().unwrap();
        assert_eq!(r.bytes_per_s(), 10 << 20);
    }

    #[test]
    fn rate_errors_name_the_problem() {
        assert_eq!(rate("0Mbit"), Err(Problem::Zero));
        assert_eq!(rate("0"), Err(Problem::Zero));
        assert_eq!(rate("1.5bit"), Err(Problem::NotWhole));
        assert_eq!(rate("fast"), Err(Problem::NoNumber));
        assert_eq!(rate("100Xbit"), Err(Problem::UnknownUnit("Xbit".into())));
        assert_eq!(
            rate("100furlongs"),
            Err(Problem::UnknownUnit("furlongs".into()))
        );
        assert!(matches!(rate("100M"), Err(Problem::AmbiguousUnit { .. })));
        let e = "100M".parse::<Rate>().unwrap_err().to_string();
        assert!(e.starts_with("invalid rate \"100M\""), "{e}");
        assert!(e.contains("Mbit"), "{e}");
    }

    #[test]
    fn durations_through_humantime() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_us("20ms"), Ok(20_000));
        let e = parse_duration("5 fortnights").unwrap_err();
        assert_eq!(e.quantity, Quantity::Duration);
        let text = e.to_string();
        assert!(
            text.starts_with("invalid duration \"5 fortnights\""),
            "{text}"
        );
        assert!(text.contains("250ms"), "{text}");
        assert!(parse_duration("5").is_err(), "a unit is required");
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["256KiB", "1GiB", "1500B", "0B", "3TiB"] {
            let v: Size = s.parse().unwrap();
            assert_eq!(v.to_string(), s);
            assert_eq!(v.to_string().parse::<Size>().unwrap(), v);
        }
        for s in ["100Mbit/s", "1Gbit/s", "64kbit/s", "300bit/s"] {
            let v: Rate = s.parse().unwrap();
            assert_eq!(v.to_string(), s);
        }
        let v: Rate = "10MiB/s".parse().unwrap();
        assert_eq!(v.to_string().parse::<Rate>().unwrap(), v);
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1_572_864), "1.50 MiB");
        assert_eq!(Rate::from_bytes_per_s(0), None);
        assert_eq!(Rate::from_bytes_per_s(125).unwrap().to_string(), "1kbit/s");
    }
}
