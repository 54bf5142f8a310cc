//! Whether a phase has reached the running cluster: every instance reports
//! the trust generation it runs (a tag only it may set on itself, see
//! `aws::resources::iam`), and a rotation's next phase waits until every
//! running instance reports the repository's current one. The report is
//! the instance's own text: compared, and shown escaped, never trusted.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::{provision::runtime, Loaded};
use crate::aws::key::{Host, Key};
use crate::aws::outputs::{Outputs, OUTPUTS_FILE};
use crate::aws::resources::{asg, instance};
use crate::aws::Aws;
use crate::cluster::ClusterSpec;
use crate::error::{failed, refused};
use crate::repo::Repo;

/// The repository's trust generation: what every instance should run.
pub(crate) fn current(repo: &Repo, loaded: &Loaded) -> Result<String> {
    Ok(crate::render::context::generation(&super::render::verified_pki(repo, loaded)?.0))
}

/// Whether an instance reports running `want`, up.
fn runs(f: &crate::aws::resources::Found, want: &str) -> bool {
    f.get::<instance::Found>()
        .is_some_and(|i| i.generation.as_deref() == Some(want) && i.stage.as_deref() == Some("up"))
}

/// The instances (but the bastion, which holds no cluster credential) that
/// do not report running `want`, each named with what it reports.
fn behind(found: &[(Key, crate::aws::resources::Found)], want: &str) -> Vec<String> {
    let esc = |t: &str| crate::text::escape(t).into_owned();
    found
        .iter()
        .filter(|(key, _)| *key != Key::Instance(Host::Bastion))
        .filter_map(|(key, f)| {
            let i = f.get::<instance::Found>()?;
            if runs(f, want) {
                return None;
            }
            let runs = match (&i.generation, &i.stage) {
                (Some(g), stage) if g == want => {
                    format!("is at bootstrap step {} again", esc(stage.as_deref().unwrap_or("-")))
                }
                (Some(g), _) => format!("runs {}", esc(g)),
                (None, Some(stage)) => format!("reports no generation yet, at bootstrap step {}", esc(stage)),
                (None, None) => "reports nothing yet".to_owned(),
            };
            Some(format!("{key} {} {runs}", f.id))
        })
        .collect()
}

/// Whether a rollout is under way: an instance reports running another
/// generation than `want` (one that reports nothing yet is booting).
pub(crate) fn rolling(found: &[(Key, crate::aws::resources::Found)], want: &str) -> bool {
    found.iter().any(|(key, f)| {
        *key != Key::Instance(Host::Bastion)
            && f.get::<instance::Found>().and_then(|i| i.generation.as_deref()).is_some_and(|g| g != want)
    })
}

/// How often the rollout asks the instances what they run.
const POLL: Duration = Duration::from_secs(5);

/// Waits until every running instance (but the bastion) reports running
/// `want`: masters bring themselves to it in place (their refresh agent,
/// one at a time); nodes that run an older one are replaced by their Auto
/// Scaling group's instance refresh, which this starts when none is under
/// way. `say` gets a line on each change. Nothing here is kept: a run that
/// is cut short is resumed by running it again.
pub(crate) async fn roll(aws: &Aws, spec: &ClusterSpec, want: &str, limit: Duration, say: &dyn Fn(&str)) -> Result<()> {
    let start = Instant::now();
    let (mut last, mut last_refresh) = (String::new(), String::new());
    // The refresh this run started, by group: one each.
    let mut started: std::collections::HashMap<String, Option<String>> = Default::default();
    loop {
        superseded(aws, spec, want).await?;
        let found = instance::discover(aws, spec).await?;
        let late = behind(&found, want);
        if late.is_empty() {
            say(&format!("every instance runs trust generation {want}"));
            return Ok(());
        }
        // Nodes once every master runs it: a new node's kubelet certificate
        // comes from the controller manager that leads, on whichever master.
        let masters_run = found.iter().all(|(key, f)| !matches!(key, Key::Instance(Host::Master(_))) || runs(f, want));
        for group in old_groups(&found, want) {
            let latest = asg::latest_refresh(aws, &group).await?;
            match (&latest, started.get(&group)) {
                (Some(r), Some(Some(ours))) if r.id == *ours && r.failed() => {
                    return Err(failed(format!(
                        "{group}: instance refresh {} is {} ({}), and nodes run an older trust generation",
                        r.id, r.status, r.reason
                    ))
                    .hint("see `aws autoscaling describe-instance-refreshes`; apply again to start another")
                    .into());
                }
                (Some(r), _) if r.active() => {
                    let line = format!("{group}: instance refresh {} is {} {}", r.id, r.status, r.reason);
                    if line != last_refresh {
                        say(line.trim_end());
                        last_refresh = line;
                    }
                }
                (_, None) if masters_run => {
                    let id = asg::refresh(aws, &group).await?;
                    if let Some(id) = &id {
                        say(&format!(
                            "{group}: started instance refresh {id} (nodes of an older generation are replaced)"
                        ));
                    }
                    started.insert(group, id);
                }
                _ => {}
            }
        }
        let line =
            format!("{} of {} instances do not run {want} yet:\n  {}", late.len(), found.len(), late.join("\n  "));
        if line != last {
            say(&line);
            last = line;
        }
        if start.elapsed() >= limit {
            return Err(failed(format!(
                "after {} minutes, {} of the instances of {} do not run trust generation {want}:\n  {}",
                limit.as_secs() / 60,
                late.len(),
                spec.name,
                late.join("\n  ")
            ))
            .hint(
                "on a master, /var/log/kaws-refresh.log says what its refresh agent waits for or why it failed \
                 (`journalctl -u kaws-refresh.service`); a node is replaced by its group's instance refresh \
                 (`aws autoscaling describe-instance-refreshes`); an instance that cannot come up is replaced by \
                 terminating it. Apply again to go on waiting",
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The Auto Scaling groups with a node that reports an older generation.
fn old_groups(found: &[(Key, crate::aws::resources::Found)], want: &str) -> Vec<String> {
    let mut groups: Vec<String> = found
        .iter()
        .filter_map(|(key, f)| match key {
            Key::Managed(group) => {
                let i = f.get::<instance::Found>()?;
                i.generation.as_deref().is_some_and(|g| g != want).then(|| group.clone())
            }
            _ => None,
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Fails when SSM announces another generation than `want`: another apply
/// (a colleague's, of a newer commit) took over the rollout.
async fn superseded(aws: &Aws, spec: &ClusterSpec, want: &str) -> Result<()> {
    let name = format!("{}/master/shared/generation", crate::aws::naming::ssm_prefix(spec));
    let out = aws
        .send(crate::aws::Svc::Other, "GetParameter", crate::aws::Retry::NONE, || {
            aws.ssm.get_parameter().name(&name).send()
        })
        .await?;
    let announced = out.parameter().and_then(|p| p.value()).unwrap_or_default();
    let announced = announced.split(' ').next().unwrap_or_default();
    if announced != want {
        return Err(failed(format!(
            "SSM now announces trust generation {} to the instances, not {want}: another apply took over",
            crate::text::escape(announced)
        ))
        .hint("run `kaws cluster status` to see what the instances run; apply the repository's HEAD to go on")
        .into());
    }
    Ok(())
}

/// Refuses `step` until every running instance of the cluster reports the
/// current trust generation. A cluster never applied has none to wait for.
pub(crate) fn gate(repo: &Repo, loaded: &Loaded, step: &str) -> Result<()> {
    let outputs: Option<Outputs> = repo.read_toml(&loaded.path(OUTPUTS_FILE))?;
    if outputs.is_none() {
        return Ok(());
    }
    let want = current(repo, loaded)?;
    let spec = &loaded.spec;
    let found = runtime()?.block_on(async { instance::discover(&Aws::connect(spec).await?, spec).await })?;
    let late = behind(&found, &want);
    if late.is_empty() {
        return Ok(());
    }
    Err(refused(format!(
        "{step} waits until every instance of {} runs trust generation {want}; {} of {} do not:\n  {}",
        loaded.name,
        late.len(),
        found.len(),
        late.join("\n  ")
    ))
    .hint(format!(
        "roll the current phase out with `kaws cluster apply {0}` and watch `kaws cluster status {0}`; an instance that \
         does not come up is replaced by terminating it (apply, or its Auto Scaling group, launches it anew)",
        loaded.name
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::Found;

    fn reported(generation: Option<&str>, stage: Option<&str>) -> instance::Found {
        instance::Found {
            state: "running".into(),
            generation: generation.map(String::from),
            stage: stage.map(String::from),
            ..instance::Found::default()
        }
    }

    #[test]
    fn only_instances_that_report_the_generation_pass_and_the_bastion_is_not_asked() {
        let found = vec![
            (Key::Instance(Host::Master(0)), Found::new("i-1", reported(Some("abc"), Some("up")))),
            (Key::Instance(Host::Master(1)), Found::new("i-2", reported(Some("old\u{1b}[2J"), Some("up")))),
            (Key::Managed("prod-nodes".into()), Found::new("i-3", reported(None, Some("join")))),
            (Key::Instance(Host::Bastion), Found::new("i-4", reported(None, None))),
            (Key::Instance(Host::Master(2)), Found::new("i-5", reported(Some("abc"), Some("control-plane")))),
        ];
        let late = behind(&found, "abc");
        assert_eq!(late.len(), 3, "{late:?}");
        assert!(late[2].contains("i-5") && late[2].contains("control-plane"), "{late:?}");
        assert!(late[0].contains("i-2") && !late[0].contains('\u{1b}'), "{late:?}");
        assert!(late[1].contains("bootstrap step join"), "{late:?}");
    }

    #[test]
    fn a_rollout_is_under_way_only_when_an_instance_runs_another_generation_and_nodes_wait_for_masters() {
        let booting = vec![
            (Key::Instance(Host::Master(0)), Found::new("i-1", reported(None, Some("packages")))),
            (Key::Managed("prod-nodes".into()), Found::new("i-2", reported(None, None))),
        ];
        assert!(!rolling(&booting, "new"), "a cluster booting is not a rollout");
        let found = vec![
            (Key::Instance(Host::Master(0)), Found::new("i-1", reported(Some("new"), Some("up")))),
            (Key::Instance(Host::Master(1)), Found::new("i-2", reported(Some("new"), Some("refreshing")))),
            (Key::Managed("prod-nodes".into()), Found::new("i-3", reported(Some("old"), Some("up")))),
            (Key::Managed("prod-nodes".into()), Found::new("i-4", reported(Some("old"), Some("up")))),
            (Key::Instance(Host::Bastion), Found::new("i-5", reported(Some("old"), None))),
        ];
        assert!(rolling(&found, "new"));
        assert_eq!(old_groups(&found, "new"), ["prod-nodes"]);
        assert!(runs(&found[0].1, "new") && !runs(&found[1].1, "new"), "a master still refreshing does not run it");
        assert!(!rolling(&found[..2], "new"), "reporting the generation while refreshing is not an older one");
        assert!(!rolling(&found[4..], "new"), "the bastion is not asked");
    }
}
