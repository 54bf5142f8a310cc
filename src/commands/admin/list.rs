//! `kaws admin list CLUSTER`.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::cli::Output;
use crate::cluster::admins::{Revoked, REVOKED_FILE};
use crate::commands::cluster::open_cluster;
use crate::context::Ctx;

#[derive(Serialize, Default)]
struct Row {
    name: String,
    status: &'static str,
    serial: Option<String>,
    expires: Option<String>,
    /// Why a certificate on file does not count (status `ignored`).
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

pub fn list(ctx: &Ctx, cluster: &str) -> Result<()> {
    let (crate::commands::Opened { repo, admins, .. }, loaded) = open_cluster(ctx, cluster, false)?;
    let now = ctx.unix_now();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    // Requests: any administrator's own files, by a name kaws accepts.
    for (file, _) in repo.list_head(&loaded.path("admins"))? {
        let Some((name, _)) = file.split_once('.') else { continue };
        if name.parse::<crate::name::AdminName>().is_ok() {
            rows.entry(name.to_owned()).or_insert_with(|| Row {
                name: name.to_owned(),
                status: "requested",
                ..Row::default()
            });
        }
    }
    // Certificates: only those kaws issued count; the others are named, with why.
    let found = super::held_at_head(&repo, &loaded, &admins)?;
    for h in found.held {
        let row = rows.entry(h.name.to_string()).or_default();
        row.name = h.name.to_string();
        row.status = if h.facts.not_after <= now { "expired" } else { "issued" };
        row.serial = Some(h.facts.serial);
        row.expires = Some(crate::context::rfc3339_unix(h.facts.not_after));
    }
    for (file, why) in found.ignored {
        let name = file.strip_suffix(".crt").unwrap_or(&file).to_owned();
        let row = rows.entry(name.clone()).or_default();
        row.name = name;
        row.status = "ignored";
        row.problem = Some(why);
    }
    if let Some(revoked) = repo.read_toml::<Revoked>(&loaded.path(REVOKED_FILE))? {
        for e in revoked.entries {
            rows.entry(format!("{} (serial {})", e.name, e.serial)).or_insert(Row {
                name: e.name.to_string(),
                status: "revoked",
                serial: Some(e.serial),
                expires: None,
                problem: None,
            });
        }
    }
    let rows: Vec<Row> = rows.into_values().collect();
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            for r in &rows {
                println!(
                    "{:<20} {:<10} serial {:<50} expires {}{}",
                    r.name,
                    r.status,
                    r.serial.as_deref().unwrap_or("-"),
                    r.expires.as_deref().unwrap_or("-"),
                    r.problem.as_deref().map(|p| format!(" ({p})")).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
