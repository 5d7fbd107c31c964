//! What a webhook message carries: the JSON body (the exact bytes signed and sent) of a
//! batch of events, each optionally with the user's current profile.

use std::collections::HashMap;

use datafusion::prelude::{col, lit};
use serde_json::Value;

use super::follow::NewEvent;
use crate::Result;
use crate::storage::Store;

/// The JSON body of one message: the exact bytes that are signed and sent.
pub fn body(
    env: &str,
    sub_id: &str,
    events: &[NewEvent],
    profiles: &HashMap<String, Value>,
) -> String {
    let mut out =
        String::with_capacity(128 + events.iter().map(|e| e.json.len() + 1).sum::<usize>());
    out.push_str(r#"{"type":"events","environment":"#);
    out.push_str(&Value::from(env).to_string());
    out.push_str(r#","subscription_id":"#);
    out.push_str(&Value::from(sub_id).to_string());
    out.push_str(r#","events":["#);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match profiles.get(&e.user_id) {
            Some(p) => {
                // `{…}` -> `{…,"profile":{…}}`
                out.push_str(&e.json[..e.json.len() - 1]);
                out.push_str(r#","profile":"#);
                out.push_str(&p.to_string());
                out.push('}');
            }
            None => out.push_str(&e.json),
        }
    }
    out.push_str("]}");
    out
}

/// The current profile (tags, typed fields, activity) of each of `users`.
pub async fn profiles(
    store: &Store,
    env: &str,
    mut users: Vec<String>,
) -> Result<HashMap<String, Value>> {
    users.sort();
    users.dedup();
    let (ctx, narrowing) = crate::query::profiles_session(store, env).await?;
    let list: Vec<_> = users.iter().map(|u| lit(u.as_str())).collect();
    let users = col("user_id").in_list(list, false);
    narrowing.apply(&ctx, users.clone()).await?;
    let batches = ctx
        .table("profiles")
        .await?
        .filter(users)?
        .collect()
        .await?;
    let mut out = HashMap::new();
    for mut row in crate::query::to_json_rows(&batches)? {
        let Some(obj) = row.as_object_mut() else {
            continue;
        };
        obj.remove("environment");
        if let Some(Value::String(fields)) = obj.get("fields")
            && let Ok(parsed) = serde_json::from_str::<Value>(fields)
        {
            obj.insert("fields".into(), parsed);
        }
        if let Some(Value::String(user)) = obj.remove("user_id") {
            out.insert(user, row);
        }
    }
    Ok(out)
}
