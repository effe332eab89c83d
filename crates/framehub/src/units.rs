//! Settings in human units, one parser for the library's config and the CLI's flags alike:
//! byte sizes ([`ByteSize`]: `65536`, `"64KiB"`, `"1MiB"`) and durations (`"10s"`, `"250ms"`,
//! `"1m 30s"`, with `"off"` for an optional one), and the serde helpers that read and write
//! them in config structs (`#[serde(deserialize_with = "framehub::units::duration")]`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written in TOML as an integer or a string with a unit:
/// `65536`, `"64KiB"`, `"1MiB"`, `"10MB"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub usize);

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

impl ByteSize {
    /// Parses `"64KiB"`-style text: an integer and an optional unit among
    /// B, KB, KiB, MB, MiB, GB, GiB (case-insensitive).
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: usize = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a size such as \"64KiB\""))?;
        let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?} in {text:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(u64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Int(n) => usize::try_from(n)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
            Repr::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly: `64KiB`,
    /// `1MiB`, `1000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Serde: reads an optional size; `"off"` means unset.
pub fn opt_byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Off(Off),
        Size(ByteSize),
    }
    #[derive(Deserialize)]
    enum Off {
        #[serde(rename = "off")]
        Off,
    }
    Ok(match Repr::deserialize(d)? {
        Repr::Off(Off::Off) => None,
        Repr::Size(size) => Some(size),
    })
}

/// Serde: writes an optional size, `"off"` when unset.
pub fn ser_opt_byte_size<S: Serializer>(b: &Option<ByteSize>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => b.serialize(s),
        None => s.serialize_str("off"),
    }
}

/// Serde: writes a duration as `"5s"` (for `serialize_with`).
pub fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// Serde: writes an optional duration, `"off"` when unset.
pub fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_str("off"),
    }
}

/// Parses a duration written as `"10s"`, `"250ms"`, `"1m 30s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as \"10s\": {e}"))
}

/// Serde: reads a duration written as `"10s"` (for `deserialize_with`).
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Parses an optional duration: `"off"`, `"none"` or a zero duration mean unset (config
/// files and command-line flags alike).
pub fn parse_opt_duration(text: &str) -> Result<Option<Duration>, String> {
    if text == "off" || text == "none" {
        return Ok(None);
    }
    parse_duration(text).map(|d| (!d.is_zero()).then_some(d))
}

/// Serde: reads an optional duration; `"off"`, `"none"` or zero mean unset.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_opt_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("65536"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::parse("1MiB"), Ok(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("10 MB"), Ok(ByteSize(10_000_000)));
        assert!(ByteSize::parse("ten").is_err());
        assert!(ByteSize::parse("1XB").is_err());
    }

    #[test]
    fn byte_sizes_and_durations_print_as_they_parse() {
        for n in [1 << 20, 64 << 10, 1000, 0, 3 << 30] {
            let text = ByteSize(n).to_string();
            assert_eq!(ByteSize::parse(&text), Ok(ByteSize(n)), "{text}");
        }
        assert_eq!(ByteSize(1 << 20).to_string(), "1MiB");
        for d in [
            Duration::from_secs(5),
            Duration::from_millis(100),
            Duration::from_secs(90),
        ] {
            assert_eq!(
                parse_duration(&humantime::format_duration(d).to_string()),
                Ok(d)
            );
        }
    }

    #[test]
    fn optional_units_read_off_and_zero_as_unset() {
        assert_eq!(parse_opt_duration("off"), Ok(None));
        assert_eq!(parse_opt_duration("none"), Ok(None));
        assert_eq!(parse_opt_duration("0s"), Ok(None));
        assert_eq!(parse_opt_duration("3s"), Ok(Some(Duration::from_secs(3))));
        assert!(parse_opt_duration("soon").is_err());
    }

    #[test]
    fn serde_helpers_round_trip() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Units {
            #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
            every: Duration,
            #[serde(deserialize_with = "opt_duration", serialize_with = "ser_opt_duration")]
            timeout: Option<Duration>,
            #[serde(
                deserialize_with = "opt_byte_size",
                serialize_with = "ser_opt_byte_size"
            )]
            rotate: Option<ByteSize>,
            size: ByteSize,
        }
        for units in [
            Units {
                every: Duration::from_millis(1500),
                timeout: None,
                rotate: Some(ByteSize(64 << 10)),
                size: ByteSize(1000),
            },
            Units {
                every: Duration::from_secs(90),
                timeout: Some(Duration::from_secs(5)),
                rotate: None,
                size: ByteSize(3 << 30),
            },
        ] {
            let text = toml::to_string(&units).expect("serializes");
            assert_eq!(
                toml::from_str::<Units>(&text).expect("parses"),
                units,
                "{text}"
            );
        }
        let units: Units = toml::from_str(
            "every = \"1m 30s\"\ntimeout = \"off\"\nrotate = \"off\"\nsize = 65536\n",
        )
        .expect("parses");
        assert_eq!(units.every, Duration::from_secs(90));
        assert_eq!(units.size, ByteSize(64 << 10));
    }
}
