use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ringscale: an event-driven autoscaler for Kubernetes that speaks KEDA's API.
#[derive(Debug, Parser)]
#[command(name = "ringscale", version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of the keda.sh kinds as YAML.
    Crds,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Crds => {
            for crd in ringscale_api::crds::all() {
                println!("---");
                print!("{}", serde_saphyr::to_string(&crd).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
    }
}
