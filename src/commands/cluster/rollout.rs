//! Whether a phase has reached the running cluster: every instance reports
//! the trust generation it runs (a tag only it may set on itself, see
//! `aws::resources::iam`), and a rotation's next phase waits until every
//! running instance reports the repository's current one. The report is
//! the instance's own text: compared, and shown escaped, never trusted.

use anyhow::Result;

use super::{provision::runtime, Loaded};
use crate::aws::key::{Host, Key};
use crate::aws::outputs::{Outputs, OUTPUTS_FILE};
use crate::aws::resources::instance;
use crate::aws::Aws;
use crate::error::refused;
use crate::repo::Repo;

/// The repository's trust generation: what every instance should run.
pub(crate) fn current(repo: &Repo, loaded: &Loaded) -> Result<String> {
    Ok(crate::render::context::generation(&super::render::public_inputs(repo, loaded)?.pki))
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
            let runs = match (&i.generation, &i.stage) {
                (Some(g), Some(stage)) if g == want && stage == "up" => return None,
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
}
