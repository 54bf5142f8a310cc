//! `kaws cluster certs`: an offline report of every certificate.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::Loaded;
use crate::cli::Output;
use crate::context::Ctx;
use crate::error::{failed, refused};
use crate::operator::Operator;
use crate::pki::{inspect, table};
use crate::repo::Repo;

#[derive(Serialize)]
struct Row {
    path: String,
    ca: String,
    subject: String,
    sans: Vec<String>,
    serial: String,
    not_after: String,
    days_left: i64,
    status: String,
    problem: Option<String>,
}

impl Row {
    /// A row for a certificate that could not be read at all.
    fn unreadable(path: String, ca: String, status: &str, problem: String) -> Row {
        Row {
            path,
            ca,
            subject: String::new(),
            sans: vec![],
            serial: String::new(),
            not_after: String::new(),
            days_left: 0,
            status: status.into(),
            problem: Some(problem),
        }
    }
}

#[derive(Serialize)]
struct Report {
    cluster: String,
    rotation_generation: u32,
    rotation_state: crate::cluster::rotation::State,
    key_match_checked: bool,
    key_match_note: Option<String>,
    certificates: Vec<Row>,
}

/// (path, issuing CA path) of every certificate, CAs first (with the staged
/// CAs of a rotation in that phase).
fn entries(loaded: &Loaded, staged: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        table::CaId::ALL.iter().map(|c| (c.path().to_owned(), c.path().to_owned())).collect();
    if staged {
        let dir = crate::cluster::rotate::STAGED;
        out.extend(table::CaId::ALL.iter().map(|c| (format!("{dir}/{}", c.path()), format!("{dir}/{}", c.path()))));
    }
    out.extend(table::leaves(&loaded.spec).into_iter().map(|l| (l.path, l.ca.path().to_owned())));
    out
}

pub fn certs(ctx: &Ctx, raw: &str, expiring_within: Option<u32>) -> Result<()> {
    let (crate::commands::Opened { repo, admins, .. }, loaded) = super::open_cluster(ctx, raw, false)?;
    let threshold = i64::from(expiring_within.unwrap_or(30));
    let now = ctx.unix_now();

    let (op, note) = match operator_if_primary(ctx, &repo, &admins, &loaded) {
        Ok(op) => (Some(op), None),
        Err(why) => (None, Some(why)),
    };
    let record: crate::cluster::rotation::Record =
        repo.read_toml(&loaded.path(crate::cluster::rotation::ROTATION_FILE))?.unwrap_or_default();
    let staged = record.state == crate::cluster::rotation::State::Staged;
    let mut pems: BTreeMap<String, String> = BTreeMap::new();
    for (path, _) in entries(&loaded, staged) {
        if let Some(b) = repo.read_head(&loaded.path(&format!("pki/{path}.crt")))? {
            pems.insert(path, String::from_utf8_lossy(&b).into_owned());
        }
    }
    let mut rows = Vec::new();
    for (path, ca) in entries(&loaded, staged) {
        let Some(pem) = pems.get(&path) else {
            rows.push(Row::unreadable(path, ca, "missing", "the certificate file is missing".into()));
            continue;
        };
        let facts = match inspect::facts(pem) {
            Ok(f) => f,
            Err(e) => {
                rows.push(Row::unreadable(path, ca, "invalid", e.to_string()));
                continue;
            }
        };
        let days_left = (facts.not_after - now).div_euclid(86_400);
        let ca_pem = pems.get(&ca).cloned().unwrap_or_default();
        let mut status = if facts.not_after <= now {
            "expired"
        } else if days_left < threshold {
            "expiring"
        } else {
            "ok"
        }
        .to_owned();
        let mut problem = None;
        if let Err(e) = inspect::verify_chain(pem, &ca_pem) {
            status = "chain broken".into();
            problem = Some(e);
        } else if let Some(op) = &op {
            if let Err(e) = super::open_checked(ctx, &repo, &loaded, op, &format!("pki/{path}.key.pgp")) {
                status = "key mismatch".into();
                problem = Some(format!("{e:#}"));
            }
        }
        rows.push(Row {
            path,
            ca,
            subject: facts.subject,
            sans: facts.sans.iter().map(|s| s.to_string()).collect(),
            serial: facts.serial,
            not_after: crate::context::rfc3339_unix(facts.not_after),
            days_left,
            status,
            problem,
        });
    }
    let report = Report {
        cluster: loaded.name.to_string(),
        rotation_generation: record.generation,
        rotation_state: record.state,
        key_match_checked: op.is_some(),
        key_match_note: note,
        certificates: rows,
    };
    print_report(ctx.output, &report)?;

    let broken: Vec<&Row> =
        report.certificates.iter().filter(|r| !matches!(r.status.as_str(), "ok" | "expiring" | "expired")).collect();
    if !broken.is_empty() {
        let paths: Vec<&str> = broken.iter().map(|r| r.path.as_str()).collect();
        return Err(refused(format!("{} certificate(s) of {} failed their checks: {}", broken.len(), loaded.name, paths.join(", ")))
            .hint("restore clusters/CLUSTER/pki from a reviewed commit (git log), or rotate with `kaws cluster reencrypt --rotate`")
            .into());
    }
    if let Some(days) = expiring_within {
        let soon: Vec<&Row> = report.certificates.iter().filter(|r| r.days_left < i64::from(days)).collect();
        if !soon.is_empty() {
            return Err(failed(format!("{} certificate(s) of {} expire within {days} days", soon.len(), loaded.name))
                .hint(format!("renew them with `kaws cluster renew {} --within {days}`", loaded.name))
                .into());
        }
    }
    Ok(())
}

fn print_report(output: Output, report: &Report) -> Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let state = match report.rotation_state {
        crate::cluster::rotation::State::Settled => "settled",
        crate::cluster::rotation::State::Staged => {
            "STAGED (new CAs in pki/staged/ are trusted, not yet signing; next: --promote)"
        }
        crate::cluster::rotation::State::Promoted => {
            "PROMOTED (bundles trust the retired CAs too; next: --finish-rotation)"
        }
    };
    println!("Cluster {}  rotation generation {}, {state}", report.cluster, report.rotation_generation);
    for r in &report.certificates {
        println!("{:<28} {:<14} {:>6} days  {}  (CA {})", r.path, r.status, r.days_left, r.not_after, r.ca);
        // Certificate text is the issuer's choice: escaped for the terminal.
        let esc = |s: &str| crate::text::escape(s).into_owned();
        println!("    subject {}  serial {}", esc(&r.subject), r.serial);
        if !r.sans.is_empty() {
            println!("    SANs {}", esc(&r.sans.join(", ")));
        }
        if let Some(p) = &r.problem {
            println!("    problem: {}", esc(p));
        }
    }
    match &report.key_match_note {
        None => println!("Every certificate's public key was checked against its sealed private key."),
        Some(n) => println!("Key match not checked: {n}."),
    }
    Ok(())
}

/// The operator if it can decrypt this cluster's keys; otherwise why not.
fn operator_if_primary(
    ctx: &Ctx,
    repo: &Repo,
    admins: &crate::identity::Admins,
    loaded: &Loaded,
) -> Result<Operator, String> {
    let op = ctx.operator(repo, admins).map_err(|e| format!("no operator key ({e})"))?;
    if !loaded.primaries.contains(&op.fingerprint()) {
        return Err(format!(
            "the operator {} is not a primary of {}; only primaries can open its keys",
            op.fingerprint(),
            loaded.name
        ));
    }
    Ok(op)
}
