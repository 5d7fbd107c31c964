//! Which placeholders can name something: `variables.<declared>`, `profile.<column>` or
//! `profile.fields.<custom field>`, `steps.<step>`, `run.<id|flow_id|started_at|version>`,
//! and anything under `trigger`.

use std::collections::BTreeMap;

use super::model::Spec;
use super::template::ROOTS;
use crate::segments::def::BUILTIN;
use crate::users::fields::FieldDef;

/// Whether placeholder `name` can name something (`variables.x` declared, `profile.fields.y`
/// a custom field, `steps.z` a step).
pub fn known(spec: &Spec, fields: &BTreeMap<String, FieldDef>, name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('.').collect();
    let root = parts[0];
    if !ROOTS.contains(&root) {
        // loop variables and `set` names are declared inside the template itself
        return if ["loop", "range", "namespace"].contains(&root) {
            Ok(())
        } else {
            Err(format!(
                "'{name}' names nothing: placeholders start with {}",
                ROOTS.join(", ")
            ))
        };
    }
    let second = parts.get(1).copied();
    match (root, second) {
        (_, None) | ("trigger", _) => Ok(()),
        ("variables", Some(v)) if spec.variables.contains_key(v) => Ok(()),
        ("variables", Some(v)) => Err(format!(
            "'{name}': no variable '{v}'; the flow declares {}",
            listed(spec.variables.keys().map(String::as_str))
        )),
        ("steps", Some(s)) if spec.step(s).is_some() => Ok(()),
        ("steps", Some(s)) => Err(format!("'{name}': no step '{s}'")),
        ("run", Some("id" | "flow_id" | "started_at" | "version")) => Ok(()),
        ("run", Some(other)) => Err(format!(
            "'{name}': a run has id, flow_id, started_at, version, not '{other}'"
        )),
        ("profile", Some("fields")) => match parts.get(2) {
            None => Ok(()),
            Some(f) if fields.contains_key(*f) => Ok(()),
            Some(f) => Err(format!(
                "'{name}': no custom field '{f}'; declared: {}",
                listed(fields.keys().map(String::as_str))
            )),
        },
        ("profile", Some("segments" | "event_stats")) => Ok(()),
        ("profile", Some(c)) if BUILTIN.iter().any(|(b, _)| *b == c) => Ok(()),
        ("profile", Some(c)) => Err(format!(
            "'{name}': a profile has {}, fields, segments, event_stats, not '{c}'",
            BUILTIN.map(|(b, _)| b).join(", ")
        )),
        _ => Ok(()),
    }
}

fn listed<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
