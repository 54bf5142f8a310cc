//! The difference between the graph and what exists: per resource, create,
//! update (with each fix and its reason), delete, or blocked (a change kaws
//! will not make in place). Pure: it reads the state, calls nothing; each
//! kind's diff is in its module under `resources`.

use serde::Serialize;

use super::key::Key;
use super::model::Node;
use super::resources::{self, Action, Fix, State, View, Wanted};
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
        for (i, f) in found.iter().enumerate() {
            // Target registrations are reached through their group.
            let derived = resources::derived(f.kind());
            let why = if !keys.contains(key) {
                "not in the spec".to_owned()
            } else if i > 0 && !derived {
                format!("a duplicate of {}", found[0].id)
            } else {
                continue;
            };
            out.push(Change::new(key.clone(), Action::Delete { found: Box::new(f.clone()), why }));
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
