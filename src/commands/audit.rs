//! `kaws audit` and `kaws trust`.

use anyhow::Result;

use crate::cli::Output;
use crate::context::Ctx;
use crate::error::refused;
use crate::repo::history::Problem;

pub fn audit(ctx: &Ctx, trust_root: Option<&str>) -> Result<()> {
    let repo = ctx.repo()?;
    let root = match trust_root {
        Some(rev) => repo.resolve_ancestor(rev)?,
        None => repo.trust_root()?.ok_or_else(|| {
            refused("this clone has no pinned trust root")
                .hint("run `kaws trust COMMIT` with the commit id your team shared")
        })?,
    };
    let mut report = repo.audit(root, &ctx.policy, ctx.now)?;
    let head = repo.head().ok_or_else(|| refused("the repository has no commits"))?;
    let pinned = repo.trust_root()? == Some(root);
    if let Some(why) = repo.rewind_of(head)? {
        report.authenticated = false;
        report.problems.push(Problem { commit: head.to_string(), summary: String::new(), reasons: vec![why] });
    } else if report.authenticated && pinned {
        repo.advance_ratchet(head)?;
    }
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
                    println!("  {} signed by {} (against parent {})", c.commit, c.signed_by, c.parent);
                    for a in &c.added {
                        println!("    + {a}");
                    }
                    for r in &c.removed {
                        println!("    - {r}");
                    }
                    for r in &c.renamed {
                        println!("    ~ {r}");
                    }
                }
            }
            if !report.problems.is_empty() {
                println!("Commits off the authenticated path:");
                for p in &report.problems {
                    println!("  {} {:?}", p.commit, p.summary);
                    for r in &p.reasons {
                        // Reasons quote repository paths: escaped for the terminal.
                        println!("    {}", crate::text::escape(r));
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

/// Pins (or advances) the trust root; with `accept_rewind`, accepts the
/// current HEAD although it rewinds what this clone accepted (logged).
pub fn trust(ctx: &Ctx, rev: Option<&str>, accept_rewind: bool) -> Result<()> {
    let repo = ctx.repo()?;
    if let Some(rev) = rev {
        // Cached verdicts were reached from the old root: start over.
        repo.drop_audit_cache()?;
        let oid = repo.resolve_ancestor(rev)?;
        if !repo.git_commit_has_config(oid)? {
            return Err(refused(format!(
                "{oid} has no kaws.toml; a trust root must be a commit of the kaws repository"
            ))
            .into());
        }
        let old = repo.trust_root()?;
        repo.set_trust_root(oid)?;
        match old {
            Some(o) if o == oid => println!("The trust root of this clone is already {oid}"),
            Some(o) if repo.descends_from(oid, o) => {
                println!("Advanced the trust root of this clone from {o} to {oid}")
            }
            Some(o) => println!("Replaced the trust root {o} of this clone with {oid} (not a descendant of it)"),
            None => println!("Pinned trust root {oid} for this clone"),
        }
    }
    if accept_rewind {
        let root = repo
            .trust_root()?
            .ok_or_else(|| refused("this clone has no pinned trust root").hint("run `kaws trust COMMIT` first"))?;
        let report = repo.audit(root, &ctx.policy, ctx.now)?;
        if !report.authenticated {
            return Err(refused(format!(
                "HEAD {} is not authenticated from {root}; a rewind is accepted only onto an authenticated commit",
                report.head
            ))
            .hint("run `kaws audit` to see why")
            .into());
        }
        let head = repo.head().ok_or_else(|| refused("the repository has no commits"))?;
        match repo.accept_rewind(head, ctx.now)? {
            Some(old) if !repo.descends_from(head, old) => eprintln!(
                "warning: accepted {head} on {} in place of {old}, which it does not descend from (logged in .git/kaws/rewinds.log)",
                repo.branch_name()
            ),
            _ => println!("Accepted {head} on {}", repo.branch_name()),
        }
    }
    Ok(())
}
