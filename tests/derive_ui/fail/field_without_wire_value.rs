// A field whose type the wire cannot carry is reported at that field's type. (`Money` is a
// complete Diesel type: only `WireValue` is missing.)
use cqrs_diesel::MasterModel;
use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::BigInt;

diesel::table! {
    author (id) {
        id -> Integer,
        balance -> BigInt,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

#[derive(Debug, Clone, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
#[diesel(sql_type = BigInt)]
struct Money(i64);

impl ToSql<BigInt, Pg> for Money {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <i64 as ToSql<BigInt, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<BigInt, Pg> for Money {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        <i64 as FromSql<BigInt, Pg>>::from_sql(bytes).map(Money)
    }
}

#[derive(MasterModel)]
#[cqrs(id = "author", table = author, backends(postgres))]
struct Author {
    id: i32,
    balance: Money,
    cqrs_revision: i32,
    cqrs_updated: chrono::DateTime<chrono::Utc>,
}

fn main() {}
