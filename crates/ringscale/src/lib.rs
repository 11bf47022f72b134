//! The `ringscale` command: wires the crates of the workspace into subcommands.

mod api_requests;
pub mod cli;
mod client_limits;
mod crds;
mod dev;
mod flags;
mod identity;
mod run;
mod signals;
mod sim;
mod status_page;
mod validate;
