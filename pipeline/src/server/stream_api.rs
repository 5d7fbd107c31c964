//! `GET /v1/{env}/events/stream` (read or admin key): the environment's events as
//! server-sent events, in commit order, as the flusher commits them to `events`.
//!
//! Each event is one SSE message: `id:` its position `V-N` (the `N`th event of the
//! environment in `events` version `V`, from 0), `data:` the event as JSON (the same
//! object webhooks carry). A client that reconnects with `Last-Event-ID: V-N` (browsers'
//! `EventSource` and Arroyo's SSE source do) gets the events after it, none twice and
//! none missed; `?after=V-N` or `?after=V` (every event after version `V`) do the same for
//! clients that cannot set headers. Without a position the stream starts at the newest
//! version: only events committed from now on.
//!
//! Filters: `event_name`, `category` and `user_id`, each repeatable or comma-separated
//! (an event passes when it matches one value of every filter given). Positions count all
//! of the environment's events, so a filtered stream's ids stay valid for any filter.
//!
//! Each connection follows the log on its own (one read per new version, a poll every
//! [`POLL`] when idle) and hands events to the response through a small bounded channel:
//! a slow consumer holds back only its own reader, never ingest or other streams.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::mpsc;

use super::AppState;
use super::auth::{Authorized, Reader};
use super::error::ApiError;
use crate::webhooks::follow::{Follower, NewEvent};

/// How long an idle stream waits before looking for a new version again.
pub const POLL: Duration = Duration::from_millis(200);
/// Versions read per step (each is one object read plus its new files).
const COMMITS_PER_READ: i64 = 16;
/// Messages buffered between the reader and the response.
const CHANNEL: usize = 256;

/// A place in the stream: after event `index` of version `version`, or after the whole
/// version when `index` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub version: i64,
    pub index: Option<u64>,
}

impl Position {
    /// `V-N` or `V`, both whole numbers.
    pub fn parse(text: &str) -> Result<Position, String> {
        let bad = || format!("'{text}' is not a stream position (VERSION-INDEX or VERSION)");
        let (version, index) = match text.trim().split_once('-') {
            Some((v, n)) => (v, Some(n.parse::<u64>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let version = version.parse::<i64>().map_err(|_| bad())?;
        if version < 0 {
            return Err(bad());
        }
        Ok(Position { version, index })
    }

    /// The SSE id of event `index` of `version`.
    pub fn id(version: i64, index: u64) -> String {
        format!("{version}-{index}")
    }
}

/// `V-N`, or `V` for a whole version: the text [`Position::parse`] reads.
impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}", Position::id(self.version, i)),
            None => write!(f, "{}", self.version),
        }
    }
}

/// Which events a stream carries.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filter {
    pub event_names: HashSet<String>,
    pub categories: HashSet<String>,
    pub user_ids: HashSet<String>,
}

impl Filter {
    pub fn matches(&self, e: &NewEvent) -> bool {
        let ok = |set: &HashSet<String>, v: &String| set.is_empty() || set.contains(v);
        ok(&self.event_names, &e.event_name)
            && ok(&self.categories, &e.category)
            && ok(&self.user_ids, &e.user_id)
    }
}

/// The stream's query string: filters and `after`. Errors name the parameter.
pub fn parse_query(query: &str) -> Result<(Filter, Option<Position>), String> {
    let mut filter = Filter::default();
    let mut after = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let set = match k.as_ref() {
            "event_name" => &mut filter.event_names,
            "category" => &mut filter.categories,
            "user_id" => &mut filter.user_ids,
            "after" => {
                after = Some(Position::parse(&v).map_err(|e| format!("after: {e}"))?);
                continue;
            }
            other => {
                return Err(format!(
                    "unknown query parameter '{other}'; known: event_name, category, user_id, after"
                ));
            }
        };
        for value in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            set.insert(value.to_string());
        }
    }
    Ok((filter, after))
}

/// Tracks the position while reading: which events of a read are new, and their ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Versions up to this one are done (all their events sent or skipped).
    pub done: i64,
    /// Inside version `done + 1`, events up to this index were sent before a reconnect.
    skip_through: Option<u64>,
}

impl Cursor {
    pub fn at(position: Position) -> Cursor {
        match position.index {
            None => Cursor {
                done: position.version,
                skip_through: None,
            },
            Some(i) => Cursor {
                done: position.version - 1,
                skip_through: Some(i),
            },
        }
    }

    /// The events of a read (versions `done + 1 ..= last`, in order) that come after the
    /// cursor, each with its id; moves the cursor to `last`.
    pub fn advance<'a>(
        &mut self,
        last: i64,
        events: &'a [NewEvent],
    ) -> Vec<(String, &'a NewEvent)> {
        let mut out = Vec::with_capacity(events.len());
        let (mut version, mut index) = (i64::MIN, 0u64);
        for e in events {
            if e.version != version {
                (version, index) = (e.version, 0);
            } else {
                index += 1;
            }
            let resumed = version == self.done + 1
                && self.skip_through.is_some_and(|through| index <= through);
            if !resumed {
                out.push((Position::id(version, index), e));
            }
        }
        if last > self.done {
            self.done = last;
            self.skip_through = None;
        }
        out
    }
}

pub async fn stream(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Reader>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (filter, after) =
        parse_query(query.as_deref().unwrap_or_default()).map_err(ApiError::bad_request)?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID: not ASCII text"))?;
            Some(
                Position::parse(text)
                    .map_err(|e| ApiError::bad_request(format!("Last-Event-ID: {e}")))?,
            )
        }
    };
    // A reconnecting client's header wins over the URL it was first given.
    let follower = Follower::new(state.store.clone())?;
    let head = follower.head(-1).await?;
    let position = match last_event_id.or(after) {
        None => Position {
            version: head,
            index: None,
        },
        Some(p) if p.version > head => {
            return Err(ApiError::bad_request(format!(
                "position {}: version {} is after the newest version of events, {head}",
                p, p.version
            )));
        }
        Some(p) => p,
    };
    let cursor = Cursor::at(position);
    if cursor.done < head && !follower.has_version(cursor.done + 1).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::GONE,
            "gone",
            format!(
                "position {}: version {} of events is no longer in the log (log retention); \
                 start again without a position",
                position,
                cursor.done + 1
            ),
        ));
    }
    state.metrics.stream_connections.inc();
    let (tx, rx) = mpsc::channel(CHANNEL);
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        follow(follower, env, filter, cursor, tx, &metrics).await;
        metrics.stream_connections.dec();
    });
    Ok(Sse::new(receiver_stream(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn receiver_stream(rx: mpsc::Receiver<Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

/// Reads the log after `cursor` and sends every matching event until the client goes
/// away (the channel closes). A read error ends the stream with an `error` event.
async fn follow(
    follower: Follower,
    env: String,
    filter: Filter,
    mut cursor: Cursor,
    tx: mpsc::Sender<Event>,
    metrics: &crate::metrics::Metrics,
) {
    let envs = HashSet::from([env]);
    loop {
        let (last, events) = match follower.read(cursor.done, COMMITS_PER_READ, &envs).await {
            Ok(read) => read,
            Err(e) => {
                let data = serde_json::json!({"error": "stream_failed", "message": e.to_string()});
                let _ = tx
                    .send(Event::default().event("error").data(data.to_string()))
                    .await;
                return;
            }
        };
        let idle = last == cursor.done;
        for (id, e) in cursor.advance(last, &events) {
            if !filter.matches(e) {
                continue;
            }
            if tx
                .send(Event::default().id(id).data(&e.json))
                .await
                .is_err()
            {
                return;
            }
            metrics.stream_events.inc();
        }
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: i64, name: &str, user: &str) -> NewEvent {
        NewEvent {
            version,
            environment: "prod".into(),
            event_id: format!("{version}-{name}-{user}"),
            event_name: name.into(),
            category: "track".into(),
            user_id: user.into(),
            json: "{}".into(),
        }
    }

    #[test]
    fn positions_parse_and_refuse() {
        let cases: &[(&str, Result<Position, ()>)] = &[
            (
                "12-3",
                Ok(Position {
                    version: 12,
                    index: Some(3),
                }),
            ),
            (
                "12",
                Ok(Position {
                    version: 12,
                    index: None,
                }),
            ),
            (
                " 0-0 ",
                Ok(Position {
                    version: 0,
                    index: Some(0),
                }),
            ),
            ("12-", Err(())),
            ("-3", Err(())),
            ("a-1", Err(())),
            ("1-2-3", Err(())),
            ("", Err(())),
            ("99999999999999999999", Err(())),
        ];
        for (text, want) in cases {
            let got = Position::parse(text).map_err(|e| {
                assert!(e.contains(text.trim()) || text.is_empty(), "{e}");
            });
            assert_eq!(&got, want, "{text:?}");
        }
    }

    #[test]
    fn query_filters_and_errors_name_the_parameter() {
        let (f, after) = parse_query("event_name=a,b&event_name=c&user_id=u1&after=5-2").unwrap();
        assert_eq!(
            f.event_names,
            HashSet::from(["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(f.user_ids, HashSet::from(["u1".into()]));
        assert!(f.categories.is_empty());
        assert_eq!(
            after,
            Some(Position {
                version: 5,
                index: Some(2)
            })
        );
        let e = parse_query("user=u1").unwrap_err();
        assert!(e.contains("'user'") && e.contains("known"), "{e}");
        let e = parse_query("after=x").unwrap_err();
        assert!(e.starts_with("after: 'x'"), "{e}");

        let f = parse_query("event_name=a&category=track").unwrap().0;
        assert!(f.matches(&event(1, "a", "u")));
        assert!(!f.matches(&event(1, "b", "u")));
    }

    /// Ids count every event of a version; a resumed cursor skips what was sent, within
    /// the version it stopped in only; reads with no new version leave it where it was.
    #[test]
    fn cursor_ids_and_resumption() {
        let events = vec![
            event(4, "a", "u"),
            event(4, "b", "u"),
            event(4, "c", "u"),
            event(6, "d", "u"),
        ];
        let ids = |c: &mut Cursor, last, ev: &[NewEvent]| -> Vec<String> {
            c.advance(last, ev).into_iter().map(|(id, _)| id).collect()
        };

        let mut fresh = Cursor::at(Position {
            version: 3,
            index: None,
        });
        assert_eq!(ids(&mut fresh, 6, &events), ["4-0", "4-1", "4-2", "6-0"]);
        assert_eq!(fresh.done, 6);
        assert_eq!(ids(&mut fresh, 6, &[]), Vec::<String>::new());
        assert_eq!(fresh.done, 6);

        let mut resumed = Cursor::at(Position::parse("4-1").unwrap());
        assert_eq!(resumed.done, 3);
        assert_eq!(ids(&mut resumed, 6, &events), ["4-2", "6-0"]);

        let mut whole = Cursor::at(Position::parse("4").unwrap());
        assert_eq!(ids(&mut whole, 6, &events[3..]), ["6-0"]);

        // A resumed version that is read in a later step than its first: still skipped
        // until the cursor moves past it.
        let mut slow = Cursor::at(Position::parse("4-2").unwrap());
        assert_eq!(ids(&mut slow, 3, &[]), Vec::<String>::new());
        assert_eq!(ids(&mut slow, 6, &events), ["6-0"]);
    }
}
