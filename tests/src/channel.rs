//! Fixtures for cross-instance tests: an in-process [`Invalidation`] channel that can be cut,
//! and a TCP proxy in front of a real service that can be cut (so a test can make PostgreSQL or
//! Redis unreachable to one client without stopping the server other tests use).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use keygate::{Invalidated, Invalidation, InvalidationError, Subscription};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

/// An in-process pub/sub channel of invalidations, like Redis pub/sub between instances.
#[derive(Clone, Debug)]
pub struct MemoryChannel {
    tx: broadcast::Sender<Invalidated>,
    /// Bumped by [`MemoryChannel::cut`]: every open subscription fails.
    cuts: watch::Sender<u64>,
    down: Arc<AtomicBool>,
    published: Arc<AtomicUsize>,
    subscribes: Arc<AtomicUsize>,
    store_publishes: bool,
    liveness_bound: Option<std::time::Duration>,
}

impl Default for MemoryChannel {
    fn default() -> Self {
        Self::new(false)
    }
}

impl MemoryChannel {
    /// A channel; `store_publishes` is what it answers to `published_by_store`.
    pub fn new(store_publishes: bool) -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            cuts: watch::channel(0).0,
            down: Arc::new(AtomicBool::new(false)),
            published: Arc::new(AtomicUsize::new(0)),
            subscribes: Arc::new(AtomicUsize::new(0)),
            store_publishes,
            liveness_bound: None,
        }
    }

    /// What the channel answers to `liveness_bound` (default `None`: no bound stated).
    #[must_use]
    pub fn with_liveness_bound(mut self, bound: std::time::Duration) -> Self {
        self.liveness_bound = Some(bound);
        self
    }

    /// Breaks every open subscription (as a killed connection would).
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// While down, publishing and subscribing fail; going down also cuts open subscriptions.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.cut();
        }
    }

    /// Messages published so far (successfully).
    pub fn published(&self) -> usize {
        self.published.load(Ordering::SeqCst)
    }

    /// Successful subscriptions so far.
    pub fn subscribes(&self) -> usize {
        self.subscribes.load(Ordering::SeqCst)
    }

    fn check_up(&self) -> Result<(), InvalidationError> {
        if self.down.load(Ordering::SeqCst) {
            Err(InvalidationError::new(
                "simulated outage: connection refused",
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Invalidation for MemoryChannel {
    async fn publish(&self, what: Invalidated) -> Result<(), InvalidationError> {
        self.check_up()?;
        // No subscriber is not an error (as with Redis PUBLISH).
        let _ = self.tx.send(what);
        self.published.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, InvalidationError> {
        self.check_up()?;
        let mut cuts = self.cuts.subscribe();
        cuts.mark_unchanged();
        self.subscribes.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemorySubscription {
            rx: self.tx.subscribe(),
            cuts,
        }))
    }

    fn published_by_store(&self) -> bool {
        self.store_publishes
    }

    fn liveness_bound(&self) -> Option<std::time::Duration> {
        self.liveness_bound
    }
}

struct MemorySubscription {
    rx: broadcast::Receiver<Invalidated>,
    cuts: watch::Receiver<u64>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Invalidated, InvalidationError> {
        tokio::select! {
            received = self.rx.recv() => received.map_err(InvalidationError::new),
            _ = self.cuts.changed() => Err(InvalidationError::new("simulated cut: connection reset")),
        }
    }
}

/// A listener on a free loopback port, and its address.
async fn loopback_listener() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
    let addr = listener.local_addr().expect("proxy addr");
    (listener, addr)
}

/// A TCP proxy on 127.0.0.1 forwarding to `target`; [`TcpProxy::cut`] resets every
/// connection through it and refuses new ones until [`TcpProxy::restore`].
#[derive(Debug)]
pub struct TcpProxy {
    addr: std::net::SocketAddr,
    cut: watch::Sender<bool>,
    /// Connections being forwarded now.
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Counts one forwarded connection while it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(open))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TcpProxy {
    /// Starts a proxy to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let (listener, addr) = loopback_listener().await;
        let (cut, cut_rx) = watch::channel(false);
        let target = target.to_owned();
        let open = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&open);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_rx.borrow() {
                    // Refused: closed at once (the client reads EOF or a reset).
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cut_rx = cut_rx.clone();
                let open = Open::new(&counter);
                tokio::spawn(async move {
                    let _open = open;
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {
                            // Reset rather than a graceful close: what a dead server looks like.
                            let _ = client.set_zero_linger();
                        }
                    }
                });
            }
        });
        Self {
            addr,
            cut,
            open,
            task,
        }
    }

    /// The proxy's `host:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Resets every connection and refuses new ones; returns once every connection it was
    /// forwarding is closed (at most 5 s), so a loaded machine cannot let a request slip
    /// through a connection not yet reset.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy on 127.0.0.1 forwarding to `target` that keeps a copy of every byte the clients
/// send: what a database server receives, SQL text and bound parameters included (use it
/// without TLS, or it records ciphertext).
#[derive(Debug)]
pub struct RecordingProxy {
    addr: std::net::SocketAddr,
    sent: Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    /// Starts a proxy to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (listener, addr) = loopback_listener().await;
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let target = target.to_owned();
        let record = Arc::clone(&sent);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let upstream = async {
                        let mut buf = vec![0_u8; 16 * 1024];
                        loop {
                            match client_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    record
                                        .lock()
                                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                                        .extend_from_slice(&buf[..n]);
                                    if server_tx.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = server_tx.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                        let _ = client_tx.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Self { addr, sent, task }
    }

    /// The proxy's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Every byte the clients sent so far.
    pub fn sent(&self) -> Vec<u8> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
