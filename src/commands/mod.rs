//! One thin file per command: resolve inputs, call the domain, print.

mod cluster;
mod init;
pub(crate) mod key;
mod misc;

use anyhow::Result;

use crate::cli::{ClusterCommand, Command, KeyCommand};
use crate::context::Ctx;

pub fn dispatch(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Init(args) => init::run(ctx, args),
        Command::Key(KeyCommand::Add { name, cert }) => key::add(ctx, &name, &cert),
        Command::Key(KeyCommand::Update { cert }) => key::update(ctx, &cert),
        Command::Key(KeyCommand::Remove { name }) => key::remove(ctx, &name),
        Command::Key(KeyCommand::List) => key::list(ctx),
        Command::Cluster(ClusterCommand::Init(args)) => cluster::init(ctx, args),
        Command::Cluster(ClusterCommand::Certs { cluster, expiring_within }) => {
            cluster::certs(ctx, &cluster, expiring_within)
        }
        Command::Cluster(ClusterCommand::Renew { cluster, within, all }) => cluster::renew(ctx, &cluster, within, all),
        Command::Completions { shell } => misc::completions(shell),
        Command::Man { out_dir } => misc::man(out_dir.as_deref()),
    }
}
