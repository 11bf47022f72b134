//! A TCP proxy that can cut the network between a client and a server, for partition tests: put
//! it between a replica and the API server, or between two replicas.
//!
//! [`Mode::Reset`] closes every connection and refuses new ones (a peer that crashed or a firewall
//! that rejects); [`Mode::Blackhole`] keeps connections open but forwards nothing in either
//! direction (a partition where packets vanish, detected only by timeouts and keepalives).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Open,
    /// Close every connection; new ones are closed at once.
    Reset,
    /// Keep connections but forward nothing; new ones are accepted and held.
    Blackhole,
}

/// A proxy on a loopback port in front of `target`.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) forwarding to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(Mode::Open);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                tokio::spawn(relay(client, target, mode_rx.clone()));
            }
        });
        Ok(FaultProxy { addr, mode, task })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the mode; existing connections follow at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Relays end when they see the sender gone.
        self.mode.send_replace(Mode::Reset);
    }
}

async fn relay(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // Wait while blackholed; give up when reset.
    loop {
        match *mode.borrow_and_update() {
            Mode::Open => break,
            Mode::Reset => return,
            Mode::Blackhole => {}
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Reset => return,
            Mode::Blackhole => {
                // Hold both sockets, read nothing, until the mode changes.
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Open => {}
        }
        // A mode change wins over data that is ready at the same moment ("at once"): bytes
        // written after `set_mode` returned must not slip through.
        tokio::select! {
            biased;
            changed = mode.changed() => if changed.is_err() { return },
            n = cr.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&up[..n]).await.is_err() { return },
            },
            n = sr.read(&mut down) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&down[..n]).await.is_err() { return },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_then_cuts_then_heals() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.set_mode(Mode::Reset);
        let mut rest = Vec::new();
        // The open connection is closed.
        let n = conn.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0);

        proxy.set_mode(Mode::Blackhole);
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        held.write_all(b"lost").await.unwrap();
        let silent =
            tokio::time::timeout(std::time::Duration::from_millis(200), held.read(&mut buf)).await;
        assert!(silent.is_err(), "a blackholed connection delivered data");

        proxy.set_mode(Mode::Open);
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(b"back").await.unwrap();
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
        // The connection held during the blackhole now flows too.
        held.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"lost");
    }
}
