//! The command line: clap structs only. Values stay raw strings here; the
//! commands validate them into types once (names, fingerprints).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kaws",
    version,
    about = "Create and run Kubernetes clusters on AWS; every credential OpenPGP-sealed in one Git repository",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 3 refused by a security check."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The kaws repository (default: found upward from the current directory)
    #[arg(long, global = true, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Output format of read commands
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Say more about what is happening
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// The operator's OpenPGP secret key file (armored or binary); otherwise gpg-agent
    #[arg(long, global = true, env = "KAWS_SECRET_KEY", value_name = "FILE", hide_env_values = true)]
    pub secret_key: Option<PathBuf>,
    /// Act as this administrator (chooses the operator's key in gpg-agent)
    #[arg(long = "as", global = true, value_name = "NAME")]
    pub as_name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a kaws repository with the operator as its founding administrator
    Init(InitArgs),
    /// Manage administrators' OpenPGP certificates (pubkeys/)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (or write one per command into a directory)
    Man {
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory of the new repository (created and git-initialised if needed)
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The founding administrator's name
    #[arg(long, value_name = "NAME")]
    pub admin: String,
    /// The operator's public certificate, when its secret key is in gpg-agent
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add an administrator from a public certificate file
    Add {
        name: String,
        #[arg(value_name = "CERTFILE")]
        cert: PathBuf,
    },
    /// Merge a newer copy of an administrator's certificate (new expiry, subkey, revocation)
    Update {
        #[arg(value_name = "CERTFILE")]
        cert: PathBuf,
    },
    /// Remove an administrator
    Remove { name: String },
    /// List administrators and whether each is usable now
    List,
}
