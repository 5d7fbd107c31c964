use super::*;
use crate::users::fields::FieldType;
use serde_json::json;

fn fields() -> BTreeMap<String, FieldDef> {
    crate::users::fields::declared(&[("plan", FieldType::Text)])
}

fn lines(doc: Value) -> Vec<String> {
    let fields = fields();
    let segments = BTreeSet::from(["lapsed".to_string()]);
    let guard = |u: &url::Url| match u.host_str() {
        Some("127.0.0.1") => Err("127.0.0.1 is a loopback address".to_string()),
        _ => Ok(()),
    };
    let checks = Checks {
        fields: &fields,
        segments: &segments,
        check_url: &guard,
        max_depth: 16,
    };
    match parse(&doc, &checks) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(Problem::line).collect(),
    }
}

fn good() -> Value {
    json!({
        "name": "Win back",
        "variables": {
            "coupon": {"type": "text", "default": "WELCOME"},
            "amount": {"type": "number", "required": true, "redact": true}
        },
        "starts": {"events": [{"names": ["segment-entered"], "segment": "lapsed"}]},
        "entry": {"one_active_run": true, "max_starts": 1, "per": "30d"},
        "steps": [
            {"id": "wait", "type": "delay", "duration": "1h"},
            {"id": "check", "type": "branch",
             "condition": {"match": "all", "conditions": [{"field": "plan", "op": "eq", "value": "gold"}]},
             "expression": "variables.amount > 10", "then": "post", "else": "done"},
            {"id": "post", "type": "webhook", "url": "https://crm.example/u/{{ profile.user_id }}",
             "headers": {"x-plan": "{{ profile.fields.plan }}"},
             "body": {"coupon": "{{ variables.coupon }}", "n": "{{ variables.amount }}",
                      "items": ["{{ trigger.properties.sku }}", "{{ run.id }}"]}},
            {"id": "done", "type": "exit"}
        ]
    })
}

#[test]
fn a_good_flow_parses() {
    assert_eq!(lines(good()), Vec::<String>::new());
    let fields = fields();
    let segments = BTreeSet::from(["lapsed".to_string()]);
    let spec = parse(
        &good(),
        &Checks {
            fields: &fields,
            segments: &segments,
            check_url: &|_| Ok(()),
            max_depth: 16,
        },
    )
    .unwrap();
    assert_eq!(spec.steps.len(), 4);
    assert_eq!(spec.after(0), Some("check"));
    assert_eq!(spec.after(3), None);
    assert!(spec.redacts("amount"));
    assert!(!spec.redacts("coupon"));
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let mut doc = good();
    doc["variables"]["coupon"]["default"] = json!(5);
    doc["variables"]["bad name"] = json!({"type": "text"});
    doc["variables"]["when"] = json!({"type": "date"});
    doc["starts"]["events"][0]["segment"] = json!("nope");
    doc["steps"][1]["then"] = json!("pots");
    doc["steps"][1]["condition"]["conditions"][0]["field"] = json!("plna");
    doc["steps"][2]["body"]["coupon"] = json!("{{ variables.copon }}");
    doc["steps"][2]["headers"]["x-plan"] = json!("{{ profile.fields.tier }}");
    doc["steps"][2]["body"]["broken"] = json!("{{ variables.coupon ");
    doc["steps"][2]["url"] = json!("http://127.0.0.1/x");
    doc["extra"] = json!(1);
    let got = lines(doc);
    let want = [
        "extra: unknown key; a flow has name, description, variables, starts, entry, redact, steps",
        "variables.bad name: a variable name is a letter then letters, digits or _ (at most 64)",
        "variables.coupon.default: 5 is not text (a JSON string); the variable's type is text",
        "variables.when: unknown variant `date`, expected one of `text`, `number`, `boolean`, `datetime`, `json`",
        "starts.events[0].segment: no segment 'nope' in this environment",
        "steps[1].condition.conditions[0].field: ",
        "steps[2].url: 'http://127.0.0.1/x': 127.0.0.1 is a loopback address",
        "steps[1].then: no step 'pots'; steps are check, done, post, wait",
        "steps[2]: no step reaches 'post' (a run starts at the first step)",
        "steps[2].url: ",
        "steps[2].headers.x-plan: 'profile.fields.tier': no custom field 'tier'; declared: plan",
        "steps[2].body.broken: does not compile: syntax error",
        "steps[2].body.coupon: 'variables.copon': no variable 'copon'; the flow declares amount, bad name, coupon",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
}

#[test]
fn a_templated_host_is_refused() {
    let mut doc = good();
    doc["steps"][2]["url"] = json!("https://{{ variables.coupon }}.example/x");
    assert_eq!(
        lines(doc),
        vec![
            "steps[2].url: the scheme and host must be written out; templates may fill the path and query"
        ]
    );
}

#[test]
fn step_shapes_are_checked() {
    let doc = json!({"name": "x", "steps": [
        {"id": "a", "type": "delay"},
        {"id": "b", "type": "teleport"},
        {"id": "c", "type": "webhook", "url": "https://x.example", "retries": 3},
        {"id": "a", "type": "wait_for_event", "event": "buy", "timeout": "0s"},
        {"id": "d", "type": "webhook", "url": "https://x.example", "method": "FETCH",
         "on_status": {"4x": "retry"}},
    ]});
    let got = lines(doc);
    let want = [
        "steps[0]: a delay has either duration or until",
        "steps[1]: unknown variant `teleport`",
        "steps[2]: unknown field `retries`",
        "steps[3].id: 'a' names two steps",
        "steps[3].timeout: must be more than 0 and at most 366 days",
        "steps[4].method: 'FETCH' is not one of GET, POST, PUT, PATCH, DELETE",
        "steps[4].on_status.4x: a key is a status code (404) or a class (4xx)",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
}

#[test]
fn entry_rules_and_starts_are_checked() {
    let mut doc = good();
    doc["entry"] = json!({"max_starts": 2});
    doc["starts"] = json!({"events": [{"names": ["flow-completed"], "categories": ["bogus"]}, {}]});
    let got = lines(doc);
    for w in [
        "entry: max_starts and per go together",
        "starts.events[0].names[0]: 'flow-completed': flow-* events never start flows",
        "starts.events[0].categories[0]: 'bogus' is not one of platform, sdk, custom, system",
        "starts.events[1]: names no event",
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
}
