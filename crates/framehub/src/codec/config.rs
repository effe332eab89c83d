//! What a listener's `framing` setting says: [`FramingConfig`] and its parameters, with the
//! serde code that reads and writes them (a plain method name or a table, errors that name the
//! key).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Unexpected, Visitor};

/// Which framing a listener speaks.
///
/// In TOML, either a plain string that takes the defaults for every parameter, or a table with a
/// `method` key and that method's parameters; unknown keys are rejected by name:
///
/// ```toml
/// framing = "lines"                 # or "length", "cobs", "spacepacket", "chunk", "json"
/// framing = { method = "length", prefix_bytes = 2, endian = "little" }
/// framing = { method = "json", validate = false }
/// framing = { method = "spacepacket", allowed_packet_ids = [0x1801, 0x0802] }
/// ```
///
/// ```
/// use framehub::codec::{Endian, FramingConfig, LengthPrefix};
///
/// #[derive(serde::Deserialize)]
/// struct Listener { framing: FramingConfig }
///
/// let l: Listener = toml::from_str(r#"framing = { method = "length", prefix_bytes = 2 }"#)?;
/// assert_eq!(l.framing, FramingConfig::Length(LengthPrefix { bytes: 2, endian: Endian::Big }));
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FramingConfig {
    /// Frames end at `\n`; a trailing `\r` is stripped (newline-delimited JSON from radar nodes).
    #[default]
    Lines,
    /// Each frame is preceded by its length (NinjaTCP: 4 bytes, big endian).
    Length(LengthPrefix),
    /// COBS-encoded frames delimited by `0x00` (sat-rs).
    Cobs,
    /// CCSDS space packets, optionally filtered by packet ID (sat-rs).
    SpacePacket(SpacePacketConfig),
    /// Each socket read is one frame (the Ark TCP server stage).
    Chunk,
    /// A stream of JSON values, each value one frame, with or without whitespace between them
    /// (LinuxIT's clients: one object per write, no newline).
    Json(JsonConfig),
}

/// Parameters of the `json` framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonConfig {
    /// Check each value with the strict JSON grammar and skip invalid ones (counted as
    /// `invalid_json`); `false` cuts values by their structure only (strings and brackets) and
    /// delivers them unchecked, for an application that answers a malformed request itself or
    /// accepts a dialect (LinuxIT's `0x01` literals). TOML key `validate`, default `true`.
    pub validate: bool,
}

impl Default for JsonConfig {
    fn default() -> Self {
        Self { validate: true }
    }
}

/// The length prefix of the `length` framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefix {
    /// Width of the prefix in bytes: 1, 2, 4 or 8 (TOML key `prefix_bytes`).
    pub bytes: u8,
    /// Byte order of the prefix (TOML key `endian`: `"big"` or `"little"`).
    pub endian: Endian,
}

impl Default for LengthPrefix {
    /// 4 bytes, big endian, as NinjaTCP sends.
    fn default() -> Self {
        Self {
            bytes: 4,
            endian: Endian::Big,
        }
    }
}

/// Byte order of a length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    /// Most significant byte first (network order).
    #[default]
    Big,
    /// Least significant byte first.
    Little,
}

/// Parameters of the `spacepacket` framing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpacePacketConfig {
    /// Packet IDs to accept; `None` accepts every packet.
    ///
    /// A packet ID is the first 16 bits of the primary header without the 3 version bits, i.e.
    /// packet type (1 bit), secondary header flag (1 bit) and APID (11 bits): sat-rs's
    /// `PacketId::raw()`. A TC with a secondary header for APID 1 is `0x1801`.
    pub allowed_packet_ids: Option<Vec<u16>>,
}

/// Largest packet ID: 13 bits (type, secondary header flag, APID).
pub(super) const MAX_PACKET_ID: u16 = 0x1FFF;

const METHODS: &[&str] = &["lines", "length", "cobs", "spacepacket", "chunk", "json"];

impl FramingConfig {
    /// The method name as written in the config (`"lines"`, `"length"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Lines => "lines",
            Self::Length(_) => "length",
            Self::Cobs => "cobs",
            Self::SpacePacket(_) => "spacepacket",
            Self::Chunk => "chunk",
            Self::Json(_) => "json",
        }
    }

    /// Checks parameters that the types alone cannot: the prefix width and the packet IDs.
    /// The error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Length(prefix) if !matches!(prefix.bytes, 1 | 2 | 4 | 8) => Err(format!(
                "framing.prefix_bytes = {}: must be 1, 2, 4 or 8",
                prefix.bytes
            )),
            Self::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: Some(ids),
            }) => {
                if ids.is_empty() {
                    return Err(
                        "framing.allowed_packet_ids is empty: every packet would be \
                                dropped (omit the key to accept all packets)"
                            .to_owned(),
                    );
                }
                match ids.iter().find(|&&id| id > MAX_PACKET_ID) {
                    Some(id) => Err(format!(
                        "framing.allowed_packet_ids: {id:#06x} is not a packet ID (13 bits: \
                         type, secondary header flag, APID; at most {MAX_PACKET_ID:#06x})"
                    )),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Keys a table may hold for this method, for "unknown field" errors.
    fn keys(&self) -> &'static [&'static str] {
        match self {
            Self::Length(_) => &["method", "prefix_bytes", "endian"],
            Self::SpacePacket(_) => &["method", "allowed_packet_ids"],
            Self::Json(_) => &["method", "validate"],
            Self::Lines | Self::Cobs | Self::Chunk => &["method"],
        }
    }

    fn from_method<E: de::Error>(method: &str) -> Result<Self, E> {
        Ok(match method {
            "lines" => Self::Lines,
            "length" => Self::Length(LengthPrefix::default()),
            "cobs" => Self::Cobs,
            "spacepacket" => Self::SpacePacket(SpacePacketConfig::default()),
            "chunk" => Self::Chunk,
            "json" => Self::Json(JsonConfig::default()),
            other => return Err(E::unknown_variant(other, METHODS)),
        })
    }
}

impl<'de> Deserialize<'de> for FramingConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FramingVisitor)
    }
}

/// The inverse of the parser: a plain method name when every parameter has
/// its default, else a table with `method` and the parameters.
impl serde::Serialize for FramingConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Self::Length(prefix) => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("method", self.name())?;
                map.serialize_entry("prefix_bytes", &prefix.bytes)?;
                map.serialize_entry("endian", &prefix.endian)?;
                map.end()
            }
            Self::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: Some(ids),
            }) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("method", self.name())?;
                map.serialize_entry("allowed_packet_ids", ids)?;
                map.end()
            }
            Self::Json(JsonConfig { validate: false }) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("method", self.name())?;
                map.serialize_entry("validate", &false)?;
                map.end()
            }
            _ => serializer.serialize_str(self.name()),
        }
    }
}

/// Hand-written so that a string and a table are both accepted while errors still name the
/// method or key at fault (`#[serde(untagged)]` would only say "did not match any variant").
struct FramingVisitor;

impl<'de> Visitor<'de> for FramingVisitor {
    type Value = FramingConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a framing method name or a table with a `method` key")
    }

    fn visit_str<E: de::Error>(self, method: &str) -> Result<FramingConfig, E> {
        FramingConfig::from_method(method)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FramingConfig, A::Error> {
        const ALL_KEYS: &[&str] = &[
            "method",
            "prefix_bytes",
            "endian",
            "allowed_packet_ids",
            "validate",
        ];
        let mut method: Option<String> = None;
        let mut prefix_bytes: Option<u8> = None;
        let mut endian: Option<Endian> = None;
        let mut allowed_packet_ids: Option<Vec<u16>> = None;
        let mut validate: Option<bool> = None;
        // Keys arrive in any order, so which keys the method allows is checked after the loop.
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let Some(&known) = ALL_KEYS.iter().find(|k| **k == key) else {
                return Err(de::Error::unknown_field(&key, ALL_KEYS));
            };
            if seen.contains(&known) {
                return Err(de::Error::duplicate_field(known));
            }
            seen.push(known);
            match known {
                "method" => method = Some(map.next_value()?),
                "prefix_bytes" => {
                    let bytes: u8 = map.next_value()?;
                    if !matches!(bytes, 1 | 2 | 4 | 8) {
                        return Err(de::Error::invalid_value(
                            Unexpected::Unsigned(bytes.into()),
                            &"prefix_bytes = 1, 2, 4 or 8",
                        ));
                    }
                    prefix_bytes = Some(bytes);
                }
                "endian" => endian = Some(map.next_value()?),
                "validate" => validate = Some(map.next_value()?),
                _ => allowed_packet_ids = Some(map.next_value()?),
            }
        }
        let method = method.ok_or_else(|| de::Error::missing_field("method"))?;
        let mut config = FramingConfig::from_method::<A::Error>(&method)?;
        if let Some(extra) = seen.iter().find(|k| !config.keys().contains(k)) {
            return Err(de::Error::unknown_field(extra, config.keys()));
        }
        match &mut config {
            FramingConfig::Length(prefix) => {
                prefix.bytes = prefix_bytes.unwrap_or(prefix.bytes);
                prefix.endian = endian.unwrap_or(prefix.endian);
            }
            FramingConfig::SpacePacket(sp) => sp.allowed_packet_ids = allowed_packet_ids,
            FramingConfig::Json(json) => json.validate = validate.unwrap_or(json.validate),
            FramingConfig::Lines | FramingConfig::Cobs | FramingConfig::Chunk => {}
        }
        config.validate().map_err(de::Error::custom)?;
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listener {
        framing: FramingConfig,
    }

    fn parse(text: &str) -> Result<FramingConfig, String> {
        toml::from_str::<Listener>(text)
            .map(|l| l.framing)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plain_strings_take_defaults() {
        assert_eq!(parse(r#"framing = "lines""#), Ok(FramingConfig::Lines));
        assert_eq!(
            parse(r#"framing = "length""#),
            Ok(FramingConfig::Length(LengthPrefix {
                bytes: 4,
                endian: Endian::Big
            }))
        );
        assert_eq!(parse(r#"framing = "cobs""#), Ok(FramingConfig::Cobs));
        assert_eq!(
            parse(r#"framing = "spacepacket""#),
            Ok(FramingConfig::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: None
            }))
        );
        assert_eq!(parse(r#"framing = "chunk""#), Ok(FramingConfig::Chunk));
        assert_eq!(
            parse(r#"framing = "json""#),
            Ok(FramingConfig::Json(JsonConfig { validate: true }))
        );
    }

    #[test]
    fn tables_carry_parameters() {
        assert_eq!(
            parse(r#"framing = { method = "length", prefix_bytes = 2, endian = "little" }"#),
            Ok(FramingConfig::Length(LengthPrefix {
                bytes: 2,
                endian: Endian::Little
            }))
        );
        assert_eq!(
            parse(r#"framing = { endian = "little", method = "length" }"#),
            Ok(FramingConfig::Length(LengthPrefix {
                bytes: 4,
                endian: Endian::Little
            }))
        );
        assert_eq!(
            parse(r#"framing = { method = "spacepacket", allowed_packet_ids = [0x1801, 0x0802] }"#),
            Ok(FramingConfig::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: Some(vec![0x1801, 0x0802])
            }))
        );
        assert_eq!(
            parse(r#"framing = { method = "json", validate = false }"#),
            Ok(FramingConfig::Json(JsonConfig { validate: false }))
        );
        assert_eq!(
            parse("[framing]\nmethod = \"cobs\"\n"),
            Ok(FramingConfig::Cobs)
        );
    }

    #[test]
    fn errors_name_the_key_or_method() {
        let err = parse(r#"framing = { method = "length", prefix_byte = 2 }"#).unwrap_err();
        assert!(err.contains("unknown field `prefix_byte`"), "{err}");
        // A key that exists, but for another method.
        let err = parse(r#"framing = { method = "lines", endian = "big" }"#).unwrap_err();
        assert!(err.contains("unknown field `endian`"), "{err}");
        let err = parse(r#"framing = "xml""#).unwrap_err();
        assert!(err.contains("unknown variant `xml`"), "{err}");
        let err = parse(r#"framing = { method = "cobs", validate = false }"#).unwrap_err();
        assert!(err.contains("unknown field `validate`"), "{err}");
        let err = parse(r#"framing = { prefix_bytes = 2 }"#).unwrap_err();
        assert!(err.contains("missing field `method`"), "{err}");
        let err = parse(r#"framing = { method = "length", prefix_bytes = 3 }"#).unwrap_err();
        assert!(err.contains("prefix_bytes"), "{err}");
        let err = parse(r#"framing = { method = "length", endian = "middle" }"#).unwrap_err();
        assert!(err.contains("middle"), "{err}");
        let err = parse(r#"framing = { method = "spacepacket", allowed_packet_ids = [0x2000] }"#)
            .unwrap_err();
        assert!(err.contains("allowed_packet_ids"), "{err}");
        let err =
            parse(r#"framing = { method = "spacepacket", allowed_packet_ids = [] }"#).unwrap_err();
        assert!(err.contains("allowed_packet_ids"), "{err}");
    }

    #[test]
    fn validate_and_name() {
        for (config, name) in [
            (FramingConfig::Lines, "lines"),
            (FramingConfig::Length(LengthPrefix::default()), "length"),
            (FramingConfig::Cobs, "cobs"),
            (
                FramingConfig::SpacePacket(SpacePacketConfig::default()),
                "spacepacket",
            ),
            (FramingConfig::Chunk, "chunk"),
            (FramingConfig::Json(JsonConfig::default()), "json"),
        ] {
            assert_eq!(config.name(), name);
            assert_eq!(config.validate(), Ok(()));
        }
        let bad = FramingConfig::Length(LengthPrefix {
            bytes: 0,
            endian: Endian::Big,
        });
        assert!(bad.validate().is_err_and(|e| e.contains("prefix_bytes")));
    }
}
