//! A save that collides with another row on a unique column fails and changes nothing: on
//! MySQL/MariaDB an `ON DUPLICATE KEY UPDATE` would have updated that other row instead. On
//! sync and async connections of every backend.

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_diesel::{MasterModel, MasterStore};

use super::Setup;
use super::side::{Side, on_every_backend_and_side, w};
use crate::db::TestDb;

trait Member: MasterModel + Clone + std::fmt::Debug + Send + Sync + 'static {
    const DDL: &'static str;
    fn new(id: i64, email: &str) -> Self;
    fn email(&self) -> &str;
    fn revision(&self) -> i32;
}

macro_rules! member_model {
    ($module:ident, $model:ident, $updated:ty, $updated_sql:ident, ($($backend:ident),+), $now:expr, $ddl:expr) => {
        mod $module {
            diesel::table! {
                member (id) {
                    id -> BigInt,
                    email -> Text,
                    cqrs_revision -> Integer,
                    cqrs_updated -> $updated_sql,
                }
            }
        }

        #[derive(Debug, Clone, MasterModel)]
        #[cqrs(id = "member", table = $module::member, backends($($backend),+))]
        struct $model {
            id: i64,
            email: String,
            cqrs_revision: i32,
            cqrs_updated: $updated,
        }

        impl Member for $model {
            const DDL: &'static str = $ddl;
            fn new(id: i64, email: &str) -> Self {
                $model {
                    id,
                    email: email.to_owned(),
                    cqrs_revision: 0,
                    cqrs_updated: $now,
                }
            }
            fn email(&self) -> &str {
                &self.email
            }
            fn revision(&self) -> i32 {
                self.cqrs_revision
            }
        }
    };
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(0, 0).unwrap()
}

member_model!(
    pg_member,
    PgMember,
    DateTime<Utc>,
    Timestamptz,
    (postgres),
    epoch(),
    "CREATE TABLE member (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)"
);
member_model!(
    mysql_member,
    MysqlMember,
    NaiveDateTime,
    Datetime,
    (mysql, mariadb),
    epoch().naive_utc(),
    "CREATE TABLE member (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated DATETIME(6) NOT NULL)"
);
member_model!(
    sqlite_member,
    SqliteMember,
    DateTime<Utc>,
    TimestamptzSqlite,
    (sqlite),
    epoch(),
    "CREATE TABLE member (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE,
     cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TEXT NOT NULL)"
);

async fn a_save_colliding_on_another_unique_column_changes_nothing<D, M, X>(db: D)
where
    D: TestDb + 'static,
    M: Member + MasterStore<X::Conn>,
    X: Side<D>,
{
    db.execute(M::DDL);
    let setup = Setup::new_with_ddl(db).await;
    let conn = &mut X::open(&setup.db).await;
    w!(X::Conn, M::new(1, "ann@example.com").save_and_publish(conn)).unwrap();
    w!(X::Conn, M::new(2, "bob@example.com").save_and_publish(conn)).unwrap();
    let before = setup.outbox_len();

    // A new row, and an update of row 2, each with row 1's email.
    let error = w!(X::Conn, M::new(3, "ann@example.com").save_and_publish(conn))
        .unwrap_err()
        .to_string()
        .to_lowercase();
    assert!(
        error.contains("unique") || error.contains("duplicate"),
        "the error names the unique key: {error}"
    );
    assert!(w!(X::Conn, M::new(2, "ann@example.com").save_and_publish(conn)).is_err());
    let colliding = [M::new(2, "ann@example.com")];
    assert!(w!(X::Conn, M::bulk_update_and_publish(conn, &colliding)).is_err());

    let all = Default::default();
    let stored = w!(X::Conn, M::cqrs_select_page(conn, &all, None, 10)).unwrap();
    let seen: Vec<(&str, i32)> = stored.iter().map(|m| (m.email(), m.revision())).collect();
    assert_eq!(
        seen,
        vec![("ann@example.com", 0), ("bob@example.com", 0)],
        "no row was changed"
    );
    assert_eq!(setup.outbox_len(), before, "no message for a failed save");
}

on_every_backend_and_side!(
    a_save_colliding_on_another_unique_column_changes_nothing,
    PgMember,
    MysqlMember,
    SqliteMember
);
