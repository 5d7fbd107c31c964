//! A node's doors: the HTTP API until shutdown, and the Postgres and Flight SQL doors when
//! configured.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::server::{AppState, flight, pg, router};
use crate::supervisor::Supervisor;
use crate::{Error, Result};

/// Serves the HTTP API on `listener` until `shutdown` completes or the supervisor stops;
/// then in-flight requests finish and new ones are refused.
pub fn serve_http(
    sup: &Supervisor,
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<std::io::Result<()>> {
    let mut stop_rx = sup.stop_signal();
    let app = router(state.clone());
    tokio::spawn(async move {
        let signal = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop_rx.changed() => {}
            }
            state.shutting_down.store(true, Ordering::Release);
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
    })
}

/// The Postgres and Flight SQL doors, when `query.pg_listen` / `query.flight_listen`
/// are set: bound now (a port in use fails the start), served until shutdown.
pub async fn start_sql(config: &Config, state: &AppState) -> Result<Vec<JoinHandle<()>>> {
    let q = &config.query;
    let mut doors = Vec::new();
    if let Some(pg) = q.pg_listen {
        let tls = match (&q.tls_cert, &q.tls_key) {
            (Some(cert), Some(key)) => Some(pg::tls_acceptor(cert, key)?),
            _ => None,
        };
        let listener = TcpListener::bind(pg)
            .await
            .map_err(|e| Error::Config(format!("query.pg_listen: cannot listen on {pg}: {e}")))?;
        let bound = listener.local_addr()?;
        println!(
            "tidemark: postgres protocol on {bound}{} (database = environment, password = a read key)",
            if tls.is_some() { " with TLS" } else { "" }
        );
        doors.push(tokio::spawn(pg::serve(
            listener,
            state.query.clone(),
            state.keys.clone(),
            tls,
        )));
    }
    if let Some(flight) = q.flight_listen {
        let listener = TcpListener::bind(flight).await.map_err(|e| {
            Error::Config(format!(
                "query.flight_listen: cannot listen on {flight}: {e}"
            ))
        })?;
        let bound = listener.local_addr()?;
        println!(
            "tidemark: flight sql on grpc://{bound} (bearer key, or basic auth environment:key)"
        );
        doors.push(tokio::spawn(flight::serve(
            listener,
            state.query.clone(),
            state.keys.clone(),
        )));
    }
    Ok(doors)
}
