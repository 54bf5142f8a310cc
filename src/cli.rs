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
    /// Create and inspect clusters: spec, PKI, sealed keys
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Authenticate the history from the trust root; exit 0 only if HEAD is authenticated
    Audit {
        /// Audit from this commit instead of the pinned trust root
        #[arg(long, value_name = "COMMIT")]
        trust_root: Option<String>,
    },
    /// Pin (or advance) the trust root of this clone: a commit id shared out of band
    Trust {
        #[arg(required_unless_present = "accept_rewind")]
        commit: Option<String>,
        /// Accept the current HEAD although it does not descend from the newest commit this clone accepted (logged)
        #[arg(long)]
        accept_rewind: bool,
    },
    /// Administrators' client credentials for a cluster
    #[command(subcommand)]
    Admin(AdminCommand),
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
        /// Accept a certificate whose user ID repeats an administrator's name or email
        #[arg(long)]
        allow_duplicate_uid: bool,
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

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster: its spec, CAs, the control-plane certificates, every key sealed to the primaries
    Init(ClusterInitArgs),
    /// Report every certificate of a cluster: CA, subject, SANs, expiry, status
    Certs {
        cluster: String,
        /// Exit 1 when any certificate expires within DAYS (for cron and CI)
        #[arg(long, value_name = "DAYS")]
        expiring_within: Option<u32>,
    },
    /// Change who can decrypt the cluster's keys; removing anyone needs --rotate (or --no-rotate)
    Reencrypt {
        cluster: String,
        /// The complete new set of primaries (repeatable)
        #[arg(long = "primary", value_name = "NAME", required_unless_present_any = ["promote", "finish_rotation"])]
        primaries: Vec<String>,
        /// Stage fresh keys for everything the removed people could read: new CAs the cluster trusts beside the current
        #[arg(long, conflicts_with = "no_rotate")]
        rotate: bool,
        /// Remove people without rotating (they can still read every current key from history)
        #[arg(long)]
        no_rotate: bool,
        /// Sign with the staged CAs: every leaf, key and the bootstrap token anew (once the cluster trusts them)
        #[arg(long, conflicts_with_all = ["rotate", "no_rotate", "primaries", "finish_rotation"])]
        promote: bool,
        /// Drop the retired CAs and service-account key from the bundles, once the cluster has rolled
        #[arg(long, conflicts_with_all = ["rotate", "no_rotate", "primaries"])]
        finish_rotation: bool,
    },
    /// Print the cloud-init user-data an instance of a role would get
    Render {
        cluster: String,
        #[arg(long, value_enum, required_unless_present = "parameters")]
        role: Option<RenderRole>,
        /// Print instead, as JSON, the public SSM parameters apply writes (the certificates, bundles and
        /// public keys each role installs, and the trust generation)
        #[arg(long, conflicts_with_all = ["role", "index", "endpoint", "out"])]
        parameters: bool,
        /// Which master (required for --role master)
        #[arg(long)]
        index: Option<u32>,
        /// The API endpoint's DNS name (default: api.CLUSTER.DOMAIN; the load balancer's once provisioned)
        #[arg(long, value_name = "HOST")]
        endpoint: Option<String>,
        /// Write the bytes EC2 gets (gzip when over 16 KiB) to FILE instead of printing the text
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show the bootstrap token's expiry, or renew its TTL
    Token {
        cluster: String,
        /// Extend the token's lifetime
        #[arg(long)]
        renew: bool,
        /// New lifetime in hours from now (with --renew)
        #[arg(long, default_value_t = crate::cluster::token::DEFAULT_TTL_HOURS, requires = "renew")]
        ttl_hours: u32,
    },
    /// Re-issue leaf certificates that expire soon, keeping their keys
    Renew {
        cluster: String,
        /// Renew leaves that expire within DAYS
        #[arg(long, value_name = "DAYS", default_value_t = 30, conflicts_with = "all")]
        within: u32,
        /// Renew every leaf
        #[arg(long)]
        all: bool,
    },
    /// Show what `apply` would create, update or delete in AWS, and why
    Plan { cluster: String },
    /// Create or repair the cluster's AWS resources to match its spec
    Apply {
        cluster: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        /// At most this many resources change at once (those with the
        /// longest chain of work behind them go first)
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        parallelism: u16,
        /// Pin the latest Amazon Linux 2023 image in cluster.toml (a primary
        /// only); new instances and node versions use it
        #[arg(long)]
        update_image: bool,
        /// Do not wait for the instances to run the repository's trust generation (a rotation phase, a
        /// renewal); `kaws cluster status` shows what each runs
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the instances to run it
        #[arg(long, value_name = "MINUTES", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=1440))]
        wait_minutes: u64,
    },
    /// What runs: each instance (role, address, state, its etcd volume), and
    /// the API endpoint's serving certificate seen through a TLS handshake
    Status {
        cluster: String,
        /// Reach the API at HOST:PORT instead of the load balancer that
        /// outputs.toml records (the TLS name checked stays the API's name)
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Delete every AWS resource tagged for the cluster, then check that none is left
    Destroy {
        cluster: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        /// Also delete what kaws did not make but stands in the way (records
        /// others added to the cluster's private zone)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct ClusterInitArgs {
    pub cluster: String,
    /// The DNS domain; the API is api.CLUSTER.DOMAIN
    #[arg(long)]
    pub domain: String,
    /// The AWS region
    #[arg(long)]
    pub region: String,
    /// An administrator who can decrypt the cluster's keys (repeatable; default: the operator)
    #[arg(long = "primary", value_name = "NAME")]
    pub primaries: Vec<String>,
    /// Who may reach the bastion and the API (repeatable)
    #[arg(long = "admin-cidr", value_name = "CIDR")]
    pub admin_cidrs: Vec<String>,
    /// Accept an admin CIDR of 0.0.0.0/0
    #[arg(long)]
    pub allow_world_admin: bool,
    /// Control-plane instances (odd)
    #[arg(long, default_value_t = 3)]
    pub masters: u32,
    /// Worker nodes
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Availability zones
    #[arg(long, default_value_t = 3)]
    pub azs: u32,
    #[arg(long, default_value = "10.0.0.0/16", value_name = "CIDR")]
    pub vpc_cidr: String,
    #[arg(long, default_value = "10.96.0.0/12", value_name = "CIDR")]
    pub service_cidr: String,
    #[arg(long, default_value = "192.168.0.0/16", value_name = "CIDR")]
    pub pod_cidr: String,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    #[arg(long, default_value = crate::cluster::spec::DEFAULT_KUBERNETES, value_name = "VERSION")]
    pub kubernetes_version: String,
    /// ecdsa-p256, ecdsa-p384 or rsa-3072 (default: kaws.toml's default, else ecdsa-p256)
    #[arg(long, value_name = "ALGORITHM")]
    pub key_algorithm: Option<String>,
    /// CA validity in days
    #[arg(long, default_value_t = 3650, value_name = "DAYS")]
    pub ca_days: u32,
    /// Leaf certificate validity in days
    #[arg(long, default_value_t = 365, value_name = "DAYS")]
    pub leaf_days: u32,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Provisioning choices, recorded in cluster.toml's `[aws]` section.
#[derive(Debug, Args)]
pub struct AwsArgs {
    /// The AMI of every instance (default: the newest Amazon Linux 2023 x86_64 by Amazon)
    #[arg(long, value_name = "AMI")]
    pub image: Option<String>,
    #[arg(long, default_value = "t3.micro", value_name = "TYPE")]
    pub bastion_type: String,
    #[arg(long, default_value = "t3.medium", value_name = "TYPE")]
    pub master_type: String,
    #[arg(long, default_value = "t3.medium", value_name = "TYPE")]
    pub node_type: String,
    /// Encrypted gp3 root volume size of every instance
    #[arg(long, default_value_t = 30, value_name = "GIB")]
    pub root_volume_gib: u32,
    /// One NAT gateway shared by all zones instead of one per zone
    #[arg(long)]
    pub single_nat: bool,
    /// Open NodePorts (30000-32767/tcp) on the nodes to this network (repeatable; default: closed)
    #[arg(long = "nodeport-cidr", value_name = "CIDR")]
    pub nodeport_cidrs: Vec<String>,
    /// A public Route 53 hosted zone id for api.CLUSTER.DOMAIN
    #[arg(long, value_name = "ZONE_ID")]
    pub hosted_zone: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make NAME's client key (sealed to NAME only) and a CSR signed with NAME's OpenPGP key; run by NAME
    Create { cluster: String, name: String },
    /// Verify NAME's CSR against NAME's pinned OpenPGP key and issue the certificate; run by a primary
    Sign {
        cluster: String,
        name: String,
        /// Validity in days (at most 365)
        #[arg(long, default_value_t = crate::pki::csr::DEFAULT_DAYS)]
        days: u32,
    },
    /// Add a kubeconfig context kaws-CLUSTER-NAME; run by NAME
    Install {
        cluster: String,
        name: String,
        /// The kubeconfig to merge into (default: $KUBECONFIG, else ~/.kube/config)
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// Write the private key into the kubeconfig instead of using the exec plugin
        #[arg(long)]
        embed_key: bool,
    },
    /// The kubectl exec credential plugin: prints an ExecCredential
    Credential { cluster: String, name: String },
    /// Remove NAME's certificate and binding and record the revocation; run by a primary
    Revoke { cluster: String, name: String },
    /// List administrators' credentials for a cluster
    List { cluster: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RenderRole {
    Bastion,
    Master,
    Node,
}
