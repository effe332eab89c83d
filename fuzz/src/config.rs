//! The config parsers on any text: the library's `HubConfig` from TOML and
//! the daemon's whole file (`framehub-cli/src/config.rs`, compiled in here
//! as is: the binary crate has no library to link).

use framehub::codec::FrameDecoder;
use framehub::fuzzing::Session;
use framehub::{HubConfig, ListenerConfig};

/// The daemon's config module, unchanged.
#[allow(dead_code, missing_docs)]
#[path = "../../crates/framehub-cli/src/config.rs"]
mod daemon;

/// Read buffers larger than this are not allocated here: `read_buffer_bytes`
/// has no upper bound yet (issue 18 item 9), and a fuzzer-chosen 4 GiB
/// buffer is an out-of-memory report, not a finding about the parsers.
const MAX_READ_BUFFER: usize = 16 << 20;

/// Parses `data` as both configs. A config that parses and validates
/// serializes to TOML that parses and validates again, to the same text;
/// each of its listeners builds its decoder and its connection core.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(hub) = toml::from_str::<HubConfig>(text)
        && hub.validate().is_ok()
    {
        round_trip(&hub);
        build(&hub);
    }
    if let Ok(file) = daemon::parse(text) {
        hub_valid(&file.hub);
        build(&file.hub);
        let _ = file.sinks();
    }
}

fn hub_valid(hub: &HubConfig) {
    if let Err(e) = hub.validate() {
        panic!("the daemon accepted a hub config the library refuses: {e}");
    }
}

fn round_trip(hub: &HubConfig) {
    let text =
        toml::to_string(hub).unwrap_or_else(|e| panic!("a valid config does not serialize: {e}"));
    let again: HubConfig = toml::from_str(&text).unwrap_or_else(|e| {
        panic!("a valid config serializes to TOML that does not parse: {e}\n{text}")
    });
    hub_valid(&again);
    let text2 = toml::to_string(&again).expect("serialized once");
    assert_eq!(text, text2, "serializing is not stable");
}

fn build(hub: &HubConfig) {
    for l in hub.listeners() {
        let _ = FrameDecoder::new(&l.framing, l.max_frame_bytes.0)
            .with_max_json_depth(l.max_json_depth);
        if buildable(&l) {
            // A token file is not read here: its path is the fuzzer's.
            let mut session = Session::new(&l).expect("tokens from the config");
            let _ = session.read(
                b"{\"node_id\":\"a\",\"token\":\"t\"}\n",
                std::time::Duration::ZERO,
            );
        }
    }
}

fn buildable(l: &ListenerConfig) -> bool {
    l.auth.token_file.is_none()
        && l.auth.tokens_file.is_none()
        && l.read_buffer_bytes.0 <= MAX_READ_BUFFER
}
