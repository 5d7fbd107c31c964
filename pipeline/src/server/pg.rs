//! The Postgres wire protocol door (`query.pg_listen`), on `pgwire` with
//! `datafusion-postgres`' pieces: its SQL compatibility parser (which rewrites what psql
//! and BI tools send to `pg_catalog`), its `pg_catalog` schema and functions, its Arrow
//! to Postgres row encoding and its `SET`/`SHOW`/transaction answers.
//!
//! Database = the environment, password = a read or admin key of it (cleartext
//! password authentication; TLS when `query.tls_cert`/`tls_key` are set). Every
//! statement runs through the shared [`Engine`], so it is read-only, sees only the
//! environment's views and runs under `[query]`'s limits.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type,
};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables,
};
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, LoginInfo, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, METADATA_DATABASE, PgWireConnectionState, PgWireServerHandlers,
    Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio::net::TcpListener;

use crate::auth::{AuthError, Credential, KeyCache, Reader};
use crate::query::policy;
use crate::query::time_travel::{self, AsOf};
use crate::query::{Engine, Planned, QueryError};

/// Serves the Postgres protocol on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    keys: Arc<KeyCache>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
) {
    let door = Arc::new(PgDoor {
        keys,
        parser: Arc::new(PgParser {
            sql: PostgresCompatibilityParser::new(),
            engine: engine.clone(),
        }),
        engine,
    });
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "postgres: accept failed");
                continue;
            }
        };
        let door = door.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, door).await {
                tracing::debug!(%peer, error = %e, "postgres: connection ended");
            }
        });
    }
}

/// A TLS acceptor from PEM files (certificate chain, PKCS#8 or RSA key).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> crate::Result<pgwire::tokio::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid =
        |what: &str, e: &dyn std::fmt::Display| crate::Error::Config(format!("query.{what}: {e}"));
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid("tls_cert", &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("tls_cert", &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid("tls_key", &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid("tls_cert", &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid("tls_cert", &e))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

struct PgDoor {
    engine: Arc<Engine>,
    keys: Arc<KeyCache>,
    parser: Arc<PgParser>,
}

impl PgWireServerHandlers for PgDoor {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(self.handler())
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(self.handler())
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(KeyStartup {
            keys: self.keys.clone(),
            parameters: DefaultServerParameterProvider::default(),
        })
    }
}

impl PgDoor {
    fn handler(&self) -> PgHandler {
        PgHandler {
            engine: self.engine.clone(),
            parser: self.parser.clone(),
        }
    }
}

/// Password authentication against tidemark's keys: the database names the
/// environment, the password is a read or admin key of it.
struct KeyStartup {
    keys: Arc<KeyCache>,
    parameters: DefaultServerParameterProvider,
}

fn pg_error(severity: &str, code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        code.to_string(),
        message.into(),
    )))
}

#[async_trait]
impl StartupHandler for KeyStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                let login = LoginInfo::from_client_info(client);
                let env = login
                    .database()
                    .or(login.user())
                    .unwrap_or_default()
                    .to_string();
                let token = pwd.password.trim();
                self.keys
                    .authorize::<Reader>(Credential::Token(token), Some(&env))
                    .await
                    .map_err(|e| match e {
                        AuthError::Unauthenticated(m) => pg_error(
                            "FATAL",
                            "28P01",
                            format!("password authentication failed: {m}"),
                        ),
                        AuthError::Forbidden(m) => pg_error(
                            "FATAL",
                            "28000",
                            format!("database '{env}' (the environment): {m}"),
                        ),
                    })?;
                client
                    .metadata_mut()
                    .insert(METADATA_DATABASE.to_string(), env);
                finish_authentication(client, &self.parameters).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A statement of the extended protocol: planned at Parse (so Describe can answer), or a
/// client-compatibility statement (`SET`, `SHOW`, `BEGIN`, …) answered by the hooks.
#[derive(Clone)]
enum PgStatement {
    Query(Box<Planned>),
    Compat(Box<Statement>),
}

struct PgParser {
    sql: PostgresCompatibilityParser,
    engine: Arc<Engine>,
}

fn environment(client: &(impl ClientInfo + ?Sized)) -> PgWireResult<String> {
    client
        .metadata()
        .get(METADATA_DATABASE)
        .cloned()
        .ok_or_else(|| {
            pg_error(
                "FATAL",
                "3D000",
                "no database (environment) in the startup message",
            )
        })
}

/// A query failure as a Postgres error with its SQLSTATE.
fn query_error(e: QueryError) -> PgWireError {
    let code = match &e {
        QueryError::Refused(_) => "42501",
        QueryError::Invalid(_) => "42000",
        QueryError::Timeout(_) => "57014",
        QueryError::Memory { .. } => "53200",
        QueryError::TooMany { .. } => "53300",
        QueryError::TooLarge(_) => "54000",
        QueryError::Internal(_) => "XX000",
    };
    pg_error("ERROR", code, e.to_string())
}

/// What clients send around their queries, answered without the engine: `BEGIN` /
/// `COMMIT` / `ROLLBACK`, `SET` of a client setting, `SHOW`. A `SET` of anything else
/// (DataFusion's settings) is refused like at every door.
fn is_compat(statement: &Statement) -> Result<bool, QueryError> {
    const CLIENT_SETTINGS: [&str; 9] = [
        "datestyle",
        "bytea_output",
        "intervalstyle",
        "application_name",
        "extra_float_digits",
        "search_path",
        "statement_timeout",
        "client_encoding",
        "client_min_messages",
    ];
    match statement {
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Ok(true),
        Statement::ShowVariable { .. } => Ok(true),
        Statement::Set(Set::SetTimeZone { .. }) => Ok(true),
        Statement::Set(Set::SingleAssignment { variable, .. }) => {
            let name = variable.to_string().to_lowercase();
            if CLIENT_SETTINGS.contains(&name.as_str()) {
                Ok(true)
            } else {
                Err(QueryError::Refused(policy::Refused(format!(
                    "SET {name} is not allowed: queries are read-only and the server's \
                     settings are its operator's (client settings such as DateStyle, \
                     search_path and application_name are accepted)"
                ))))
            }
        }
        _ => Ok(false),
    }
}

#[async_trait]
impl QueryParser for PgParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let env = environment(client)?;
        let (statements, as_of) = self.parse(sql)?;
        let Some(statement) = statements.into_iter().next() else {
            return Ok(None);
        };
        if is_compat(&statement).map_err(query_error)? {
            return Ok(Some(PgStatement::Compat(Box::new(statement))));
        }
        Ok(Some(PgStatement::Query(Box::new(
            self.plan(client, &env, statement, &as_of).await?,
        ))))
    }

    fn get_parameter_types(&self, stmt: &PgStatement) -> PgWireResult<Vec<Type>> {
        let PgStatement::Query(planned) = stmt else {
            return Ok(Vec::new());
        };
        parameter_types(planned)?
            .into_iter()
            .map(|t| match t {
                Some(t) => into_pg_type(&t),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match stmt {
            PgStatement::Query(planned) => arrow_schema_to_pg_fields(
                &planned.schema(),
                format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            // `SHOW x` answers one text column; the other statements answer none.
            PgStatement::Compat(statement) => match statement.as_ref() {
                Statement::ShowVariable { variable } => {
                    let name = variable
                        .iter()
                        .map(|v| v.value.clone())
                        .collect::<Vec<_>>()
                        .join("_");
                    let format = format.unwrap_or(&Format::UnifiedText).format_for(0);
                    Ok(vec![FieldInfo::new(name, None, None, Type::TEXT, format)])
                }
                _ => Ok(Vec::new()),
            },
        }
    }
}

impl PgParser {
    /// The statements of `sql`, after time travel was taken out of its text.
    fn parse(&self, sql: &str) -> PgWireResult<(Vec<Statement>, Vec<AsOf>)> {
        crate::query::depth::check(sql, crate::query::depth::MAX_EXPRESSION_DEPTH)
            .map_err(|m| query_error(QueryError::Invalid(m)))?;
        let (sql, as_of) =
            time_travel::rewrite(sql).map_err(|m| query_error(QueryError::Invalid(m)))?;
        let statements = self.sql.parse(&sql).map_err(|e| {
            // DataFusion's own statements (`CREATE EXTERNAL TABLE`, `COPY … TO`) are not
            // Postgres: say they are refused rather than that they do not parse.
            let refused = datafusion::sql::parser::DFParser::parse_sql(&sql)
                .ok()
                .and_then(|parsed| parsed.iter().find_map(|s| policy::check(s).err()));
            match refused {
                Some(r) => query_error(QueryError::Refused(r)),
                None => pg_error("ERROR", "42601", e.to_string()),
            }
        })?;
        Ok((statements, as_of))
    }

    async fn plan(
        &self,
        client: &(impl ClientInfo + ?Sized),
        env: &str,
        statement: Statement,
        as_of: &[AsOf],
    ) -> PgWireResult<Planned> {
        let catalog = self.catalog(client, env).await?;
        let setup = move |ctx: &datafusion::prelude::SessionContext| -> crate::Result<()> {
            let df = |e: Box<datafusion::error::DataFusionError>| crate::Error::DataFusion(*e);
            setup_pg_catalog(ctx, "datafusion", EmptyContextProvider).map_err(df)?;
            if let Some(c) = ctx.catalog("datafusion") {
                c.register_schema("pg_catalog", catalog.clone())?;
            }
            Ok(())
        };
        self.engine
            .prepare_statement_with(
                Some(env),
                DfStatement::Statement(Box::new(statement)),
                as_of,
                &setup,
            )
            .await
            .map_err(query_error)
    }

    /// The connection's `pg_catalog`: built at its first statement over the
    /// environment's tables and kept, so the OIDs it hands out (psql's `\d NAME` looks a
    /// table up by name, then its columns by OID, in two queries) stay the same.
    async fn catalog(
        &self,
        client: &(impl ClientInfo + ?Sized),
        env: &str,
    ) -> PgWireResult<Arc<PgCatalog>> {
        if let Some(c) = client.session_extensions().get::<ConnectionCatalog>() {
            return Ok(c.0.clone());
        }
        let failed = |e: crate::Error| query_error(QueryError::from(e));
        let meta = crate::query::session(self.engine.store(), Some(env))
            .await
            .map_err(failed)?;
        let df = |e: datafusion::error::DataFusionError| failed(crate::Error::DataFusion(e));
        let statics = PgCatalogStaticTables::try_new().map_err(df)?;
        let catalog = Arc::new(
            PgCatalogSchemaProvider::try_new(
                meta.state().catalog_list().clone(),
                Arc::new(statics),
                EmptyContextProvider,
            )
            .map_err(df)?,
        );
        client
            .session_extensions()
            .insert(ConnectionCatalog(catalog.clone()));
        Ok(catalog)
    }
}

type PgCatalog = PgCatalogSchemaProvider<
    Arc<dyn datafusion::catalog::CatalogProviderList>,
    EmptyContextProvider,
>;

/// A connection's [`PgCatalog`], in its session extensions.
struct ConnectionCatalog(Arc<PgCatalog>);

struct PgHandler {
    engine: Arc<Engine>,
    parser: Arc<PgParser>,
}

impl PgHandler {
    /// Rows of a planned statement as a Postgres answer.
    async fn run(
        &self,
        client: &(impl ClientInfo + ?Sized),
        planned: &Planned,
        params: ParamValues,
        format: &Format,
    ) -> PgWireResult<Response> {
        let rows = self
            .engine
            .execute_params(planned, params)
            .await
            .map_err(query_error)?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &rows.schema,
            format,
            Some(options),
        )?);
        let encode = fields.clone();
        let data = rows
            .stream
            .map(move |batch| {
                let rows: Box<dyn Iterator<Item = PgWireResult<_>> + Send + Sync> = match batch {
                    Ok(b) => encode_recordbatch(encode.clone(), b),
                    Err(e) => Box::new(std::iter::once(Err(query_error(e)))),
                };
                futures::stream::iter(rows)
            })
            .flatten();
        Ok(Response::Query(QueryResponse::new(fields, data)))
    }

    /// The hooks' answer to a client-compatibility statement.
    async fn compat<C>(&self, client: &mut C, statement: &Statement) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // The hooks want a session for `SHOW`/`SET TIME ZONE`; an empty one, so nothing
        // they do reaches a query's settings.
        let scratch = datafusion::prelude::SessionContext::new();
        let hooks: [&dyn QueryHook; 2] = [&TransactionStatementHook, &SetShowHook];
        for hook in hooks {
            if let Some(r) = hook.handle_simple_query(statement, &scratch, client).await {
                return r;
            }
        }
        Ok(Response::Execution(Tag::new("SET")))
    }
}

#[async_trait]
impl SimpleQueryHandler for PgHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let env = environment(client)?;
        let (statements, as_of) = self.parser.parse(query)?;
        let mut out = Vec::with_capacity(statements.len());
        for statement in statements {
            if is_compat(&statement).map_err(query_error)? {
                out.push(self.compat(client, &statement).await?);
                continue;
            }
            let planned = self.parser.plan(client, &env, statement, &as_of).await?;
            out.push(
                self.run(
                    client,
                    &planned,
                    ParamValues::List(vec![]),
                    &Format::UnifiedText,
                )
                .await?,
            );
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgHandler {
    type Statement = PgStatement;
    type QueryParser = PgParser;

    fn query_parser(&self) -> Arc<PgParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            PgStatement::Compat(statement) => self.compat(client, statement).await,
            PgStatement::Query(planned) => {
                let types = parameter_types(planned)?;
                let inferred: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
                let params = deserialize_parameters(portal, &inferred)?;
                self.run(client, planned, params, &portal.result_column_format)
                    .await
            }
        }
    }
}

/// The types DataFusion inferred for `$1`, `$2`, … in order.
fn parameter_types(planned: &Planned) -> PgWireResult<Vec<Option<DataType>>> {
    planned.parameter_types().map_err(query_error)
}
