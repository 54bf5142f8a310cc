//! The difference between the graph and what exists: per resource, create,
//! update (with each fix and its reason), delete, or blocked (a change kaws
//! will not make in place). Pure: it reads the state, calls nothing; each
//! kind's diff is in its module under `resources`.

use serde::Serialize;

use super::key::Key;
use super::model::Node;
use super::resources::{self, Action, Fix, Found, State, View, Wanted};
use super::world::World;
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug)]
pub struct Change {
    pub key: Key,
    pub action: Action,
    /// What matters of it: attributes of a create, `old → new` of an update.
    pub details: Vec<String>,
    /// The resources it waits for (graph keys).
    pub depends_on: Vec<Key>,
}

impl Change {
    pub fn new(key: Key, action: Action) -> Change {
        Change { key, action, details: Vec::new(), depends_on: Vec::new() }
    }

    pub fn mutates(&self) -> bool {
        !matches!(self.action, Action::Note(_))
    }

    /// Whether it writes a parameter's value (and so needs the secret).
    pub fn writes_value(&self) -> bool {
        match &self.action {
            Action::Create => matches!(self.key, Key::Param(_)),
            Action::Update(fixes) => fixes.contains(&Fix::Value),
            _ => false,
        }
    }
}

/// Resources found that the graph does not want: unknown keys and duplicates.
pub fn surplus(graph: &[Node], world: &World) -> Vec<Change> {
    let keys = resources::keys(graph);
    let mut out = Vec::new();
    for (key, found) in &world.found {
        // Instances an Auto Scaling group launched are its own to replace.
        if matches!(key, Key::Managed(_)) {
            continue;
        }
        // Resources tagged for the cluster that kaws cannot tell as its own
        // (a tag it does not know, or a key naming another kind) are
        // neither used nor deleted: tags are anyone's to write.
        let (ours, theirs): (Vec<&Found>, Vec<&Found>) =
            found.iter().partition(|f| resources::of_kind(key, f) && !matches!(key, Key::Other(_)));
        for f in theirs {
            let why = match key {
                Key::Other(_) => format!("its kaws:key tag ({key}) names nothing kaws makes"),
                _ => format!("it is a {:?}, which the key {key} never names", f.kind()),
            };
            out.push(Change::new(
                key.clone(),
                Action::Note(format!(
                    "{} is tagged for the cluster, but {why}; kaws leaves it alone (`destroy` deletes it): \
                     delete it or remove its kaws:cluster tag",
                    f.id
                )),
            ));
        }
        for (i, f) in ours.iter().enumerate() {
            // Target registrations are reached through their group.
            let derived = resources::derived(f.kind());
            let why = if !keys.contains(key) {
                "not in the spec".to_owned()
            } else if i > 0 && !derived {
                format!("a duplicate of {}", ours[0].id)
            } else {
                continue;
            };
            out.push(Change::new(key.clone(), Action::Delete { found: Box::new((*f).clone()), why }));
        }
    }
    out
}

/// The whole plan against the world as found.
pub fn plan(spec: &ClusterSpec, graph: &[Node], world: &World, wanted: &Wanted) -> Vec<Change> {
    let state = State::of(world);
    let view = View { spec, state: &state, wanted };
    let mut changes: Vec<Change> = graph
        .iter()
        .filter_map(|n| {
            let action = resources::diff(&view, n)?;
            let details = resources::details(&view, n, &action);
            Some(Change { key: n.key.clone(), action, details, depends_on: n.deps.clone() })
        })
        .collect();
    changes.extend(surplus(graph, world));
    changes
}

#[derive(Serialize)]
struct JsonChange<'a> {
    resource: String,
    action: &'static str,
    id: Option<&'a str>,
    reasons: Vec<String>,
    details: &'a [String],
    depends_on: &'a [Key],
}

fn describe(c: &Change) -> (&'static str, char, Vec<String>) {
    match &c.action {
        Action::Create => ("create", '+', vec!["not found".into()]),
        Action::Update(fixes) => ("update", '~', fixes.iter().map(|f| f.to_string()).collect()),
        Action::Delete { why, found } => ("delete", '-', vec![format!("{} is {why}", found.id)]),
        Action::Replace { why, .. } => ("replace", '±', vec![format!("{why}; it is deleted and created anew")]),
        Action::Blocked(why) => ("blocked", '!', vec![why.clone()]),
        Action::Note(why) => ("note", '#', vec![why.clone()]),
    }
}

pub fn to_json(changes: &[Change]) -> serde_json::Value {
    let rows: Vec<JsonChange> = changes
        .iter()
        .map(|c| {
            let (action, _, reasons) = describe(c);
            let id = match &c.action {
                Action::Delete { found, .. } | Action::Replace { found, .. } => Some(found.id.as_str()),
                _ => None,
            };
            JsonChange {
                resource: c.key.to_string(),
                action,
                id,
                reasons,
                details: &c.details,
                depends_on: &c.depends_on,
            }
        })
        .collect();
    serde_json::to_value(rows).expect("plain data")
}

/// Terraform-style text; `color` for a terminal.
pub fn to_text(changes: &[Change], color: bool) -> String {
    let mut out = String::new();
    let paint = |sign: char, s: &str| {
        if !color {
            return s.to_owned();
        }
        let code = match sign {
            '+' => "32",
            '~' | '±' => "33",
            '-' | '!' => "31",
            _ => "2",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    };
    let mut counts = [0usize; 5];
    for c in changes {
        let (action, sign, reasons) = describe(c);
        match sign {
            '+' => counts[0] += 1,
            '~' => counts[1] += 1,
            '-' => counts[2] += 1,
            '±' => {
                counts[0] += 1;
                counts[2] += 1;
            }
            '!' => counts[3] += 1,
            _ => counts[4] += 1,
        }
        out += &paint(sign, &format!("  {sign} {:<32} {action}", c.key.to_string()));
        out.push('\n');
        for r in reasons {
            out += &format!("      {r}\n");
        }
        for d in &c.details {
            out += &format!("        {d}\n");
        }
    }
    out += &format!(
        "Plan: {} to create, {} to update, {} to delete, {} blocked, {} notes.\n",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::{kms, vpc};

    #[test]
    fn resources_kaws_cannot_tell_as_its_own_are_left_alone() {
        let spec = crate::cluster::spec::tests::spec();
        let graph = crate::aws::model::graph(&spec);
        let mut world = World::default();
        // Someone tags a VPC as the cluster's key, listed before the real key.
        world.found.insert(
            Key::Kms,
            vec![Found::new("vpc-impostor", vpc::Found::default()), Found::new("arn:key", kms::Found::default())],
        );
        world.found.insert(Key::Other("unknown".into()), vec![Found::new("i-stranger", vpc::Found::default())]);
        world.found.insert(
            Key::Vpc,
            vec![Found::new("vpc-1", vpc::Found::default()), Found::new("vpc-2", vpc::Found::default())],
        );
        assert_eq!(State::of(&world).id(&Key::Kms), Some("arn:key"));
        let changes = surplus(&graph, &world);
        let deleted: Vec<&str> = changes
            .iter()
            .filter_map(|c| match &c.action {
                Action::Delete { found, .. } => Some(found.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["vpc-2"], "only a duplicate of the key's own kind is deleted");
        let notes = changes.iter().filter(|c| matches!(c.action, Action::Note(_))).count();
        assert_eq!(notes, 2, "{changes:?}");
    }
}
