//! The accounts service: the master of `account` rows.
//!
//! | request | does |
//! | --- | --- |
//! | `POST /accounts` `{"name", "email"}` | creates an account (201, the stored row) |
//! | `GET /accounts/{id}` | the account (404 when there is none) |
//! | `PATCH /accounts/{id}` `{"name"?, "email"?}` | changes the fields given (200, the stored row) |
//!
//! Every write goes through [`MasterModel::save_and_publish`]: the row and its replication
//! message are written in one transaction, and the [`OutboxRelay`] running in this process
//! publishes the message right after the commit.

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use chrono::NaiveDateTime;
use cqrs_diesel::{Config, MasterModel, OutboxRelay, Topology, Transport};
use diesel::prelude::*;
use diesel::{MysqlConnection, PgConnection, SqliteConnection};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::db::{
    Database, DatabaseUrl, Db, deserialize_utc, insert_with_next_id, now_utc, serialize_utc,
};
use crate::error::{ApiError, ServiceError};
use crate::service::{RunningService, declare_topology};

/// The Diesel schema of the accounts database (columns are documented by the SQL in `SCHEMA`).
#[allow(missing_docs)]
pub mod schema {
    diesel::table! {
        /// The accounts this service owns (and publishes).
        account (id) {
            id -> BigInt,
            name -> Text,
            email -> Text,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamp,
        }
    }
}

use schema::account;

/// An account: the master model, replicated as `cqrs_id` `account`.
///
/// `cqrs_revision` is bumped in SQL on every update and `cqrs_updated` set by
/// `save_and_publish`; the replica keeps the newest revision it receives.
#[derive(Debug, Clone, PartialEq, MasterModel, Queryable, Selectable, Serialize, Deserialize)]
#[cqrs(id = "account", table = account, tracked(name))]
#[diesel(table_name = account)]
pub struct Account {
    /// The primary key, allocated by the service (see [`insert_with_next_id`]).
    pub id: i64,
    /// The account holder's name.
    pub name: String,
    /// The account holder's email address.
    pub email: String,
    /// The revision: 0 when created, +1 on each update.
    #[serde(rename = "revision")]
    pub cqrs_revision: i32,
    /// When the row was last written (UTC).
    #[serde(
        rename = "updated_at",
        serialize_with = "serialize_utc",
        deserialize_with = "deserialize_utc"
    )]
    pub cqrs_updated: NaiveDateTime,
}

/// The body of `POST /accounts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// The account holder's name.
    pub name: String,
    /// The account holder's email address.
    pub email: String,
}

/// The body of `PATCH /accounts/{id}`: the fields to change; those left out keep their value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new email address.
    pub email: Option<String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 255 {
        return Err(ApiError::Invalid(
            "`name` must be 1 to 255 characters, not blank".to_owned(),
        ));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), ApiError> {
    if !email.contains('@') || email.chars().count() > 255 {
        return Err(ApiError::Invalid(
            "`email` must be an email address of at most 255 characters".to_owned(),
        ));
    }
    Ok(())
}

impl NewAccount {
    /// Checks the values: a non-blank name and an email address, each at most 255
    /// characters.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_name(&self.name)?;
        check_email(&self.email)
    }
}

impl AccountPatch {
    /// Checks the values given, as [`NewAccount::validate`] does.
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        if let Some(email) = &self.email {
            check_email(email)?;
        }
        Ok(())
    }
}

/// What the accounts service needs from its database, on each backend.
///
/// Diesel queries are typed by backend, so the few queries of the service are written once in
/// a macro and implemented for `SqliteConnection`, `PgConnection` and `MysqlConnection`.
pub trait AccountsDb: Database {
    /// `CREATE TABLE IF NOT EXISTS account ...` in this backend's dialect.
    const SCHEMA: &'static str;

    /// The account with this id.
    fn find_account(&mut self, id: i64) -> QueryResult<Option<Account>>;

    /// The account with this id, locked until the transaction ends (`FOR UPDATE`; on SQLite
    /// the write transaction already holds the database's single write lock).
    fn lock_account(&mut self, id: i64) -> QueryResult<Option<Account>>;

    /// The largest account id.
    fn max_account_id(&mut self) -> QueryResult<Option<i64>>;

    /// Writes the account and queues its replication message
    /// ([`MasterModel::save_and_publish`]).
    fn save_account(&mut self, account: &Account) -> cqrs_diesel::Result<Account>;
}

macro_rules! accounts_db {
    ($conn:ty, $schema:expr, lock: |$query:ident| $locked:expr) => {
        impl AccountsDb for $conn {
            const SCHEMA: &'static str = $schema;

            fn find_account(&mut self, id: i64) -> QueryResult<Option<Account>> {
                account::table
                    .find(id)
                    .select(Account::as_select())
                    .first(self)
                    .optional()
            }

            fn lock_account(&mut self, id: i64) -> QueryResult<Option<Account>> {
                let $query = account::table.find(id).select(Account::as_select());
                $locked.first(self).optional()
            }

            fn max_account_id(&mut self) -> QueryResult<Option<i64>> {
                account::table
                    .select(diesel::dsl::max(account::id))
                    .first(self)
            }

            fn save_account(&mut self, account: &Account) -> cqrs_diesel::Result<Account> {
                account.save_and_publish(self)
            }
        }
    };
}

accounts_db!(
    SqliteConnection,
    "CREATE TABLE IF NOT EXISTS account (
        id BIGINT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
        cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL)",
    lock: |query| query
);
accounts_db!(
    PgConnection,
    "CREATE TABLE IF NOT EXISTS account (
        id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
        cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMP NOT NULL)",
    lock: |query| query.for_update()
);
accounts_db!(
    MysqlConnection,
    "CREATE TABLE IF NOT EXISTS account (
        id BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, email VARCHAR(255) NOT NULL,
        cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)
        DEFAULT CHARSET = utf8mb4",
    lock: |query| query.for_update()
);

/// Creates an account with the next free id, and queues its SAVE message.
pub fn create_account<C: AccountsDb>(conn: &mut C, new: &NewAccount) -> Result<Account, ApiError> {
    insert_with_next_id(conn, C::max_account_id, |conn, id| {
        let account = Account {
            id,
            name: new.name.clone(),
            email: new.email.clone(),
            cqrs_revision: 0,
            cqrs_updated: now_utc(),
        };
        Ok(conn.save_account(&account)?)
    })
}

/// Changes the fields `patch` gives, and queues a SAVE message with the new revision.
/// A patch that changes nothing writes (and publishes) nothing.
pub fn update_account<C: AccountsDb>(
    conn: &mut C,
    id: i64,
    patch: &AccountPatch,
) -> Result<Account, ApiError> {
    cqrs_diesel::atomic(conn, |conn| {
        let stored = conn.lock_account(id)?.ok_or(ApiError::NotFound {
            what: "account",
            id,
        })?;
        let mut account = stored.clone();
        if let Some(name) = &patch.name {
            account.name.clone_from(name);
        }
        if let Some(email) = &patch.email {
            account.email.clone_from(email);
        }
        if account == stored {
            return Ok(stored);
        }
        Ok(conn.save_account(&account)?)
    })
}

async fn post_account<C: AccountsDb>(
    State(db): State<Db<C>>,
    body: Result<Json<NewAccount>, JsonRejection>,
) -> Result<(StatusCode, [(header::HeaderName, String); 1], Json<Account>), ApiError> {
    let Json(new) = body?;
    new.validate()?;
    let account = db.run(move |conn| create_account(conn, &new)).await?;
    tracing::info!(id = account.id, "account created");
    let location = format!("/accounts/{}", account.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(account),
    ))
}

async fn get_account<C: AccountsDb>(
    State(db): State<Db<C>>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Account>, ApiError> {
    let Path(id) = id?;
    let account = db
        .run(move |conn| {
            conn.find_account(id)?.ok_or(ApiError::NotFound {
                what: "account",
                id,
            })
        })
        .await?;
    Ok(Json(account))
}

async fn patch_account<C: AccountsDb>(
    State(db): State<Db<C>>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<AccountPatch>, JsonRejection>,
) -> Result<Json<Account>, ApiError> {
    let Path(id) = id?;
    let Json(patch) = body?;
    patch.validate()?;
    let account = db.run(move |conn| update_account(conn, id, &patch)).await?;
    tracing::info!(id, revision = account.cqrs_revision, "account updated");
    Ok(Json(account))
}

/// The HTTP routes of the accounts service on `db`.
pub fn router<C: AccountsDb>(db: Db<C>) -> Router {
    Router::new()
        .route("/accounts", post(post_account::<C>))
        .route(
            "/accounts/{id}",
            get(get_account::<C>).patch(patch_account::<C>),
        )
        .with_state(db)
}

/// Starts the accounts service on `listener`: the database at `database_url` (its backend
/// chosen by the URL, see [`DatabaseUrl`]), its tables created if missing, and the outbox
/// relay publishing through `transport` to `config`'s exchange.
pub async fn start<T: Transport>(
    database_url: &str,
    config: &Config,
    transport: T,
    listener: TcpListener,
) -> Result<RunningService, ServiceError> {
    let url = DatabaseUrl::parse(database_url);
    tracing::info!(backend = url.backend(), "accounts service starting");
    match url {
        DatabaseUrl::Sqlite(url) => {
            start_on::<SqliteConnection, T>(&url, config, transport, listener).await
        }
        DatabaseUrl::Postgres(url) => {
            start_on::<PgConnection, T>(&url, config, transport, listener).await
        }
        DatabaseUrl::Mysql(url) => {
            start_on::<MysqlConnection, T>(&url, config, transport, listener).await
        }
    }
}

/// [`start`] on the backend `C`.
pub async fn start_on<C: AccountsDb, T: Transport>(
    url: &str,
    config: &Config,
    transport: T,
    listener: TcpListener,
) -> Result<RunningService, ServiceError> {
    let db = Db::<C>::connect(url, |conn| {
        conn.batch_execute(C::SCHEMA)?;
        conn.run_outbox_migrations()?;
        Ok(())
    })
    .await?;

    // The relay publishes to the exchange, which must exist; replicas bind their queues to it.
    let declaring = declare_topology(&transport, Topology::exchange_only(config.exchange())).await;
    let relay_url = db.url().to_owned();
    let relay = OutboxRelay::new(transport, move || C::open(&relay_url)).spawn();

    RunningService::spawn("accounts", listener, router(db), async move {
        if let Some(task) = declaring {
            task.abort();
        }
        let stats = relay.shutdown().await;
        tracing::info!(
            published = stats.published,
            errors = stats.errors,
            "outbox relay stopped"
        );
    })
}
