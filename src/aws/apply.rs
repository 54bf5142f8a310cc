//! Runs a plan: every resource whose dependencies are done starts at once;
//! each task diffs against the state as it is when it starts (so it sees
//! what earlier tasks made), makes only the calls its diff needs, and
//! reports what it made; surplus resources are deleted last. Every create
//! carries the cluster's tags in the same call (or a client token where
//! the API has one), so a killed run is found again by tag and converges
//! when re-run. What each kind's calls are is in its module.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use anyhow::{anyhow, Context as _, Result};
use futures::stream::{FuturesUnordered, StreamExt};

use super::key::Key;
use super::model::Node;
use super::plan::Change;
use super::resources::{self, Action, Ctx, Found, State, View};
use super::world::World;

/// What one finished task reports: a resource made or changed, or a surplus one deleted.
pub enum Done<'a> {
    Changed(&'a Key),
    Deleted(&'a Key, &'a Found),
}

type Task<'a> = Pin<Box<dyn Future<Output = (&'a Key, Result<Option<Found>>)> + 'a>>;

/// Runs the graph, at most `parallelism` changes at once, then deletes
/// `changes`' surplus; `report` hears of each change as it completes.
/// Returns the state after the run, or the errors (other tasks finish first).
pub async fn run<'a>(
    cx: &'a Ctx<'a>,
    graph: &'a [Node],
    world: &'a World,
    changes: &'a [Change],
    parallelism: usize,
    mut report: impl FnMut(Done),
) -> Result<State> {
    let mut state = State::of(world);
    cx.found(world.found.values().flatten().map(|f| f.id.as_str()));
    let mut done: HashSet<&Key> = HashSet::new();
    let mut started: HashSet<&Key> = HashSet::new();
    let mut running: FuturesUnordered<Task<'a>> = FuturesUnordered::new();
    let mut errors = Vec::new();
    let height = heights(graph);
    loop {
        // Start what is ready, the longest chains of work behind it first,
        // while there is room; nodes with nothing to do finish at once and
        // may make others ready.
        loop {
            let mut ready: Vec<&'a Node> =
                graph.iter().filter(|n| !started.contains(&n.key) && n.deps.iter().all(|d| done.contains(d))).collect();
            ready.sort_by_key(|n| std::cmp::Reverse(height[&n.key]));
            let mut progressed = false;
            for node in ready {
                let view = View { spec: cx.spec, state: &state, wanted: &cx.inputs.wanted };
                match resources::diff(&view, node) {
                    None | Some(Action::Note(_)) => {
                        done.insert(&node.key);
                    }
                    Some(_) if running.len() >= parallelism => continue,
                    Some(action) => {
                        let snap = state.clone();
                        running.push(Box::pin(async move {
                            let what = describe(&action);
                            let res =
                                ensure(cx, node, action, snap).await.with_context(|| format!("{}: {what}", node.key));
                            (&node.key, res)
                        }));
                    }
                }
                started.insert(&node.key);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        let Some((key, res)) = running.next().await else { break };
        match res {
            Ok(made) => {
                report(Done::Changed(key));
                if let Some(f) = made {
                    state.found.insert(key.clone(), f);
                }
                done.insert(key);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        let skipped = graph.iter().filter(|n| !started.contains(&n.key)).count();
        let headline =
            format!("{} change(s) failed ({skipped} resources waiting on them were not started)", errors.len());
        return Err(super::error::many(headline, &errors));
    }
    // Surplus last: duplicates and resources the spec no longer has, in
    // destroy's order (a resource before what it depends on).
    let waves = super::destroy::waves(graph);
    let wave = |f: &Found| waves.iter().position(|w| w.contains(&f.kind())).unwrap_or(0);
    let mut surplus: Vec<(&Key, &Found, &String)> = changes
        .iter()
        .filter_map(|c| match &c.action {
            Action::Delete { found, why } => Some((&c.key, found.as_ref(), why)),
            _ => None,
        })
        .collect();
    surplus.sort_by_key(|(_, f, _)| wave(f));
    for (key, found, why) in surplus {
        resources::delete(cx.aws, key, found, false).await.with_context(|| format!("{key}: delete ({why})"))?;
        report(Done::Deleted(key, found));
    }
    Ok(state)
}

async fn ensure(cx: &Ctx<'_>, node: &Node, action: Action, st: State) -> Result<Option<Found>> {
    match action {
        Action::Create => resources::create(cx, node, &st).await.map(Some),
        Action::Update(fixes) => resources::fix(cx, node, &fixes, &st).await,
        Action::Replace { found, .. } => {
            resources::delete(cx.aws, &node.key, &found, false).await?;
            resources::create(cx, node, &st).await.map(Some)
        }
        // Surplus is deleted after the graph (see `run`).
        Action::Delete { .. } => Ok(None),
        Action::Blocked(why) => Err(anyhow!("{why}")),
        Action::Note(_) => Ok(None),
    }
}

/// Each node's height: itself plus the longest chain of nodes that depend
/// on it, directly or not (the graph lists dependencies first).
fn heights(graph: &[Node]) -> HashMap<&Key, usize> {
    let mut height: HashMap<&Key, usize> = HashMap::new();
    for node in graph.iter().rev() {
        let below = graph
            .iter()
            .filter(|n| n.deps.contains(&node.key))
            .map(|n| height.get(&n.key).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        height.insert(&node.key, below + 1);
    }
    height
}

fn describe(a: &Action) -> String {
    match a {
        Action::Create => "create".into(),
        Action::Update(f) => f.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "),
        Action::Delete { why, .. } => format!("delete ({why})"),
        Action::Replace { why, .. } => format!("replace ({why})"),
        Action::Blocked(w) | Action::Note(w) => w.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::model;
    use crate::cluster::spec::tests::spec;

    #[test]
    fn the_longest_chains_start_first() {
        let g = model::graph(&spec());
        let h = heights(&g);
        // The VPC heads the longest chain; what nothing waits on is last.
        assert_eq!(h.values().max(), Some(&h[&Key::Vpc]));
        assert_eq!(h[&Key::Targets], 1);
        assert!(h[&Key::Nat(0)] > h[&Key::Param("/node/bootstrap-token".into())]);
        for n in &g {
            for d in &n.deps {
                assert!(h[d] > h[&n.key], "{d} must come before {}", n.key);
            }
        }
    }
}
