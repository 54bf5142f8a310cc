//! Cloud-init user-data for the three instance roles, rendered from
//! `templates/` (embedded in the binary) with minijinja in strict mode: an
//! undefined variable is an error. The context is built only from the
//! validated spec and public PKI material, so no secret can reach it, and
//! every string in it has already been validated into a safe type.

pub mod context;

use std::io::Write;

use minijinja::{Environment, UndefinedBehavior};

pub use context::{Context, Role};

/// AWS refuses user-data over 16 KiB (before base64).
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// The CNI kaws installs: Calico (manifest install), pinned by version and
/// by the SHA-256 of `manifests/calico.yaml` at that release tag.
pub const CNI_VERSION: &str = "v3.31.7";
pub const CNI_URL: &str = "https://raw.githubusercontent.com/projectcalico/calico/v3.31.7/manifests/calico.yaml";
pub const CNI_SHA256: &str = "d6d8a489a4ed8e5b8efd8b339047b496ca657b55ee2e3618e791507b0a853e8d";
/// The key that signs pkgs.k8s.io's repositories.
pub const REPO_KEY_FINGERPRINT: &str = "DE15B14486CD377B9E876E1A234654DA9A296436";

const TEMPLATES: &[(&str, &str)] = &[
    ("cloud-init/master.yaml.j2", include_str!("../../templates/cloud-init/master.yaml.j2")),
    ("cloud-init/node.yaml.j2", include_str!("../../templates/cloud-init/node.yaml.j2")),
    ("cloud-init/bastion.yaml.j2", include_str!("../../templates/cloud-init/bastion.yaml.j2")),
    ("scripts/common.sh.j2", include_str!("../../templates/scripts/common.sh.j2")),
    ("scripts/master.sh.j2", include_str!("../../templates/scripts/master.sh.j2")),
    ("scripts/node.sh.j2", include_str!("../../templates/scripts/node.sh.j2")),
    ("scripts/bastion.sh.j2", include_str!("../../templates/scripts/bastion.sh.j2")),
    ("kubeadm/master.yaml.j2", include_str!("../../templates/kubeadm/master.yaml.j2")),
    ("kubeadm/node.yaml.j2", include_str!("../../templates/kubeadm/node.yaml.j2")),
    ("kubeadm/kubelet.yaml.j2", include_str!("../../templates/kubeadm/kubelet.yaml.j2")),
    ("systemd/kaws-bootstrap.service", include_str!("../../templates/systemd/kaws-bootstrap.service")),
    ("systemd/kaws-token.service", include_str!("../../templates/systemd/kaws-token.service")),
    ("systemd/kaws-token.timer", include_str!("../../templates/systemd/kaws-token.timer")),
    ("scripts/token.sh.j2", include_str!("../../templates/scripts/token.sh.j2")),
    ("scripts/approver.sh.j2", include_str!("../../templates/scripts/approver.sh.j2")),
    ("systemd/kaws-approver.service", include_str!("../../templates/systemd/kaws-approver.service")),
    ("systemd/kaws-approver.timer", include_str!("../../templates/systemd/kaws-approver.timer")),
    ("systemd/kaws-refresh.service", include_str!("../../templates/systemd/kaws-refresh.service")),
    ("systemd/kaws-refresh.timer", include_str!("../../templates/systemd/kaws-refresh.timer")),
    ("kubernetes/audit-policy.yaml", include_str!("../../templates/kubernetes/audit-policy.yaml")),
    ("kubernetes/default-deny.yaml.j2", include_str!("../../templates/kubernetes/default-deny.yaml.j2")),
];

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_filter("code", code);
    for (name, source) in TEMPLATES {
        env.add_template(name, source).expect("the embedded templates parse");
    }
    env
}

/// A script or unit without its comment and blank lines, as the user-data
/// carries it (EC2 takes 16 KiB; the templates keep their comments): all
/// but the first line (the shebang) and shellcheck directives.
fn code(text: String) -> String {
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, line)| {
            let t = line.trim_start();
            *i == 0 || !(t.is_empty() || (t.starts_with('#') && !t.starts_with("# shellcheck")))
        })
        .map(|(_, line)| line)
        .collect();
    kept.join("\n") + "\n"
}

fn one(env: &Environment, name: &str, ctx: &minijinja::Value) -> Result<String, minijinja::Error> {
    env.get_template(name)?.render(ctx)
}

/// The user-data (cloud-config text) an instance of `ctx.role` gets.
pub fn user_data(ctx: &Context) -> Result<String, minijinja::Error> {
    let env = environment();
    let base = minijinja::Value::from_serialize(ctx);
    let (cloud, script, kubeadm) = match ctx.role {
        Role::Bastion => ("cloud-init/bastion.yaml.j2", "scripts/bastion.sh.j2", None),
        Role::Master(_) => ("cloud-init/master.yaml.j2", "scripts/master.sh.j2", Some("kubeadm/master.yaml.j2")),
        Role::Node => ("cloud-init/node.yaml.j2", "scripts/node.sh.j2", Some("kubeadm/node.yaml.j2")),
    };
    let rendered = minijinja::context! {
        common_sh => one(&env, "scripts/common.sh.j2", &base)?,
        role_sh => one(&env, script, &base)?,
        kubeadm => kubeadm.map(|k| one(&env, k, &base)).transpose()?.unwrap_or_default(),
        // Master 0 joins too when a cluster already answers (it was replaced).
        kubeadm_join => match ctx.role {
            Role::Master(0) => one(&env, "kubeadm/master.yaml.j2", &minijinja::context! { join => true, ..base.clone() })?,
            _ => String::new(),
        },
        bootstrap_unit => one(&env, "systemd/kaws-bootstrap.service", &base)?,
        token_sh => one(&env, "scripts/token.sh.j2", &base)?,
        token_service => one(&env, "systemd/kaws-token.service", &base)?,
        token_timer => one(&env, "systemd/kaws-token.timer", &base)?,
        approver_sh => one(&env, "scripts/approver.sh.j2", &base)?,
        approver_service => one(&env, "systemd/kaws-approver.service", &base)?,
        approver_timer => one(&env, "systemd/kaws-approver.timer", &base)?,
        refresh_service => one(&env, "systemd/kaws-refresh.service", &base)?,
        refresh_timer => one(&env, "systemd/kaws-refresh.timer", &base)?,
        audit_policy => one(&env, "kubernetes/audit-policy.yaml", &base)?,
        files => ctx.files(&one(&env, "kubernetes/default-deny.yaml.j2", &base)?),
        ..base
    };
    one(&env, cloud, &rendered)
}

/// User-data as sent to EC2: gzip-compressed (cloud-init reads it as is)
/// when the text would not fit AWS's 16 KiB limit.
pub fn encode(text: &str) -> std::io::Result<Vec<u8>> {
    if text.len() <= USER_DATA_LIMIT {
        return Ok(text.as_bytes().to_vec());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes())?;
    gz.finish()
}
