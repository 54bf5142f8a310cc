//! `kaws audit` and `kaws trust`.

use anyhow::Result;

use crate::cli::Output;
use crate::context::Ctx;
use crate::error::refused;

pub fn audit(ctx: &Ctx, trust_root: Option<&str>) -> Result<()> {
    let repo = ctx.repo()?;
    let root = match trust_root {
        Some(rev) => repo.resolve_ancestor(rev)?,
        None => repo.trust_root()?.ok_or_else(|| {
            refused("this clone has no pinned trust root")
                .hint("run `kaws trust COMMIT` with the commit id your team shared")
        })?,
    };
    let report = repo.audit(root, &ctx.policy, ctx.now)?;
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            println!("Trust root: {}", report.trust_root);
            let verdict = if report.authenticated { "authenticated" } else { "NOT authenticated" };
            println!("HEAD:       {} ({verdict})", report.head);
            println!("Commits checked this run: {}", report.commits_checked);
            if !report.admin_changes.is_empty() {
                println!("Administrator-set changes:");
                for c in &report.admin_changes {
                    println!("  {} signed by {}", c.commit, c.signed_by);
                    for a in &c.added {
                        println!("    + {a}");
                    }
                    for r in &c.removed {
                        println!("    - {r}");
                    }
                }
            }
            if !report.problems.is_empty() {
                println!("Commits off the authenticated path:");
                for p in &report.problems {
                    println!("  {} {:?}", p.commit, p.summary);
                    for r in &p.reasons {
                        println!("    {r}");
                    }
                }
            }
        }
    }
    if !report.authenticated {
        return Err(refused(format!("HEAD {} is not authenticated from {}", report.head, report.trust_root))
            .hint("a commit signed by an administrator (for example `git merge -S` of the reviewed branch) authenticates it")
            .into());
    }
    Ok(())
}

pub fn trust(ctx: &Ctx, rev: &str) -> Result<()> {
    let repo = ctx.repo()?;
    let oid = repo.resolve_ancestor(rev)?;
    let tree = repo.git_commit_has_config(oid)?;
    if !tree {
        return Err(
            refused(format!("{oid} has no kaws.toml; a trust root must be a commit of the kaws repository")).into()
        );
    }
    repo.set_trust_root(oid)?;
    println!("Pinned trust root {oid} for this clone");
    Ok(())
}
