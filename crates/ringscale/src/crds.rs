//! `ringscale crds`: the CRDs generated from crates/api.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `ringscale crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

/// Prints or writes the CRDs.
pub fn run(args: CrdsArgs) -> ExitCode {
    let CrdsArgs { write } = args;
    match emit(write) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn emit(write: Option<PathBuf>) -> anyhow::Result<()> {
    let files = ringscale_api::crds::files().context("rendering the CRDs as YAML")?;
    match write {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, text) in files {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            for (_, text) in files {
                print!("{text}");
            }
        }
    }
    Ok(())
}
