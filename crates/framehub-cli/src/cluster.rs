//! `serve`'s NATS side, started around the hub: the one connection
//! (`[nats]`), the listeners' NATS request handlers, the egress bridge
//! (`framehub.send.<node>`) and the cluster-wide node view that
//! `/api/nodes?scope=cluster` reads. The logic is the library's
//! (`framehub::nats`); this is the wiring.

use std::sync::Arc;
use std::time::Duration;

use framehub::nats::{ConnectionReport, EgressBridge, NatsConfig, NatsError, NodeView};
use framehub::{Handler, Hub};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::config::FileConfig;

/// The connection and what names this instance on it.
#[derive(Clone)]
pub struct Nats {
    /// The client, shared by every NATS feature.
    pub client: framehub::nats::async_nats::Client,
    /// This instance's name (headers, replies, the view).
    pub instance: String,
    /// The settings.
    pub config: NatsConfig,
    /// Why the connection is down, for `/healthz`.
    pub report: ConnectionReport,
}

/// Connects when the config uses NATS; `None` when it does not. Returns
/// while the servers may still be unreachable (the client keeps trying).
pub async fn connect(cfg: &FileConfig) -> Result<Option<Nats>, NatsError> {
    let Some(config) = cfg.nats() else {
        return Ok(None);
    };
    let (client, report) = framehub::nats::connect_reported(&config).await?;
    let instance = config
        .instance
        .clone()
        .unwrap_or_else(framehub::nats::default_instance);
    if !framehub::nats::wait_connected(&client, config.connect_timeout).await {
        tracing::warn!(
            servers = %config.servers.join(","),
            reason = report.last_failure().as_deref().unwrap_or("no answer yet"),
            "NATS not reachable yet; starting anyway, reconnecting in the background"
        );
    }
    Ok(Some(Nats {
        client,
        instance,
        config,
        report,
    }))
}

/// The request handlers of listeners with `handler = { nats = ... }`.
pub fn handlers(cfg: &FileConfig, nats: Option<&Nats>) -> Vec<(String, Handler)> {
    let Some(nats) = nats else {
        return Vec::new();
    };
    cfg.hub
        .listeners()
        .iter()
        .filter_map(|l| {
            let h = l.handler.as_ref()?;
            Some((
                l.name.clone(),
                framehub::nats::request_handler(nats.client.clone(), h),
            ))
        })
        .collect()
}

/// The view, once JetStream has answered; shared with the admin server.
pub type ViewCell = Arc<OnceCell<NodeView>>;

/// The egress bridge and the view, running.
pub struct Cluster {
    _bridge: Option<EgressBridge>,
    /// The node view (empty until the bucket is open).
    pub view: Option<ViewCell>,
    opening: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Starts the bridge and opens the view (in the background, retried
    /// until JetStream answers).
    pub async fn start(nats: Option<&Nats>, hub: &Hub) -> Cluster {
        let Some(nats) = nats else {
            return Cluster {
                _bridge: None,
                view: None,
                opening: None,
            };
        };
        let cfg = &nats.config;
        let bridge = if cfg.egress {
            match EgressBridge::start(
                nats.client.clone(),
                hub.clone(),
                &cfg.subject_prefix,
                nats.instance.clone(),
            )
            .await
            {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::error!("NATS egress bridge not started: {e}");
                    None
                }
            }
        } else {
            None
        };
        let (view, opening) = if cfg.view.enabled {
            let cell: ViewCell = Arc::default();
            let task = tokio::spawn(open_view(nats.clone(), hub.clone(), cell.clone()));
            (Some(cell), Some(task))
        } else {
            (None, None)
        };
        Cluster {
            _bridge: bridge,
            view,
            opening,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = &self.opening {
            t.abort();
        }
    }
}

async fn open_view(nats: Nats, hub: Hub, cell: ViewCell) {
    let mut wait = Duration::from_millis(200);
    loop {
        match NodeView::start(
            nats.client.clone(),
            hub.clone(),
            &nats.config.view,
            nats.instance.clone(),
        )
        .await
        {
            Ok(view) => {
                let _ = cell.set(view);
                return;
            }
            Err(e) => {
                tracing::warn!("NATS node view not open yet: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
