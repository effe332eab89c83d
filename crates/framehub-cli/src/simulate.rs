//! `framehub send --simulate N`: a fleet of radar nodes (`node-1`..`node-N`)
//! sending realistic detection frames through the library's client, with
//! fault modes for testing a deployment: reconnect churn, wrong tokens,
//! malformed frames, heartbeat-only nodes.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use framehub::{Client, ClientConfig, ClientCounters, ClientProtocol, NodeIdentity, OutboxPolicy};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::EXIT_BAD_CONFIG;
use crate::send::SendArgs;

/// The longest a simulated node spends flushing when the simulation stops:
/// a simulation against a dead server should still end promptly.
const MAX_CLOSE: Duration = Duration::from_secs(5);
/// The most simulated nodes and frames/s per node: past these, a
/// simulation measures this machine rather than the server.
const MAX_NODES: usize = 100_000;
const MAX_RATE: f64 = 100_000.0;

/// What the fleet does.
#[derive(Debug, Clone)]
pub struct Plan {
    nodes: usize,
    rate: f64,
    duration: Option<Duration>,
    disconnect_after: Option<u64>,
    invalid_token: bool,
    malformed: bool,
    heartbeat_only: bool,
    close_timeout: Duration,
}

impl Plan {
    pub fn from_args(args: &SendArgs, nodes: usize) -> Plan {
        Plan {
            nodes,
            rate: args.rate,
            duration: args.duration,
            disconnect_after: args.disconnect_after,
            invalid_token: args.invalid_token,
            malformed: args.malformed,
            heartbeat_only: args.heartbeat_only,
            close_timeout: args.close_timeout.min(MAX_CLOSE),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(format!("--simulate: between 1 and {MAX_NODES} nodes"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(format!(
                "--rate: frames per second per node, > 0 and at most {MAX_RATE}"
            ));
        }
        if self.disconnect_after == Some(0) {
            return Err("--disconnect-after: at least 1 frame".into());
        }
        Ok(())
    }
}

/// Runs the fleet until `--duration` passes or `signal` fires, then flushes
/// and prints a summary. Exits 0 unless the flags were unusable.
pub async fn run(base: ClientConfig, plan: Plan, signal: impl Future<Output = ()>) -> ExitCode {
    if let Err(e) = plan.validate() {
        eprintln!("framehub send: {e}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let ClientProtocol::Node(identity) = &base.protocol else {
        eprintln!("framehub send: --simulate needs the node protocol");
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let token = identity.token.clone().map(|t| {
        if plan.invalid_token {
            format!("{t}-invalid")
        } else {
            t
        }
    });
    let token = match (token, plan.invalid_token) {
        (None, true) => Some("invalid-token".to_owned()),
        (token, _) => token,
    };
    let started = Instant::now();
    tracing::info!(
        nodes = plan.nodes,
        rate = plan.rate,
        to = %base.addr,
        "simulating radar nodes"
    );
    let plan = Arc::new(plan);
    let stop = CancellationToken::new();
    let mut fleet = JoinSet::new();
    for index in 1..=plan.nodes {
        let node_id = format!("node-{index}");
        let config = ClientConfig {
            protocol: ClientProtocol::Node(NodeIdentity {
                node_id: Some(node_id.clone()),
                token: token.clone(),
                fields: identity.fields.clone(),
            }),
            // A live sensor: when the link is down, the newest readings
            // matter most.
            outbox_policy: OutboxPolicy::DropOldest,
            ..base.clone()
        };
        fleet.spawn(simulate_node(node_id, config, plan.clone(), stop.clone()));
    }
    let until = async {
        match plan.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = signal => {}
        _ = until => {}
    }
    stop.cancel();
    let mut totals = Totals::default();
    while let Some(result) = fleet.join_next().await {
        match result {
            Ok(node) => totals.add(&node),
            Err(e) => tracing::error!(error = %e, "a simulated node failed"),
        }
    }
    eprintln!(
        "framehub send: simulated {} nodes for {:.1}s: frames={} sent={} heartbeats={} connects={} disconnects={} dropped={} unsent={}",
        plan.nodes,
        started.elapsed().as_secs_f64(),
        totals.frames,
        totals.counters.sent,
        totals.counters.heartbeats_sent,
        totals.counters.connects,
        totals.counters.disconnects,
        totals.counters.dropped_outbox_full,
        totals.counters.dropped_unsent,
    );
    ExitCode::SUCCESS
}

#[derive(Debug, Default)]
struct Totals {
    /// Frames the simulation generated.
    frames: u64,
    counters: ClientCounters,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.frames += other.frames;
        let (a, b) = (&mut self.counters, &other.counters);
        a.sent += b.sent;
        a.heartbeats_sent += b.heartbeats_sent;
        a.connects += b.connects;
        a.disconnects += b.disconnects;
        a.dropped_outbox_full += b.dropped_outbox_full;
        a.dropped_unsent += b.dropped_unsent;
    }
}

/// One node: a client per session, a frame per tick; with
/// `--disconnect-after`, a fresh session after every K frames.
async fn simulate_node(
    node_id: String,
    config: ClientConfig,
    plan: Arc<Plan>,
    stop: CancellationToken,
) -> Totals {
    let mut rng = fastrand::Rng::new();
    let mut frames = Frames::new(node_id);
    let mut totals = Totals::default();
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    // Spread the fleet's ticks over one period instead of all at once.
    tokio::select! {
        _ = stop.cancelled() => return totals,
        _ = tokio::time::sleep(period.mul_f64(rng.f64())) => {}
    }
    loop {
        let client = match Client::start(config.clone()) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(node = %frames.node_id, error = %e, "cannot start a client");
                return totals;
            }
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut in_session = 0u64;
        let stopped = loop {
            tokio::select! {
                _ = stop.cancelled() => break true,
                _ = tick.tick() => {}
            }
            if plan.heartbeat_only {
                // The client heartbeats on its own; K counts heartbeats.
                in_session = client.counters().heartbeats_sent;
            } else {
                let frame = if plan.malformed && frames.seq % 5 == 4 {
                    frames.malformed(&mut rng)
                } else {
                    frames.detection(&mut rng)
                };
                // Drop-oldest never refuses; drops are in the counters.
                let _ = client.try_send(frame);
                totals.frames += 1;
                in_session += 1;
            }
            if plan.disconnect_after.is_some_and(|k| in_session >= k) {
                break false;
            }
        };
        // Unsent frames are counted by the client; the summary shows them.
        let _ = client.close(plan.close_timeout).await;
        totals.add(&Totals {
            frames: 0,
            counters: client.counters(),
        });
        if stopped {
            return totals;
        }
    }
}

/// Frame generator of one node: timestamps strictly increase, so the
/// server's dedup never mistakes two frames for one.
struct Frames {
    node_id: String,
    last_timestamp: u64,
    seq: u64,
}

impl Frames {
    fn new(node_id: String) -> Frames {
        Frames {
            node_id,
            last_timestamp: 0,
            seq: 0,
        }
    }

    fn timestamp(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        self.last_timestamp = now.max(self.last_timestamp + 1);
        self.last_timestamp
    }

    /// `{"node_id":..,"timestamp":..,"delay":[..],"doppler":[..],"snr":[..],"adsb":[..]}`
    /// with 1-5 detections: bistatic delay in km, Doppler in Hz, SNR in dB,
    /// and now and then an ADS-B match.
    fn detection(&mut self, rng: &mut fastrand::Rng) -> Bytes {
        self.seq += 1;
        let n = rng.usize(1..=5);
        let mut delay = Vec::with_capacity(n);
        let mut doppler = Vec::with_capacity(n);
        let mut snr = Vec::with_capacity(n);
        let mut adsb = Vec::with_capacity(n);
        for _ in 0..n {
            delay.push(format!("{:.2}", 2.0 + rng.f64() * 118.0));
            doppler.push(format!("{:.2}", rng.f64() * 400.0 - 200.0));
            snr.push(format!("{:.2}", 6.0 + rng.f64() * 24.0));
            adsb.push(if rng.u8(0..5) == 0 {
                format!(
                    r#"{{"hex":"{:06x}","flight":"RYR{}","lat":{:.4},"lon":{:.4},"alt_baro":{}}}"#,
                    rng.u32(0..0xFF_FFFF),
                    rng.u16(100..9999),
                    53.0 + rng.f64(),
                    -6.8 + rng.f64(),
                    rng.u32(10..400) * 100,
                )
            } else {
                "null".to_owned()
            });
        }
        let ts = self.timestamp();
        Bytes::from(format!(
            r#"{{"node_id":"{}","timestamp":{ts},"delay":[{}],"doppler":[{}],"snr":[{}],"adsb":[{}]}}"#,
            self.node_id,
            delay.join(","),
            doppler.join(","),
            snr.join(","),
            adsb.join(","),
        ))
    }

    /// One of four kinds of bad frame a broken node sends, in turn.
    fn malformed(&mut self, rng: &mut fastrand::Rng) -> Bytes {
        self.seq += 1;
        let ts = self.timestamp();
        let node = &self.node_id;
        match (self.seq / 5) % 4 {
            0 => {
                let whole = self.detection_text(ts);
                let cut = rng.usize(1..whole.len() - 1);
                Bytes::from(whole[..cut].to_owned())
            }
            1 => Bytes::from(format!("{node} {ts} delay=40.46 doppler=-27.99")),
            2 => {
                let mut bytes =
                    format!(r#"{{"node_id":"{node}","timestamp":{ts},"note":""#).into_bytes();
                bytes.extend_from_slice(b"\xff\xfe\"}");
                Bytes::from(bytes)
            }
            _ => Bytes::from(format!(r#"{{"node_id":17,"timestamp":{ts}}}"#)),
        }
    }

    fn detection_text(&self, ts: u64) -> String {
        format!(
            r#"{{"node_id":"{}","timestamp":{ts},"delay":[40.46],"doppler":[-27.99],"snr":[12.08],"adsb":[null]}}"#,
            self.node_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_are_valid_radar_frames_with_rising_timestamps() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut frames = Frames::new("node-7".into());
        let mut last = 0;
        for _ in 0..200 {
            let frame = frames.detection(&mut rng);
            let v: serde_json::Value = serde_json::from_slice(&frame).expect("valid JSON");
            assert_eq!(v["node_id"], "node-7");
            let ts = v["timestamp"].as_u64().expect("timestamp");
            assert!(ts > last);
            last = ts;
            let n = v["delay"].as_array().expect("delay").len();
            assert!((1..=5).contains(&n));
            for key in ["doppler", "snr", "adsb"] {
                assert_eq!(v[key].as_array().expect(key).len(), n, "{key}");
            }
            assert!(!frame.contains(&b'\n'));
        }
    }

    #[test]
    fn malformed_frames_are_all_rejected_by_a_json_parser() {
        let mut rng = fastrand::Rng::with_seed(2);
        let mut frames = Frames::new("node-1".into());
        for _ in 0..40 {
            let frame = frames.malformed(&mut rng);
            let parsed = serde_json::from_slice::<serde_json::Value>(&frame);
            let bad = match parsed {
                Err(_) => true,
                Ok(v) => !v["node_id"].is_string(),
            };
            assert!(bad, "{}", String::from_utf8_lossy(&frame));
            assert!(!frame.contains(&b'\n'));
        }
    }
}
