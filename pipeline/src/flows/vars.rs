//! Resolving a flow's variables, once, when a run starts: a start's value of the declared
//! type wins when the variable allows it; otherwise the default applies and the value is
//! listed as ignored. The snapshot belongs to the run; nothing here touches a profile.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::model::{MAX_VARIABLE_BYTES, MAX_VARIABLES_BYTES, VarType, Variable};
use crate::problem::Problem;

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The start (API call or trigger event) gave it.
    Trigger,
    /// The variable's default (the start gave none).
    Default,
    /// The start gave a value the variable does not let it override; the default applies.
    RefusedOverride,
}

/// The variables of one run.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Resolved {
    pub values: Map<String, Value>,
    pub sources: BTreeMap<String, Source>,
    /// Values a start gave that were not used, and why.
    pub ignored: BTreeMap<String, Ignored>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ignored {
    pub value: Value,
    pub reason: String,
}

/// Where the given values come from: an API start (an unknown name or a wrong type is
/// refused) or an event's properties (other properties are not variables; a wrong type is
/// ignored, the default applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    Api,
    Event,
}

/// `value` as a value of type `ty` (a datetime normalised to RFC 3339 UTC), or why not.
pub fn typed(ty: VarType, value: &Value) -> Result<Value, String> {
    let ok = match (ty, value) {
        (VarType::Json, v) => Some(v.clone()),
        (VarType::Text, Value::String(_))
        | (VarType::Number, Value::Number(_))
        | (VarType::Boolean, Value::Bool(_)) => Some(value.clone()),
        (VarType::Datetime, Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Value::String(t.with_timezone(&chrono::Utc).to_rfc3339())),
        _ => None,
    };
    ok.ok_or_else(|| {
        let shown = shown(value);
        let want = match ty {
            VarType::Datetime => "a datetime (RFC 3339, e.g. 2026-12-08T10:00:00Z)",
            VarType::Text => "text (a JSON string)",
            VarType::Number => "a number",
            VarType::Boolean => "true or false",
            VarType::Json => "JSON",
        };
        format!(
            "{shown} is not {want}; the variable's type is {}",
            ty.as_str()
        )
    })
}

/// A value as a message quotes it (long values cut).
pub fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Resolves `vars` from what a start `given` (its `variables`, or an event's properties).
pub fn resolve(
    vars: &BTreeMap<String, Variable>,
    given: &Map<String, Value>,
    from: Given,
    max_depth: usize,
) -> Result<Resolved, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut out = Resolved::default();
    if from == Given::Api {
        problems.extend(api_problems(vars, given));
    }
    for (name, var) in vars {
        let path = format!("variables.{name}");
        let value = given.get(name).filter(|v| !v.is_null());
        if let Some(v) = value {
            let size = serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
            if super::model::depth(v) > max_depth {
                problems.push(Problem::field(
                    &path,
                    format!("nests deeper than {max_depth} levels (limits.max_properties_depth)"),
                ));
                continue;
            }
            if size > MAX_VARIABLE_BYTES {
                problems.push(Problem::field(
                    &path,
                    format!(
                        "is {size} bytes of JSON; a variable holds at most {MAX_VARIABLE_BYTES}"
                    ),
                ));
                continue;
            }
        }
        match value {
            Some(v) if var.allow_override || var.required => match typed(var.ty, v) {
                Ok(t) => {
                    out.values.insert(name.clone(), t);
                    out.sources.insert(name.clone(), Source::Trigger);
                }
                Err(e) if from == Given::Api || var.required => {
                    problems.push(Problem::field(&path, e))
                }
                Err(e) => {
                    out.ignored.insert(
                        name.clone(),
                        Ignored {
                            value: v.clone(),
                            reason: e,
                        },
                    );
                    use_default(&mut out, name, var, Source::Default);
                }
            },
            Some(v) => {
                out.ignored.insert(
                    name.clone(),
                    Ignored {
                        value: v.clone(),
                        reason: "the variable does not allow a start to override its default"
                            .into(),
                    },
                );
                use_default(&mut out, name, var, Source::RefusedOverride);
            }
            None if var.required => problems.push(Problem::field(
                &path,
                format!("is required ({})", var.ty.as_str()),
            )),
            None => use_default(&mut out, name, var, Source::Default),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// What an API start may not give: more than [`MAX_VARIABLES_BYTES`], or a name the flow
/// does not declare.
fn api_problems(vars: &BTreeMap<String, Variable>, given: &Map<String, Value>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let size = serde_json::to_vec(given).map_or(usize::MAX, |b| b.len());
    if size > MAX_VARIABLES_BYTES {
        problems.push(Problem::field(
            "variables",
            format!("are {size} bytes of JSON; a start may give at most {MAX_VARIABLES_BYTES}"),
        ));
    }
    for name in given.keys().filter(|k| !vars.contains_key(*k)) {
        let declared: Vec<&str> = vars.keys().map(String::as_str).collect();
        problems.push(Problem::field(
            &format!("variables.{name}"),
            format!(
                "unknown variable; the flow declares {}",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            ),
        ));
    }
    problems
}

fn use_default(out: &mut Resolved, name: &str, var: &Variable, source: Source) {
    out.values
        .insert(name.to_string(), var.default.clone().unwrap_or(Value::Null));
    out.sources.insert(name.to_string(), source);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn var(ty: VarType, default: Option<Value>, required: bool, allow_override: bool) -> Variable {
        Variable {
            ty,
            default,
            required,
            allow_override,
            redact: false,
        }
    }

    fn vars() -> BTreeMap<String, Variable> {
        BTreeMap::from([
            (
                "coupon".into(),
                var(VarType::Text, Some(json!("WELCOME")), false, true),
            ),
            (
                "amount".into(),
                var(VarType::Number, Some(json!(5)), false, false),
            ),
            ("at".into(), var(VarType::Datetime, None, false, true)),
            ("order".into(), var(VarType::Json, None, true, false)),
        ])
    }

    fn given(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn precedence_trigger_default_and_refused_override() {
        let r = resolve(
            &vars(),
            &given(json!({"coupon": "VIP", "amount": 99, "order": {"id": 1}})),
            Given::Api,
            16,
        )
        .unwrap();
        assert_eq!(r.values["coupon"], json!("VIP"));
        assert_eq!(r.sources["coupon"], Source::Trigger);
        assert_eq!(r.values["amount"], json!(5));
        assert_eq!(r.sources["amount"], Source::RefusedOverride);
        assert_eq!(r.ignored["amount"].value, json!(99));
        assert_eq!(r.values["at"], Value::Null);
        assert_eq!(r.sources["at"], Source::Default);
        // required implies the start may set it
        assert_eq!(r.values["order"], json!({"id": 1}));
        assert_eq!(r.sources["order"], Source::Trigger);
    }

    #[test]
    fn types_are_checked_and_datetimes_normalised() {
        let r = resolve(
            &vars(),
            &given(json!({"at": "2026-12-08T10:00:00+01:00", "order": 1})),
            Given::Api,
            16,
        )
        .unwrap();
        assert_eq!(r.values["at"], json!("2026-12-08T09:00:00+00:00"));
        let e = resolve(
            &vars(),
            &given(json!({"coupon": 7, "order": 1})),
            Given::Api,
            16,
        )
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field.as_deref(), Some("variables.coupon"));
        assert_eq!(
            e[0].message,
            "7 is not text (a JSON string); the variable's type is text"
        );
        let e = resolve(
            &vars(),
            &given(json!({"at": "tomorrow", "order": 1})),
            Given::Api,
            16,
        )
        .unwrap_err();
        assert!(
            e[0].message.starts_with("\"tomorrow\" is not a datetime"),
            "{e:?}"
        );
    }

    #[test]
    fn required_and_unknown_are_refused_together() {
        let e = resolve(&vars(), &given(json!({"copon": "X"})), Given::Api, 16).unwrap_err();
        let lines: Vec<String> = e.iter().map(Problem::line).collect();
        assert_eq!(
            lines,
            vec![
                "variables.copon: unknown variable; the flow declares amount, at, coupon, order",
                "variables.order: is required (json)",
            ]
        );
    }

    #[test]
    fn an_event_gives_only_what_it_names_and_bad_types_fall_back() {
        let r = resolve(
            &vars(),
            &given(json!({"sku": "x", "coupon": 3, "order": [1]})),
            Given::Event,
            16,
        )
        .unwrap();
        assert_eq!(r.values["coupon"], json!("WELCOME"));
        assert!(r.ignored["coupon"].reason.contains("not text"));
        assert!(!r.values.contains_key("sku"));
    }

    #[test]
    fn deep_values_are_refused() {
        let deep = json!({"order": [[[[1]]]]});
        let e = resolve(&vars(), deep.as_object().unwrap(), Given::Api, 3).unwrap_err();
        assert_eq!(
            e[0].line(),
            "variables.order: nests deeper than 3 levels (limits.max_properties_depth)"
        );
    }

    #[test]
    fn oversized_values_are_refused() {
        let big = "x".repeat(MAX_VARIABLE_BYTES + 1);
        let e = resolve(
            &vars(),
            &given(json!({"coupon": big, "order": 1})),
            Given::Api,
            16,
        )
        .unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("variables.coupon"));
        assert!(e[0].message.contains("at most 16384"), "{}", e[0].message);
    }
}
