//! Command-line interface: one subcommand per job, parsed with clap.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{crds, dev, run, sim, validate};

/// ringscale: an event-driven autoscaler for Kubernetes that speaks KEDA's API.
#[derive(Debug, Parser)]
#[command(name = "ringscale", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of the keda.sh kinds (or write them to a directory).
    Crds(crds::CrdsArgs),
    /// Check ScaledObject, ScaledJob and (Cluster)TriggerAuthentication manifests offline.
    Validate(validate::ValidateArgs),
    /// Run kube-sim, the built-in Kubernetes API simulator, until Ctrl-C.
    Sim(sim::SimArgs),
    /// Run one replica of a ring against a cluster, until SIGTERM.
    Run(Box<run::RunArgs>),
    /// Run everything locally: kube-sim, a ring of replicas, demo workloads, a live table.
    Dev(dev::DevArgs),
}

impl Args {
    /// Runs the chosen subcommand and returns the process exit code.
    pub fn run(self) -> ExitCode {
        let Self { command } = self;
        match command {
            Command::Crds(args) => crds::run(args),
            Command::Validate(args) => validate::run(args),
            Command::Sim(args) => sim::run(args),
            Command::Run(args) => run::run(*args),
            Command::Dev(args) => dev::run(args),
        }
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    Args::parse().run()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Args::command().debug_assert();
    }

    #[test]
    fn times_and_rates_that_would_panic_are_refused_when_the_line_is_read() {
        use clap::Parser as _;
        for line in [
            &["ringscale", "sim", "--workload-delay", "inf"][..],
            &["ringscale", "sim", "--hpa-sync-period", "NaN"],
            &["ringscale", "run", "--lease-duration=-1"],
            &["ringscale", "run", "--poll-grain", "1e30"],
            &["ringscale", "run", "--kube-api-qps", "inf"],
            &["ringscale", "run", "--report-writes-per-second=-2"],
        ] {
            let err = super::Args::try_parse_from(line).expect_err("must be refused");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{line:?}: {err}"
            );
        }
        assert!(
            super::Args::try_parse_from([
                "ringscale",
                "run",
                "--name",
                "x",
                "--kube-api-qps",
                "1e-30"
            ])
            .is_ok()
        );
        assert!(super::Args::try_parse_from(["ringscale", "sim", "--workload-delay", "0"]).is_ok());
    }
}
