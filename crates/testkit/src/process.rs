//! What the chaos and load-test harnesses share about replica processes: finding the
//! `ringscale` binary, free ports, and a replica process that is killed and reaped on drop.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A replica process, killed (and reaped) on drop.
#[derive(Debug)]
pub struct ReplicaProcess {
    /// Its member name.
    pub name: String,
    /// The process.
    pub child: Child,
    /// Its admin port (health, status page, `/metrics`).
    pub admin: u16,
    /// Its metrics API port.
    pub metrics: u16,
}

impl ReplicaProcess {
    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...).
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -{signal} {} failed",
                self.child.id()
            )))
        }
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago, or why none could be had. Never the same port
/// twice in one process: the OS may hand a just-released port out again at once, and two
/// replicas given one port fail in ways that look like something else (a replica that cannot
/// bind its admin port while the test reads its neighbour's, as a CI run showed).
pub fn try_free_port() -> io::Result<u16> {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    for _ in 0..256 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return Ok(port);
        }
    }
    Err(io::Error::other(
        "the OS kept handing out ports this process was already given",
    ))
}

/// The `ringscale` binary: `explicit` when given, else the one next to the running binary.
pub fn ringscale_bin(explicit: Option<&Path>) -> io::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe()?;
    let sibling = me
        .parent()
        .map(|d| d.join("ringscale"))
        .ok_or_else(|| io::Error::other("no directory for this binary"))?;
    if !sibling.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not found: build it first (cargo build -p ringscale) or pass --ringscale",
                sibling.display()
            ),
        ));
    }
    Ok(sibling)
}
