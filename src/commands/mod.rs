//! One thin file per command: resolve inputs, call the domain, print.

mod init;
mod key;
mod misc;

use anyhow::Result;

use crate::cli::{Command, KeyCommand};
use crate::context::Ctx;

pub fn dispatch(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Init(args) => init::run(ctx, args),
        Command::Key(KeyCommand::Add { name, cert }) => key::add(ctx, &name, &cert),
        Command::Key(KeyCommand::Update { cert }) => key::update(ctx, &cert),
        Command::Key(KeyCommand::Remove { name }) => key::remove(ctx, &name),
        Command::Key(KeyCommand::List) => key::list(ctx),
        Command::Completions { shell } => misc::completions(shell),
        Command::Man { out_dir } => misc::man(out_dir.as_deref()),
    }
}
