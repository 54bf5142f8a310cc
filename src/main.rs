//! kaws: Kubernetes clusters on AWS whose credentials live OpenPGP-sealed in
//! one Git repository. `main` parses, builds the context, dispatches, and
//! maps the outcome to a documented exit code.

mod aws;
mod cli;
mod cluster;
mod commands;
mod context;
mod error;
mod fault;
mod identity;
mod kubeconfig;
mod name;
mod operator;
mod pki;
mod render;
mod repo;
mod text;
mod tomlfile;
mod vault;

use std::process::ExitCode;

use clap::Parser;

use crate::error::Exit;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when a reader (`| head`) goes away.
    // SAFETY: called first thing, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage.into() } else { Exit::Success.into() };
        }
    };
    let result = context::Ctx::new(cli.global).and_then(|ctx| commands::dispatch(&ctx, cli.command));
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => error::report(&e).into(),
    }
}
