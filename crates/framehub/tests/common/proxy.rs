//! A fault-injecting TCP proxy for the client tests: it forwards real
//! connections to a real hub and, on command, cuts them (reset), refuses
//! new ones, stalls them (stops reading, so buffers fill), or drops their
//! data silently in both directions (a half-open link: writes succeed,
//! nothing arrives, no FIN, no reset).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a link does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass them on.
    Forward,
    /// Stop reading: the sender's buffers fill and its writes block.
    Stall,
    /// Read and discard, both ways: the half-open link.
    Blackhole,
}

struct Link {
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    accepted: Arc<AtomicU64>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 (ephemeral port) forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = listen("127.0.0.1:0".parse().expect("addr"));
        let addr = listener.local_addr().expect("local addr");
        let proxy = Proxy {
            addr,
            target,
            links: Arc::new(Mutex::new(Vec::new())),
            accepted: Arc::new(AtomicU64::new(0)),
            acceptor: Mutex::new(None),
        };
        proxy.serve(listener);
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Open links now.
    pub fn open_links(&self) -> usize {
        let mut links = self.links.lock();
        links.retain(|l| !l.task.is_finished());
        links.len()
    }

    fn serve(&self, listener: TcpListener) {
        let links = self.links.clone();
        let accepted = self.accepted.clone();
        let target = self.target;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (mode, mode_rx) = watch::channel(Mode::Forward);
                let task = tokio::spawn(link(client, target, mode_rx));
                links.lock().push(Link { mode, task });
            }
        });
        *self.acceptor.lock() = Some(task);
    }

    /// Resets every open link (both ends see a reset); new connections are
    /// still accepted.
    pub fn cut(&self) {
        for link in self.links.lock().drain(..) {
            link.task.abort();
        }
    }

    /// Cuts every link and stops listening: connects are refused from the
    /// moment this returns.
    pub async fn down(&self) {
        let acceptor = self.acceptor.lock().take();
        if let Some(acceptor) = acceptor {
            acceptor.abort();
            // An aborted task is dropped, with its listener, only when the
            // runtime gets to it; until then a connect could still be
            // accepted and forwarded.
            let _ = acceptor.await;
        }
        self.cut();
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        // The aborted acceptor drops its listener asynchronously; retry
        // until the port is free.
        for _ in 0..100 {
            if let Ok(listener) = try_listen(self.addr) {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot listen on {} again", self.addr);
    }

    /// Switches every open link to `mode`; new links forward.
    pub fn set_mode(&self, mode: Mode) {
        for link in self.links.lock().iter() {
            link.mode.send_replace(mode);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(acceptor) = self.acceptor.lock().take() {
            acceptor.abort();
        }
        self.cut();
    }
}

fn try_listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

fn listen(addr: SocketAddr) -> TcpListener {
    try_listen(addr).expect("proxy listens")
}

async fn link(client: TcpStream, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    // Dropping a socket with linger 0 resets it: an aborted link looks
    // like a connection reset to both ends.
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
        let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, mode.clone()),
        pump(server_read, client_write, mode),
    );
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::Stall {
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    // Pass the end on; the other direction goes on until
                    // it ends too.
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    // The mode may have changed while the read was
                    // pending: bytes read after a change obey it.
                    loop {
                        let now = *mode.borrow_and_update();
                        if now == Mode::Stall {
                            if mode.changed().await.is_err() {
                                return;
                            }
                            continue;
                        }
                        if now == Mode::Forward && to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        break;
                    }
                }
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
