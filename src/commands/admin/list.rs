//! `kaws admin list CLUSTER`.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::cli::Output;
use crate::cluster::admins::{Revoked, REVOKED_FILE};
use crate::commands::cluster::open_cluster;
use crate::context::Ctx;
use crate::pki::inspect;

#[derive(Serialize, Default)]
struct Row {
    name: String,
    status: &'static str,
    serial: Option<String>,
    expires: Option<String>,
}

pub fn list(ctx: &Ctx, cluster: &str) -> Result<()> {
    let (crate::commands::Opened { repo, .. }, loaded) = open_cluster(ctx, cluster, false)?;
    let now = ctx.unix_now();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (file, bytes) in repo.list_head(&loaded.path("admins"))? {
        let Some((name, ext)) = file.split_once('.') else { continue };
        let row = rows.entry(name.to_owned()).or_insert_with(|| Row {
            name: name.to_owned(),
            status: "requested",
            ..Row::default()
        });
        if ext == "crt" {
            let f = inspect::facts(&String::from_utf8_lossy(&bytes))?;
            row.status = if f.not_after <= now { "expired" } else { "issued" };
            row.serial = Some(f.serial);
            row.expires = Some(crate::context::rfc3339_unix(f.not_after));
        }
    }
    if let Some(revoked) = repo.read_toml::<Revoked>(&loaded.path(REVOKED_FILE))? {
        for e in revoked.entries {
            rows.entry(format!("{} (serial {})", e.name, e.serial)).or_insert(Row {
                name: e.name.to_string(),
                status: "revoked",
                serial: Some(e.serial),
                expires: None,
            });
        }
    }
    let rows: Vec<Row> = rows.into_values().collect();
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            for r in &rows {
                println!(
                    "{:<20} {:<10} serial {:<50} expires {}",
                    r.name,
                    r.status,
                    r.serial.as_deref().unwrap_or("-"),
                    r.expires.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}
