//! The payments service: owns `payment` rows and keeps a replica of the accounts service's
//! accounts (`account_ref`), so that it answers queries about accounts with a local join.
//!
//! | request | does |
//! | --- | --- |
//! | `POST /payments` `{"account_id", "amount_cents"}` | records a payment (201) |
//! | `GET /payments` | every payment with its account's name |
//! | `GET /payments?account.name=Pavel` | the payments of accounts named Pavel: one SQL join, local |
//!
//! The replica worker ([`ConsumerRuntime`] with the [`AccountRef`] replica model) runs in this
//! process and applies the accounts service's messages to `account_ref`.
//!
//! A payment's `account_id` is not checked against the replica: the replica may be a few
//! milliseconds behind the accounts service (eventual consistency), so a payment for a
//! brand-new account is accepted, and shows its account's name as soon as it has arrived
//! (`null` until then).

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::NaiveDateTime;
use cqrs_diesel::{Config, ConsumerRuntime, ReplicaModel, Replicas, Topology, Transport};
use diesel::prelude::*;
use diesel::{MysqlConnection, PgConnection, SqliteConnection};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::db::{
    Database, DatabaseUrl, Db, deserialize_utc, insert_with_next_id, now_utc, serialize_utc,
};
use crate::error::{ApiError, ServiceError};
use crate::service::{RunningService, declare_topology};

/// The Diesel schema of the payments database (columns are documented by the SQL in `SCHEMA`).
#[allow(missing_docs)]
pub mod schema {
    diesel::table! {
        /// The payments this service owns.
        payment (id) {
            id -> BigInt,
            account_id -> BigInt,
            amount_cents -> BigInt,
            created_at -> Timestamp,
        }
    }

    diesel::table! {
        /// The replica of the accounts service's `account` rows: only the columns this
        /// service queries, plus the revision and time of the copy.
        account_ref (id) {
            id -> BigInt,
            name -> Text,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamp,
        }
    }

    diesel::joinable!(payment -> account_ref (account_id));
    diesel::allow_tables_to_appear_in_same_query!(payment, account_ref);
}

use schema::{account_ref, payment};

/// A payment, as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = payment)]
pub struct Payment {
    /// The primary key, allocated by the service.
    pub id: i64,
    /// The account paid from: an id of the accounts service.
    pub account_id: i64,
    /// The amount, in cents.
    pub amount_cents: i64,
    /// When the payment was recorded (UTC).
    #[serde(serialize_with = "serialize_utc", deserialize_with = "deserialize_utc")]
    pub created_at: NaiveDateTime,
}

/// The local copy of an account: the replica model of `cqrs_id` `account`.
///
/// The master's other fields (`email`) are not kept: a replica takes what it needs.
#[derive(Debug, Clone, PartialEq, ReplicaModel, Queryable, Selectable)]
#[cqrs(id = "account", table = account_ref)]
#[diesel(table_name = account_ref)]
pub struct AccountRef {
    /// The account's id (the master's primary key).
    pub id: i64,
    /// The account holder's name.
    pub name: String,
    /// The master's revision of this copy.
    pub cqrs_revision: i32,
    /// When the master last wrote the row (UTC).
    pub cqrs_updated: NaiveDateTime,
}

/// The body of `POST /payments`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    /// The account paid from.
    pub account_id: i64,
    /// The amount in cents, more than 0.
    pub amount_cents: i64,
}

impl NewPayment {
    /// Checks the values: a positive account id and amount.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.account_id <= 0 {
            return Err(ApiError::Invalid(
                "`account_id` must be positive".to_owned(),
            ));
        }
        if self.amount_cents <= 0 {
            return Err(ApiError::Invalid(
                "`amount_cents` must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The query of `GET /payments`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PaymentFilter {
    /// Only the payments of accounts with this name (`?account.name=Pavel`).
    #[serde(rename = "account.name")]
    pub account_name: Option<String>,
}

/// A payment with its account, as `GET /payments` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentView {
    /// The payment's id.
    pub id: i64,
    /// The amount, in cents.
    pub amount_cents: i64,
    /// When the payment was recorded (RFC 3339, UTC).
    pub created_at: String,
    /// The account, from the local replica.
    pub account: AccountSummary,
}

/// An account as the payments service knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSummary {
    /// The account's id.
    pub id: i64,
    /// The account's name; `null` while the account has not reached the replica.
    pub name: Option<String>,
}

impl PaymentView {
    fn new(payment: Payment, account_name: Option<String>) -> Self {
        PaymentView {
            id: payment.id,
            amount_cents: payment.amount_cents,
            created_at: payment
                .created_at
                .and_utc()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string(),
            account: AccountSummary {
                id: payment.account_id,
                name: account_name,
            },
        }
    }
}

/// What the payments service needs from its database, on each backend (see
/// [`AccountsDb`](crate::accounts::AccountsDb) for why it is a trait).
pub trait PaymentsDb: Database {
    /// `CREATE TABLE IF NOT EXISTS` statements of `payment` and `account_ref` in this
    /// backend's dialect.
    const SCHEMA: &'static str;

    /// The largest payment id.
    fn max_payment_id(&mut self) -> QueryResult<Option<i64>>;

    /// Inserts a payment.
    fn insert_payment(&mut self, payment: &Payment) -> QueryResult<()>;

    /// The payments, in id order, each with its account's name from the replica (one query:
    /// `payment LEFT JOIN account_ref`), only those of accounts named `account_name` when it
    /// is given.
    fn payments_with_names(
        &mut self,
        account_name: Option<&str>,
    ) -> QueryResult<Vec<(Payment, Option<String>)>>;

    /// The registry of this service's replica models, writing to the database at `url`.
    fn replicas(url: String) -> Replicas<Self>;
}

macro_rules! payments_db {
    ($conn:ty, $schema:expr) => {
        impl PaymentsDb for $conn {
            const SCHEMA: &'static str = $schema;

            fn max_payment_id(&mut self) -> QueryResult<Option<i64>> {
                payment::table
                    .select(diesel::dsl::max(payment::id))
                    .first(self)
            }

            fn insert_payment(&mut self, new: &Payment) -> QueryResult<()> {
                diesel::insert_into(payment::table)
                    .values(new)
                    .execute(self)
                    .map(drop)
            }

            fn payments_with_names(
                &mut self,
                account_name: Option<&str>,
            ) -> QueryResult<Vec<(Payment, Option<String>)>> {
                let mut query = payment::table
                    .left_join(account_ref::table)
                    .select((Payment::as_select(), account_ref::name.nullable()))
                    .order(payment::id)
                    .into_boxed();
                if let Some(name) = account_name {
                    query = query.filter(account_ref::name.eq(name));
                }
                query.load(self)
            }

            fn replicas(url: String) -> Replicas<Self> {
                Replicas::new(move || <$conn as Database>::open(&url)).register::<AccountRef>()
            }
        }
    };
}

payments_db!(
    SqliteConnection,
    "CREATE TABLE IF NOT EXISTS payment (
        id BIGINT PRIMARY KEY NOT NULL, account_id BIGINT NOT NULL,
        amount_cents BIGINT NOT NULL, created_at TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS payment_account_id ON payment (account_id);
     CREATE TABLE IF NOT EXISTS account_ref (
        id BIGINT PRIMARY KEY NOT NULL, name TEXT NOT NULL,
        cqrs_revision INTEGER NOT NULL, cqrs_updated TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS account_ref_name ON account_ref (name);"
);
payments_db!(
    PgConnection,
    "CREATE TABLE IF NOT EXISTS payment (
        id BIGINT PRIMARY KEY, account_id BIGINT NOT NULL,
        amount_cents BIGINT NOT NULL, created_at TIMESTAMP NOT NULL);
     CREATE INDEX IF NOT EXISTS payment_account_id ON payment (account_id);
     CREATE TABLE IF NOT EXISTS account_ref (
        id BIGINT PRIMARY KEY, name TEXT NOT NULL,
        cqrs_revision INTEGER NOT NULL, cqrs_updated TIMESTAMP NOT NULL);
     CREATE INDEX IF NOT EXISTS account_ref_name ON account_ref (name);"
);
payments_db!(
    MysqlConnection,
    "CREATE TABLE IF NOT EXISTS payment (
        id BIGINT PRIMARY KEY, account_id BIGINT NOT NULL,
        amount_cents BIGINT NOT NULL, created_at DATETIME(6) NOT NULL,
        INDEX payment_account_id (account_id)) DEFAULT CHARSET = utf8mb4;
     CREATE TABLE IF NOT EXISTS account_ref (
        id BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL,
        cqrs_revision INTEGER NOT NULL, cqrs_updated DATETIME(6) NOT NULL,
        INDEX account_ref_name (name)) DEFAULT CHARSET = utf8mb4;"
);

/// Records a payment with the next free id.
pub fn create_payment<C: PaymentsDb>(conn: &mut C, new: &NewPayment) -> Result<Payment, ApiError> {
    insert_with_next_id(conn, C::max_payment_id, |conn, id| {
        let payment = Payment {
            id,
            account_id: new.account_id,
            amount_cents: new.amount_cents,
            created_at: now_utc(),
        };
        conn.insert_payment(&payment)?;
        Ok(payment)
    })
}

async fn post_payment<C: PaymentsDb>(
    State(db): State<Db<C>>,
    body: Result<Json<NewPayment>, JsonRejection>,
) -> Result<(StatusCode, Json<Payment>), ApiError> {
    let Json(new) = body?;
    new.validate()?;
    let payment = db.run(move |conn| create_payment(conn, &new)).await?;
    tracing::info!(
        id = payment.id,
        account_id = payment.account_id,
        "payment recorded"
    );
    Ok((StatusCode::CREATED, Json(payment)))
}

async fn list_payments<C: PaymentsDb>(
    State(db): State<Db<C>>,
    filter: Result<Query<PaymentFilter>, QueryRejection>,
) -> Result<Json<Vec<PaymentView>>, ApiError> {
    let Query(filter) = filter?;
    let rows = db
        .run(move |conn| Ok(conn.payments_with_names(filter.account_name.as_deref())?))
        .await?;
    let views = rows
        .into_iter()
        .map(|(payment, name)| PaymentView::new(payment, name))
        .collect();
    Ok(Json(views))
}

/// The HTTP routes of the payments service on `db`.
pub fn router<C: PaymentsDb>(db: Db<C>) -> Router {
    Router::new()
        .route("/payments", get(list_payments::<C>).post(post_payment::<C>))
        .with_state(db)
}

/// Starts the payments service on `listener`: the database at `database_url` (its backend
/// chosen by the URL, see [`DatabaseUrl`]), its tables created if missing, and the replica
/// worker consuming `config`'s queue (`CQRS_QUEUE`, required) through `transport`.
///
/// The queue and its bindings are declared before this returns (when the broker answers), so
/// that messages published from then on reach this replica.
pub async fn start<T: Transport>(
    database_url: &str,
    config: &Config,
    transport: T,
    listener: TcpListener,
) -> Result<RunningService, ServiceError> {
    let url = DatabaseUrl::parse(database_url);
    tracing::info!(backend = url.backend(), "payments service starting");
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
pub async fn start_on<C: PaymentsDb, T: Transport>(
    url: &str,
    config: &Config,
    transport: T,
    listener: TcpListener,
) -> Result<RunningService, ServiceError> {
    if config.queue().is_none() {
        return Err(ServiceError::Setting {
            setting: "CQRS_QUEUE",
            reason: "the payments service needs the name of its replica queue".to_owned(),
        });
    }
    let db = Db::<C>::connect(url, |conn| {
        conn.batch_execute(C::SCHEMA)?;
        conn.run_replica_migrations()?;
        Ok(())
    })
    .await?;

    let topology = Topology::from_config(config, [AccountRef::CQRS_ID]);
    let declaring = declare_topology(&transport, topology).await;
    let replicas = C::replicas(db.url().to_owned());
    let consumer = ConsumerRuntime::new(transport, config.clone(), replicas).spawn();

    RunningService::spawn("payments", listener, router(db), async move {
        if let Some(task) = declaring {
            task.abort();
        }
        match consumer.shutdown().await {
            Ok(stats) => tracing::info!(
                applied = stats.applied(),
                dead_lettered = stats.dead_lettered,
                "replica worker stopped"
            ),
            Err(error) => tracing::error!(%error, "the replica worker failed"),
        }
    })
}
