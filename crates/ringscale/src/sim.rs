//! `ringscale sim`: run kube-sim on its own, as a Kubernetes API for kubectl and tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ringscale_kube_sim::{Config, KubeSim};

/// Prints a line; a closed stdout (the reader went away) is not a reason to panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Arguments of `ringscale sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Where to write the kubeconfig.
    #[arg(
        long,
        env = "RINGSCALE_SIM_KUBECONFIG",
        value_name = "FILE",
        default_value = "kube-sim.kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "RINGSCALE_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Do not run the simulated controllers (workloads, Jobs, HPA).
    #[arg(long, env = "RINGSCALE_SIM_NO_CONTROLLERS")]
    no_controllers: bool,
    /// Seconds before a workload's status follows its spec.
    #[arg(
        long,
        env = "RINGSCALE_SIM_WORKLOAD_DELAY",
        default_value = "0.5",
        value_parser = crate::flags::seconds
    )]
    workload_delay: Duration,
    /// HPA controller sync period in seconds (at least 0.1).
    #[arg(
        long,
        env = "RINGSCALE_SIM_HPA_SYNC",
        default_value = "15",
        value_parser = crate::flags::seconds
    )]
    hpa_sync_period: Duration,
}

/// Starts the simulator and serves until Ctrl-C or SIGTERM.
pub fn run(args: SimArgs) -> ExitCode {
    let SimArgs {
        kubeconfig,
        listen,
        no_controllers,
        workload_delay,
        hpa_sync_period,
    } = args;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let config = Config {
            bind: listen,
            controllers: !no_controllers,
            workload_delay,
            hpa_sync_period: hpa_sync_period.max(Duration::from_millis(100)),
            ..Config::default()
        };
        let sim = match KubeSim::start(config).await {
            Ok(sim) => sim,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(err) = sim.write_kubeconfig(&kubeconfig) {
            eprintln!("error: cannot write {}: {err}", kubeconfig.display());
            return ExitCode::FAILURE;
        }
        // Handlers first, then the announcement (a SIGTERM right after it must be clean).
        let stop = crate::signals::shutdown();
        say!("kube-sim listening on {}", sim.url());
        say!("kubeconfig written to {}", kubeconfig.display());
        say!(
            "export KUBECONFIG={}",
            kubeconfig
                .canonicalize()
                .unwrap_or(kubeconfig.clone())
                .display()
        );
        say!("admin endpoint: {}/_sim/stats (authenticated)", sim.url());
        stop.await;
        say!("stopping");
        sim.shutdown().await;
        ExitCode::SUCCESS
    })
}
