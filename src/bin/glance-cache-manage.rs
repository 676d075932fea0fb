//! glance-cache-manage: list, queue and delete images in a glance-api's cache.

use std::process::ExitCode;

use clap::Parser;
use glance_operator::tools::manage::{ManageArgs, run};

fn main() -> ExitCode {
    let args = ManageArgs::parse();
    let stdin = std::io::stdin();
    match run(&args, &mut std::io::stdout(), &mut stdin.lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glance-cache-manage: {e}");
            ExitCode::FAILURE
        }
    }
}
