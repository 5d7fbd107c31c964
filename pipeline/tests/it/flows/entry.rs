//! Entry rules that cap starts, a template bomb at run time, and an erased user.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn entry_rules_cap_starts_and_a_template_bomb_fails_only_its_step() {
    let (rx, ts, node, admin) = setup(&["u1", "u2", "u3"]).await;

    // One active run per user, at most 2 starts per hour: the refused starts are runs
    // that say why, and flow-capped events. (The run waits an hour: nothing here depends
    // on how fast the machine is.)
    publish(
        &node,
        &admin,
        json!({"id": "once", "name": "Once",
        "entry": {"one_active_run": true, "max_starts": 2, "per": "1h"},
        "steps": [{"id": "wait", "type": "delay", "duration": "1h"}]}),
    )
    .await;
    let start = node.url("/v1/default/flows/once/start");
    let mut statuses = Vec::new();
    for (n, cancel_after) in [(1, false), (2, true), (3, true), (4, false)] {
        let (s, b) = call("POST", &start, &admin, Some(json!({"user_id": "u1"}))).await;
        assert_eq!(s, 202, "{b}");
        let run = b["runs"][0]["run_id"].as_str().unwrap().to_string();
        let runs = runs_until(&node, &admin, "once", 30, |r| {
            r.len() == n
                && r.iter()
                    .all(|x| x["status"] != "running" || x["due_at"].is_string())
        })
        .await;
        let me = runs
            .iter()
            .find(|r| r["id"] == run.as_str())
            .unwrap()
            .clone();
        statuses.push(me["status"].as_str().unwrap().to_string());
        if me["status"] == "capped" {
            let e = me["error"].as_str().unwrap();
            assert!(
                e.contains("one active run per user")
                    || e.contains("2 times in the last 1h (at most 2)"),
                "{e}"
            );
        }
        if cancel_after {
            // free the user: cancel its active run
            let active = runs.iter().find(|r| r["status"] == "running").unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let (s, b) = call(
                "POST",
                &node.url(&format!("/v1/default/flows/once/runs/{active}/cancel")),
                &admin,
                None,
            )
            .await;
            assert_eq!(s, 202, "{b}");
            runs_until(&node, &admin, "once", 30, |r| {
                r.iter()
                    .any(|x| x["id"] == active.as_str() && x["status"] == "cancelled")
            })
            .await;
        }
    }
    assert_eq!(statuses, vec!["running", "capped", "running", "capped"]);
    let runs = runs_until(&node, &admin, "once", 0, |_| true).await;
    let capped: Vec<&str> = runs
        .iter()
        .filter(|r| r["status"] == "capped")
        .map(|r| r["error"].as_str().unwrap())
        .collect();
    assert!(
        capped.iter().any(|e| e.contains("one active run per user")),
        "{capped:?}"
    );
    assert!(
        capped
            .iter()
            .any(|e| e.contains("2 times in the last 1h (at most 2)")),
        "{capped:?}"
    );
    let capped = ts.sql_until(
        "select count(*) as n from events where event_name = 'flow-capped'",
        |r| r[0]["n"] == 2,
    );
    assert_eq!(capped[0]["n"], 2);

    // A template that compiles but runs out of fuel fails its step, with the reason;
    // another flow goes on.
    publish(&node, &admin, json!({"id": "bomb", "name": "Bomb",
        "steps": [{"id": "post", "type": "webhook", "url": format!("{}/ok/bomb", rx.base()),
                   "body": {"x": "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}"}}]})).await;
    publish(
        &node,
        &admin,
        json!({"id": "fine", "name": "Fine",
        "steps": [{"id": "post", "type": "webhook", "url": format!("{}/ok/fine", rx.base())}]}),
    )
    .await;
    for f in ["bomb", "fine"] {
        let (s, b) = call(
            "POST",
            &node.url(&format!("/v1/default/flows/{f}/start")),
            &admin,
            Some(json!({"user_id": "u2"})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    let runs = runs_until(&node, &admin, "bomb", 30, |r| {
        r.iter().any(|x| x["status"] == "failed")
    })
    .await;
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("body.x: ran out of its work budget"),
        "{runs:?}"
    );
    assert!(rx.wait("ok/fine", 30, |g| g.len() == 1).await);
    assert!(rx.at("ok/bomb").is_empty());

    // An erased user is no user: a start names it and starts nothing.
    let (s, b) = call("DELETE", &node.url("/v1/default/users/u3"), &admin, None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/flows/fine/start"),
        &admin,
        Some(json!({"user_id": "u3"})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        b["problems"][0]["message"],
        "no user 'u3' in environment 'default' (never seen, or erased)"
    );
}
