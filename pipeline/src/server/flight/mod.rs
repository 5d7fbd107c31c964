//! The Arrow Flight SQL door (`query.flight_listen`), on `arrow-flight`'s
//! `FlightSqlService` and tonic.
//!
//! Authentication: `authorization: Bearer <key>` on every call (a read or admin key; the
//! key names its environment), or a handshake with basic auth (user = environment,
//! password = key) answered with that bearer token. Statements and prepared statements
//! (with parameters bound as a one-row batch, as ADBC and JDBC send them) run through the
//! shared [`Engine`]; `GetCatalogs`, `GetDbSchemas`, `GetTables`, `GetTableTypes` and
//! `GetSqlInfo` describe the environment's views only ([`catalog`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use datafusion::common::{ParamValues, ScalarValue};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{AuthError, Credential, KeyCache, Reader};

mod catalog;
use crate::query::encode::{plain_schema, to_plain};
use crate::query::{Engine, Planned, QueryError};
use catalog::Catalog;

/// Serves Flight SQL on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, engine: Arc<Engine>, keys: Arc<KeyCache>) {
    let service = FlightDoor {
        engine,
        keys,
        handles: Arc::new(Mutex::new(HashMap::new())),
    };
    // Without TCP_NODELAY a small answer waits out the peer's delayed ACK (~40 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(service))
        .serve_with_incoming(incoming)
        .await
    {
        tracing::error!(error = %e, "flight sql server stopped");
    }
}

/// A planned statement waiting for its `DoGet` (statements) or for parameters and
/// `DoGet`s (prepared statements).
struct Handle {
    environment: String,
    planned: Planned,
    params: ParamValues,
    one_shot: bool,
    created: Instant,
}

/// Handles nobody fetched are dropped after this.
const HANDLE_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Clone)]
struct FlightDoor {
    engine: Arc<Engine>,
    keys: Arc<KeyCache>,
    handles: Arc<Mutex<HashMap<Vec<u8>, Handle>>>,
}

/// A query failure as a gRPC status.
fn status(e: QueryError) -> Status {
    let message = e.to_string();
    match e {
        QueryError::Refused(_) => Status::permission_denied(message),
        QueryError::Invalid(_) => Status::invalid_argument(message),
        QueryError::Timeout(_) => Status::deadline_exceeded(message),
        QueryError::Memory { .. } | QueryError::TooMany { .. } | QueryError::TooLarge(_) => {
            Status::resource_exhausted(message)
        }
        QueryError::Internal(e) if e.is_retryable() => Status::unavailable(message),
        QueryError::Internal(_) => Status::internal(message),
    }
}

/// A refused key as a gRPC status.
fn refused(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(m) => Status::unauthenticated(m),
        AuthError::Forbidden(m) => Status::permission_denied(m),
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

impl FlightDoor {
    /// The environment of the request's bearer key (read or admin).
    async fn environment<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let principal = self
            .keys
            .authorize::<Reader>(Credential::Header(header), None)
            .await
            .map_err(refused)?;
        Ok(principal.environment)
    }

    /// Plans `sql` for `env` through the shared engine.
    async fn plan(&self, env: &str, sql: &str) -> Result<Planned, Status> {
        self.engine.prepare(Some(env), sql).await.map_err(status)
    }

    /// Keeps a planned statement (`one_shot`: a ticket's, taken by its one `DoGet`) and
    /// returns its handle.
    fn store_handle(&self, environment: String, planned: Planned, one_shot: bool) -> Vec<u8> {
        let handle = Handle {
            environment,
            planned,
            params: ParamValues::List(vec![]),
            one_shot,
            created: Instant::now(),
        };
        let id = uuid::Uuid::new_v4().as_bytes().to_vec();
        let mut handles = self.handles.lock().expect("handles lock");
        handles.retain(|_, h| h.created.elapsed() < HANDLE_TTL);
        handles.insert(id.clone(), handle);
        id
    }

    /// The planned statement and parameters of `id`, if it is the caller's.
    fn take_handle(&self, id: &[u8], env: &str) -> Result<(Planned, ParamValues), Status> {
        let mut handles = self.handles.lock().expect("handles lock");
        let missing = || Status::not_found("no such statement handle (expired or closed)");
        let h = handles.get(id).ok_or_else(missing)?;
        if h.environment != env {
            return Err(missing());
        }
        let out = (h.planned.clone(), h.params.clone());
        if h.one_shot {
            handles.remove(id);
        }
        Ok(out)
    }

    async fn run(
        &self,
        planned: &Planned,
        params: ParamValues,
    ) -> Result<Response<DoGetStream>, Status> {
        let rows = self
            .engine
            .execute_params(planned, params)
            .await
            .map_err(status)?;
        let schema = plain_schema(&rows.schema);
        let to = schema.clone();
        let batches = rows.stream.map(move |b| {
            let b = b.map_err(|e| FlightError::Tonic(Box::new(status(e))))?;
            to_plain(b, &to).map_err(FlightError::from)
        });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    fn info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| internal("encoding the schema", e))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// A metadata command's `FlightInfo`: its schema and the command itself as the ticket.
    async fn describe<C: Catalog>(
        &self,
        request: Request<FlightDescriptor>,
        command: C,
    ) -> Result<Response<FlightInfo>, Status> {
        self.environment(&request).await?;
        self.info(
            &command.schema(),
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    /// `DoGet` of a catalog command: its rows for the caller's environment.
    async fn catalog<C: Catalog>(
        &self,
        command: C,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let env = self.environment(&request).await?;
        let tables = if C::NEEDS_TABLES {
            self.tables(&env).await?
        } else {
            Vec::new()
        };
        let (schema, batch) = command.rows(&tables)?;
        Ok(encode_batch(schema, batch))
    }

    /// The environment's views and their schemas.
    async fn tables(&self, env: &str) -> Result<Vec<(String, Arc<Schema>, &'static str)>, Status> {
        let ctx = crate::query::session(self.engine.store(), Some(env))
            .await
            .map_err(|e| status(e.into()))?;
        let Some(schema) = ctx.catalog("datafusion").and_then(|c| c.schema("public")) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            if let Ok(Some(t)) = schema.table(&name).await {
                let kind = match t.table_type() {
                    datafusion::datasource::TableType::View => "VIEW",
                    _ => "TABLE",
                };
                out.push((name, t.schema(), kind));
            }
        }
        Ok(out)
    }
}

fn encode_batch(
    schema: SchemaRef,
    batch: Result<RecordBatch, FlightError>,
) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

#[tonic::async_trait]
impl FlightSqlService for FlightDoor {
    type FlightService = FlightDoor;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let key = if let Some(basic) = header.strip_prefix("Basic ") {
            // Padded (RFC 7617) or not (ADBC's Go driver).
            let b64 = basic.trim().trim_end_matches('=');
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64)
                .map_err(|e| {
                    Status::unauthenticated(format!("basic auth is not valid base64: {e}"))
                })?;
            let text = String::from_utf8(decoded)
                .map_err(|_| Status::unauthenticated("basic auth is not UTF-8"))?;
            let (env, key) = text
                .split_once(':')
                .ok_or_else(|| Status::unauthenticated("basic auth must be environment:key"))?;
            self.keys
                .authorize::<Reader>(Credential::Token(key.trim()), Some(env))
                .await
                .map_err(|e| match e {
                    AuthError::Forbidden(m) => {
                        Status::permission_denied(format!("user '{env}' (the environment): {m}"))
                    }
                    e => refused(e),
                })?;
            key.to_string()
        } else if let Some(key) = header.strip_prefix("Bearer ") {
            self.environment(&request).await?;
            key.to_string()
        } else {
            return Err(Status::unauthenticated(
                "send basic auth (environment and a read key) or a bearer key",
            ));
        };
        let token = format!("Bearer {key}");
        let output = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: key.clone().into_bytes().into(),
        })]);
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(output));
        let value = MetadataValue::try_from(token.as_str())
            .map_err(|_| Status::unauthenticated("the key is not a valid header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let env = self.environment(&request).await?;
        let planned = self.plan(&env, &query.query).await?;
        let schema = plain_schema(&planned.schema());
        let handle = self.store_handle(env, planned, true);
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        self.info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let env = self.environment(&request).await?;
        let (planned, params) = self.take_handle(&ticket.statement_handle, &env)?;
        self.run(&planned, params).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let env = self.environment(&request).await?;
        let planned = self.plan(&env, &query.query).await?;
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let schema_bytes = |s: &Schema| -> Result<bytes::Bytes, Status> {
            let IpcMessage(b) = SchemaAsIpc::new(s, &options)
                .try_into()
                .map_err(|e| internal("encoding a schema", e))?;
            Ok(b)
        };
        let dataset_schema = schema_bytes(&plain_schema(&planned.schema()))?;
        let parameter_schema = schema_bytes(&planned.parameter_schema().map_err(status)?)?;
        let handle = self.store_handle(env, planned, false);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let env = self.environment(&request).await?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
        let params = match batches.iter().find(|b| b.num_rows() > 0) {
            None => Vec::new(),
            Some(b)
                if b.num_rows() > 1
                    || batches.iter().map(RecordBatch::num_rows).sum::<usize>() > 1 =>
            {
                return Err(Status::invalid_argument(
                    "parameters: bind one row of values (batches of several rows are not supported)",
                ));
            }
            Some(b) => b
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    ScalarValue::try_from_array(c, 0)
                        .map_err(|e| Status::invalid_argument(format!("parameter {}: {e}", i + 1)))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut handles = self.handles.lock().expect("handles lock");
        match handles.get_mut(query.prepared_statement_handle.as_ref()) {
            Some(h) if h.environment == env => {
                h.params = ParamValues::List(params.into_iter().map(Into::into).collect());
            }
            _ => {
                return Err(Status::not_found(
                    "no such prepared statement (expired or closed)",
                ));
            }
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let env = self.environment(&request).await?;
        let (planned, _) = self.take_handle(&cmd.prepared_statement_handle, &env)?;
        self.info(
            &plain_schema(&planned.schema()),
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let env = self.environment(&request).await?;
        let (planned, params) = self.take_handle(&query.prepared_statement_handle, &env)?;
        self.run(&planned, params).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let env = self.environment(&request).await?;
        let mut handles = self.handles.lock().expect("handles lock");
        if handles
            .get(query.prepared_statement_handle.as_ref())
            .is_some_and(|h| h.environment == env)
        {
            handles.remove(query.prepared_statement_handle.as_ref());
        }
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.describe(request, query).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.catalog(query, request).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.describe(request, query).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.catalog(query, request).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.describe(request, query).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.catalog(query, request).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.describe(request, query).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.catalog(query, request).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.describe(request, query).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.catalog(query, request).await
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "{} is not supported (queries are read-only)",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
