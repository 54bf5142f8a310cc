//! Merging one kaws entry (cluster, user, context of the same name) into a
//! kubeconfig: every other entry is kept type for type, and the file is
//! written 0600 through an O_EXCL temporary and a rename. kaws never writes
//! `insecure-skip-tls-verify`.
//!
//! kubectl reads YAML 1.1, where a plain `y`, `off` or `0755` is a boolean or
//! an octal number; a YAML 1.2 writer would leave such strings unquoted and
//! make the file unreadable to kubectl. So kaws writes the document itself
//! ([`emit`]): every string double-quoted, every other scalar as YAML 1.1
//! reads it. Comments are not kept (kubectl drops them too when it writes).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use serde_yaml::{Mapping, Value};
use zeroize::Zeroizing;

/// How the user entry authenticates.
pub enum UserAuth {
    /// An exec credential plugin (the key stays sealed on disk).
    Exec { command: String, args: Vec<String> },
    /// Certificate and key embedded in the file.
    Embedded { cert_pem: Vec<u8>, key_pem: Zeroizing<Vec<u8>> },
}

pub struct Entry {
    pub name: String,
    pub server: String,
    pub tls_server_name: Option<String>,
    pub ca_pem: Vec<u8>,
    pub user: UserAuth,
}

/// `$KUBECONFIG`'s first file, else `~/.kube/config`.
pub fn default_path() -> Result<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        if let Some(first) = std::env::split_paths(&k).next() {
            return Ok(first);
        }
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --kubeconfig FILE")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn named(name: &str, key: &str, body: Mapping) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), name.into());
    m.insert(key.into(), Value::Mapping(body));
    Value::Mapping(m)
}

/// Replaces the item called `name` in the list `field`, or appends it.
fn upsert(doc: &mut Mapping, field: &str, item: Value) -> Result<()> {
    let list = doc.entry(field.into()).or_insert_with(|| Value::Sequence(Vec::new()));
    if list.is_null() {
        *list = Value::Sequence(Vec::new());
    }
    let Value::Sequence(items) = list else { bail!("the kubeconfig's {field} is not a list") };
    let name = item.get("name").cloned();
    match items.iter_mut().find(|i| i.get("name") == name.as_ref()) {
        Some(existing) => *existing = item,
        None => items.push(item),
    }
    Ok(())
}

/// The kubeconfig text with `entry` merged into `existing`.
pub fn merge(existing: Option<&str>, entry: &Entry) -> Result<Zeroizing<String>> {
    let mut doc = match existing.map(str::trim).filter(|t| !t.is_empty()) {
        None => {
            let mut m = Mapping::new();
            m.insert("apiVersion".into(), "v1".into());
            m.insert("kind".into(), "Config".into());
            m.insert("preferences".into(), Value::Mapping(Mapping::new()));
            m
        }
        Some(text) => match serde_yaml::from_str::<Value>(text).context("the existing kubeconfig is not YAML")? {
            Value::Mapping(m) => m,
            _ => bail!("the existing kubeconfig is not a YAML mapping"),
        },
    };

    let mut cluster = Mapping::new();
    cluster.insert("server".into(), entry.server.clone().into());
    cluster.insert("certificate-authority-data".into(), b64(&entry.ca_pem));
    if let Some(n) = &entry.tls_server_name {
        cluster.insert("tls-server-name".into(), n.clone().into());
    }
    upsert(&mut doc, "clusters", named(&entry.name, "cluster", cluster))?;

    let mut user = Mapping::new();
    match &entry.user {
        UserAuth::Exec { command, args } => {
            let mut exec = Mapping::new();
            exec.insert("apiVersion".into(), "client.authentication.k8s.io/v1".into());
            exec.insert("command".into(), command.clone().into());
            exec.insert("args".into(), Value::Sequence(args.iter().map(|a| a.clone().into()).collect()));
            exec.insert("interactiveMode".into(), "IfAvailable".into());
            exec.insert("provideClusterInfo".into(), false.into());
            user.insert("exec".into(), Value::Mapping(exec));
        }
        UserAuth::Embedded { cert_pem, key_pem } => {
            user.insert("client-certificate-data".into(), b64(cert_pem));
            user.insert("client-key-data".into(), b64(key_pem));
        }
    }
    upsert(&mut doc, "users", named(&entry.name, "user", user))?;

    let mut context = Mapping::new();
    context.insert("cluster".into(), entry.name.clone().into());
    context.insert("user".into(), entry.name.clone().into());
    upsert(&mut doc, "contexts", named(&entry.name, "context", context))?;
    let current = doc.get("current-context").and_then(Value::as_str).unwrap_or("");
    if current.is_empty() {
        doc.insert("current-context".into(), entry.name.clone().into());
    }
    let mut out = Zeroizing::new(String::new());
    emit(&Value::Mapping(doc), 0, &mut out)?;
    Ok(out)
}

/// A double-quoted YAML scalar that every YAML 1.1 and 1.2 reader takes as
/// exactly `s`: quotes, backslashes, control characters and every Unicode
/// line break are escaped.
fn quoted(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A scalar, or an error for what kaws cannot write faithfully.
fn scalar(v: &Value, out: &mut String) -> Result<()> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => quoted(s, out),
        Value::Tagged(t) if !matches!(t.value, Value::Mapping(_) | Value::Sequence(_)) => {
            out.push_str(&t.tag.to_string());
            out.push(' ');
            scalar(&t.value, out)?;
        }
        _ => bail!("the kubeconfig holds a tagged collection, which kaws cannot rewrite faithfully"),
    }
    Ok(())
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => !m.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        _ => false,
    }
}

/// Block-style YAML of `v` at `indent` spaces (the caller has written the
/// key or `- ` that introduces it).
fn emit(v: &Value, indent: usize, out: &mut String) -> Result<()> {
    let pad = " ".repeat(indent);
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 || !out.ends_with("- ") {
                    out.push_str(&pad);
                }
                scalar(k, out)?;
                out.push(':');
                if is_block(val) {
                    out.push('\n');
                    emit(val, indent + 2, out)?;
                } else {
                    out.push(' ');
                    emit(val, indent + 2, out)?;
                }
            }
        }
        Value::Sequence(s) if !s.is_empty() => {
            for item in s {
                out.push_str(&pad);
                out.push_str("- ");
                if is_block(item) {
                    if let Value::Sequence(_) = item {
                        out.push('\n');
                    }
                    emit(item, indent + 2, out)?;
                } else {
                    emit(item, indent + 2, out)?;
                }
            }
        }
        Value::Mapping(_) => out.push_str("{}\n"),
        Value::Sequence(_) => out.push_str("[]\n"),
        other => {
            scalar(other, out)?;
            out.push('\n');
        }
    }
    Ok(())
}

/// Writes `text` to `path` as a 0600 file: an O_EXCL temporary in the same
/// directory, then a rename over the old file.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    // tempfile creates with O_CREAT|O_EXCL and mode 0600.
    let mut tmp = tempfile::Builder::new().prefix(".kaws-tmp-").tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: UserAuth) -> Entry {
        Entry {
            name: "kaws-prod-alice".into(),
            server: "https://api.prod.example.com:6443".into(),
            tls_server_name: None,
            ca_pem: b"CA".to_vec(),
            user,
        }
    }

    #[test]
    fn merge_keeps_other_entries_and_replaces_its_own() {
        let existing = "apiVersion: v1\nkind: Config\ncurrent-context: other\nclusters:\n- name: other\n  cluster:\n    server: https://other:6443\n    extensions: [{name: x, extension: {a: 1}}]\nusers:\n- name: other\n  user:\n    token: abc\ncontexts:\n- name: other\n  context: {cluster: other, user: other}\n";
        let exec = || UserAuth::Exec { command: "/bin/kaws".into(), args: vec!["admin".into()] };
        let once = merge(Some(existing), &entry(exec())).unwrap();
        let twice = merge(Some(&once), &entry(exec())).unwrap();
        assert_eq!(*once, *twice, "merging is idempotent");
        let before: Value = serde_yaml::from_str(existing).unwrap();
        let after: Value = serde_yaml::from_str(&twice).unwrap();
        assert_eq!(after["current-context"], "other");
        assert_eq!(after["clusters"][0], before["clusters"][0]);
        assert_eq!(after["users"][0], before["users"][0]);
        assert_eq!(after["contexts"][0], before["contexts"][0]);
        assert_eq!(after["clusters"].as_sequence().unwrap().len(), 2);
        assert!(!twice.contains("insecure-skip-tls-verify"));
        let fresh = merge(None, &entry(exec())).unwrap();
        let fresh: Value = serde_yaml::from_str(&fresh).unwrap();
        assert_eq!(fresh["current-context"], "kaws-prod-alice");
        assert_eq!(fresh["users"][0]["user"]["exec"]["apiVersion"], "client.authentication.k8s.io/v1");
    }

    #[test]
    fn strings_stay_strings_for_a_yaml_1_1_reader() {
        let hazards = ["y", "n", "yes", "off", "null", "0755", "1e3", "~", "", "a\u{2028}b", "say \"hi\"\n"];
        let mut existing = String::from("apiVersion: v1\nkind: Config\n# a comment\nusers:\n");
        for (i, h) in hazards.iter().enumerate() {
            existing.push_str(&format!(
                "- name: {}\n  user:\n    token: {}\n",
                serde_json::json!(h),
                serde_json::json!(format!("t{i}"))
            ));
        }
        existing.push_str(
            "extensions:\n- name: ext\n  extension: {n: 1, f: 1.5, b: true, z: null, s: \"off\", l: [\"y\", 2]}\n",
        );
        let exec = UserAuth::Exec { command: "/bin/kaws".into(), args: vec!["admin".into()] };
        let merged = merge(Some(&existing), &entry(exec)).unwrap();
        for h in ["y", "n", "yes", "off", "null", "0755", "1e3", "~"] {
            assert!(merged.contains(&format!("\"name\": \"{h}\"")), "{h} must be quoted:\n{}", *merged);
        }
        let before: Value = serde_yaml::from_str(&existing).unwrap();
        let after: Value = serde_yaml::from_str(&merged).unwrap();
        for (i, _) in hazards.iter().enumerate() {
            assert_eq!(after["users"][i], before["users"][i]);
        }
        assert_eq!(after["extensions"], before["extensions"]);
        assert!(!merged.contains('\u{2028}'));
    }
}
