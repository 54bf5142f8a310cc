//! One thin file per command: resolve inputs, call the domain, print.

mod admin;
mod audit;
pub(crate) mod cluster;
mod init;
pub(crate) mod key;
mod misc;

use anyhow::Result;

use crate::identity::Admins;
use crate::repo::{Config, Repo};

use crate::cli::{AdminCommand, ClusterCommand, Command, KeyCommand};
use crate::context::Ctx;

pub fn dispatch(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Init(args) => init::run(ctx, args),
        Command::Key(KeyCommand::Add { name, cert, allow_duplicate_uid }) => {
            key::add(ctx, &name, &cert, allow_duplicate_uid)
        }
        Command::Key(KeyCommand::Update { cert }) => key::update(ctx, &cert),
        Command::Key(KeyCommand::Remove { name }) => key::remove(ctx, &name),
        Command::Key(KeyCommand::List) => key::list(ctx),
        Command::Cluster(ClusterCommand::Init(args)) => cluster::init(ctx, args),
        Command::Cluster(ClusterCommand::Certs { cluster, expiring_within }) => {
            cluster::certs(ctx, &cluster, expiring_within)
        }
        Command::Cluster(ClusterCommand::Reencrypt {
            cluster,
            primaries,
            rotate,
            no_rotate,
            promote,
            finish_rotation,
        }) => {
            let mode = match (rotate, no_rotate, promote, finish_rotation) {
                (_, _, _, true) => cluster::Mode::Finish,
                (_, _, true, _) => cluster::Mode::Promote,
                (true, ..) => cluster::Mode::Rotate,
                (_, true, ..) => cluster::Mode::NoRotate,
                _ => cluster::Mode::Reseal,
            };
            cluster::reencrypt(ctx, &cluster, &primaries, mode)
        }
        Command::Cluster(ClusterCommand::Render { cluster, role, index, endpoint, out, parameters }) => match role {
            Some(role) if !parameters => {
                cluster::render(ctx, &cluster, role, index, endpoint.as_deref(), out.as_deref())
            }
            _ => cluster::render_parameters(ctx, &cluster),
        },
        Command::Cluster(ClusterCommand::Token { cluster, renew, ttl_hours }) => {
            cluster::token(ctx, &cluster, renew.then_some(ttl_hours))
        }
        Command::Cluster(ClusterCommand::Renew { cluster, within, all }) => cluster::renew(ctx, &cluster, within, all),
        Command::Cluster(ClusterCommand::Plan { cluster }) => cluster::plan(ctx, &cluster),
        Command::Cluster(ClusterCommand::Apply { cluster, yes, parallelism, update_image, no_wait, wait_minutes }) => {
            let wait = (!no_wait).then(|| std::time::Duration::from_secs(60 * wait_minutes));
            cluster::apply(ctx, &cluster, yes, parallelism, update_image, wait)
        }
        Command::Cluster(ClusterCommand::Status { cluster, endpoint }) => {
            cluster::status(ctx, &cluster, endpoint.as_deref())
        }
        Command::Cluster(ClusterCommand::Destroy { cluster, yes, force }) => {
            cluster::destroy(ctx, &cluster, yes, force)
        }
        Command::Admin(AdminCommand::Create { cluster, name }) => admin::create(ctx, &cluster, &name),
        Command::Admin(AdminCommand::Sign { cluster, name, days }) => admin::sign(ctx, &cluster, &name, days),
        Command::Admin(AdminCommand::Install { cluster, name, kubeconfig, embed_key }) => {
            admin::install(ctx, &cluster, &name, kubeconfig.as_deref(), embed_key)
        }
        Command::Admin(AdminCommand::Credential { cluster, name }) => admin::credential(ctx, &cluster, &name),
        Command::Admin(AdminCommand::Revoke { cluster, name }) => admin::revoke(ctx, &cluster, &name),
        Command::Admin(AdminCommand::List { cluster }) => admin::list(ctx, &cluster),
        Command::Audit { trust_root } => audit::audit(ctx, trust_root.as_deref()),
        Command::Trust { commit, accept_rewind } => audit::trust(ctx, commit.as_deref(), accept_rewind),
        Command::Completions { shell } => misc::completions(shell),
        Command::Man { out_dir } => misc::man(out_dir.as_deref()),
    }
}

/// The repository with its checked administrator set; `change` also
/// refuses a dirty working tree.
pub(crate) struct Opened {
    pub repo: Repo,
    pub config: Config,
    pub admins: Admins,
}

pub(crate) fn open(ctx: &Ctx, change: bool) -> Result<Opened> {
    let repo = ctx.repo()?;
    // Fail closed: nothing in the repository (nor the journal of an
    // interrupted change) is believed until HEAD is authenticated from the
    // pinned trust root.
    repo.authenticate(&ctx.policy, ctx.now)?;
    repo.recover()?;
    if change {
        repo.ensure_clean()?;
    }
    let config = repo.config()?;
    let admins = repo.admins(&config, &ctx.policy, ctx.now)?;
    Ok(Opened { repo, config, admins })
}
