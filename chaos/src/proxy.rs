//! Replication traffic between the replicas goes through a TCP proxy in front of each replica's
//! replication port (the replica advertises the proxy's address in the ring). A partition cuts
//! every connection to or from the cut-off replicas there, in both directions: connections *to*
//! a replica are known by the proxy they reach; connections *from* a replica are known by the
//! process that owns the client socket (looked up in `/proc/net/tcp` and `/proc/<pid>/fd`), so
//! no network namespace or root is needed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The proxies and the partition in force.
#[derive(Clone)]
pub(crate) struct Net {
    inner: Arc<Inner>,
}

struct Inner {
    /// pid → replica name.
    pids: Mutex<HashMap<u32, String>>,
    /// Replicas cut off from every peer.
    cut: watch::Sender<HashSet<String>>,
}

impl Default for Net {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                pids: Mutex::default(),
                cut: watch::Sender::new(HashSet::new()),
            }),
        }
    }
}

impl Net {
    /// Starts a proxy for replica `name` whose replication server listens on `backend`;
    /// returns the proxy's port.
    pub(crate) async fn front(&self, name: &str, backend: u16) -> anyhow::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let net = self.clone();
        let server = name.to_owned();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let client = net.process_of(peer.port(), port);
                let net = net.clone();
                let server = server.clone();
                tokio::spawn(async move { net.carry(stream, &server, client, backend).await });
            }
        });
        Ok(port)
    }

    /// Records which replica a process is.
    pub(crate) fn started(&self, name: &str, pid: u32) {
        self.inner
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pid, name.to_owned());
    }

    /// Cuts `names` off from every peer (open connections are closed at once).
    pub(crate) fn partition(&self, names: &[String]) {
        self.inner.cut.send_replace(names.iter().cloned().collect());
    }

    /// Ends the partition.
    pub(crate) fn heal(&self) {
        self.inner.cut.send_replace(HashSet::new());
    }

    fn is_cut(&self, server: &str, client: Option<&str>) -> bool {
        let cut = self.inner.cut.borrow();
        cut.contains(server) || client.is_some_and(|c| cut.contains(c))
    }

    async fn carry(
        &self,
        mut stream: TcpStream,
        server: &str,
        client: Option<String>,
        backend: u16,
    ) {
        let mut changes = self.inner.cut.subscribe();
        if self.is_cut(server, client.as_deref()) {
            return;
        }
        let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", backend)).await else {
            return;
        };
        loop {
            tokio::select! {
                _ = copy_bidirectional(&mut stream, &mut upstream) => return,
                changed = changes.changed() => {
                    if changed.is_err() || self.is_cut(server, client.as_deref()) {
                        return;
                    }
                }
            }
        }
    }

    /// The replica whose process owns the client socket `127.0.0.1:<port>` connected to
    /// `127.0.0.1:<to>`.
    fn process_of(&self, port: u16, to: u16) -> Option<String> {
        let inode = socket_inode(port, to)?;
        let target = format!("socket:[{inode}]");
        let pids = self
            .inner
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        pids.into_iter().find_map(|(pid, name)| {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.to_string_lossy() == target.as_str())
                })
                .then_some(name)
        })
    }
}

/// The inode of the TCP socket with local port `port` and remote port `to`, from
/// `/proc/net/tcp` (addresses are `HEXIP:HEXPORT`).
fn socket_inode(port: u16, to: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
        let remote = u16::from_str_radix(fields.get(2)?.rsplit(':').next()?, 16).ok()?;
        let inode = *fields.get(9)?;
        (local == port && remote == to).then(|| inode.to_owned())
    })
}
