//! The daemon's config file: the library's [`HubConfig`] plus the `[serve]`
//! table, parsed with key paths in every error, and `check-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use framehub::HubConfig;
use serde::Deserialize;

/// Settings of the daemon itself (`[serve]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// File the NDJSON records are appended to (unset: stdout).
    pub out: Option<PathBuf>,
    /// How often the status line is printed on stderr (`"5s"`).
    #[serde(deserialize_with = "duration")]
    pub status_interval: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            out: None,
            status_interval: Duration::from_secs(5),
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    framehub::config::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Everything a config file holds.
#[derive(Debug, Clone, Default)]
pub struct FileConfig {
    /// The hub: listeners, nodes, shutdown.
    pub hub: HubConfig,
    /// The daemon.
    pub serve: ServeConfig,
}

/// A config that cannot be used, with the key at fault when known.
#[derive(Debug)]
pub struct BadConfig(pub String);

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses TOML text; errors name the key (`listener[0].queue.capacity`).
pub fn parse(text: &str) -> Result<FileConfig, BadConfig> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| BadConfig(format!("not valid TOML: {e}")))?;
    let serve = match table.remove("serve") {
        Some(value) => deserialize::<ServeConfig>(value, "serve.")?,
        None => ServeConfig::default(),
    };
    let hub: HubConfig = deserialize(toml::Value::Table(table), "")?;
    hub.validate().map_err(|e| BadConfig(e.to_string()))?;
    Ok(FileConfig { hub, serve })
}

fn deserialize<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
) -> Result<T, BadConfig> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        BadConfig(format!("{prefix}{path}: {}", e.into_inner()))
    })
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<FileConfig, BadConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadConfig(format!("cannot read {}: {e}", path.display())))?;
    parse(&text)
}

/// `framehub check-config FILE`: 0 when valid, 64 naming the bad key.
pub fn check_config(path: &Path) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            let listeners = cfg.hub.listeners();
            println!(
                "{}: ok ({} listener{})",
                path.display(),
                listeners.len(),
                if listeners.len() == 1 { "" } else { "s" }
            );
            for l in listeners {
                println!(
                    "  {} on {} ({}, {:?}, {:?}, auth {})",
                    l.name,
                    l.effective_bind(),
                    l.framing.name(),
                    l.protocol,
                    l.delivery,
                    if l.auth.is_required() { "on" } else { "off" }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("framehub: {}: {e}", path.display());
            ExitCode::from(crate::EXIT_BAD_CONFIG)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let err =
            parse("[[listener]]\n[listener.queue]\ncapacity = \"x\"\n").expect_err("bad type");
        assert!(err.0.starts_with("listener[0].queue.capacity"), "{err}");
        let err = parse("[serve]\nstatus = \"5s\"\n").expect_err("unknown key");
        assert!(err.0.contains("status"), "{err}");
        let err = parse("[[listener]]\n[listener.queue]\ncapacity = 0\n").expect_err("invalid");
        assert!(err.0.contains("listener[0].queue.capacity"), "{err}");
    }

    /// The README's reference block lists every key with its default: it
    /// must parse, and give the same settings as an empty file.
    #[test]
    fn readme_config_reference_parses_to_the_defaults() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("toml block in README") + "```toml\n".len();
        let block = &readme[start..start + readme[start..].find("```").expect("block end")];
        let documented = parse(block).expect("README config parses");
        let defaults = parse("").expect("empty config");
        assert_eq!(
            format!("{:?}", documented.hub.listeners()),
            format!("{:?}", defaults.hub.listeners())
        );
        assert_eq!(
            format!("{:?}", documented.hub.nodes),
            format!("{:?}", defaults.hub.nodes)
        );
        assert_eq!(documented.hub.shutdown_grace, defaults.hub.shutdown_grace);
        assert_eq!(documented.hub.stats_interval, defaults.hub.stats_interval);
        assert_eq!(documented.hub.runtime, defaults.hub.runtime);
        assert_eq!(
            format!("{:?}", documented.serve),
            format!("{:?}", defaults.serve)
        );
        // And none is missing: every field of every settings struct is
        // named in the block (set, commented out, or as a table header).
        let all = format!(
            "{:?} {:?} {:?}",
            defaults.hub,
            defaults.hub.listeners(),
            defaults.serve
        );
        let mut fields = all
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter_map(|w| w.strip_suffix(':'))
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>();
        fields.sort_unstable();
        fields.dedup();
        for field in fields {
            // The one Rust name that differs from its TOML key.
            let key = if field == "msg_type" { "type" } else { field };
            assert!(
                block.contains(&format!("{key} =")) || block.contains(&format!("{key}]")),
                "README config block lacks `{key}`"
            );
        }
    }

    /// A stage-mode file: every new key parses, from the daemon's config.
    #[test]
    fn stage_mode_keys_parse() {
        let cfg = parse(
            r#"
            stats_interval = "2s"
            [runtime]
            io_threads = 1
            cpu_affinity = [0]
            thread_priority = "realtime:10"
            [[listener]]
            name = "stage"
            framing = "chunk"
            protocol = "raw"
            delivery = "groups"
            group_size = 16
            group_max_delay = "10ms"
            group_capacity = 8
            group_overflow = "block"
            egress_buffer_bytes = "256KiB"
            slow_client = "disconnect"
            "#,
        )
        .expect("valid");
        assert_eq!(cfg.hub.stats_interval, Duration::from_secs(2));
        assert_eq!(cfg.hub.runtime.cpu_affinity, [0]);
        assert_eq!(
            cfg.hub.runtime.thread_priority,
            Some(framehub::ThreadPriority::Realtime(10))
        );
        let l = &cfg.hub.listener[0];
        assert_eq!(l.delivery, framehub::Delivery::Groups);
        assert_eq!(l.group_size, 16);
        assert_eq!(l.group_overflow, framehub::OverflowPolicy::Block);
        assert_eq!(l.egress_buffer_bytes, framehub::ByteSize(256 << 10));
        assert_eq!(l.slow_client, framehub::SlowClientPolicy::Disconnect);
        let nice = parse("[runtime]\nthread_priority = -5\n").expect("nice");
        assert_eq!(
            nice.hub.runtime.thread_priority,
            Some(framehub::ThreadPriority::Nice(-5))
        );
        for bad in [
            "[runtime]\nthread_priority = 20\n",
            "[runtime]\nthread_priority = \"realtime:0\"\n",
            "[runtime]\nthread_priority = \"fast\"\n",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.0.contains("runtime.thread_priority"), "{err}");
        }
        let err = parse("[[listener]]\ngroup_size = 0\n").expect_err("size 0");
        assert!(err.0.contains("listener[0].group_size"), "{err}");
    }

    #[test]
    fn serve_table_is_separate() {
        let cfg = parse("[serve]\nout = \"x.ndjson\"\nstatus_interval = \"1s\"\n").expect("valid");
        assert_eq!(cfg.serve.out, Some(PathBuf::from("x.ndjson")));
        assert_eq!(cfg.serve.status_interval, Duration::from_secs(1));
        assert_eq!(cfg.hub.listeners().len(), 1);
    }
}
