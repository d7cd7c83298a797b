//! The SQL of the master's statements on each backend.

use chrono::NaiveDateTime;
use diesel::query_builder::QueryFragment;
use serde_json::{Map, Value};

use super::*;
use crate::master::{MasterHooks, MasterModel};

diesel::table! {
    note (id) {
        id -> BigInt,
        text -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamp,
    }
}

/// A model written by hand, as the derive would describe it.
struct Note {
    id: i64,
    text: String,
    cqrs_revision: i32,
    cqrs_updated: NaiveDateTime,
}

impl MasterHooks for Note {}

impl MasterModel for Note {
    const CQRS_ID: &'static str = "note";
    const PRODUCE: bool = true;
    const TRACKED_FIELDS: &'static [&'static str] = &[];
    const COLUMN_COUNT: usize = 4;

    fn cqrs_pk(&self) -> Value {
        Value::from(self.id)
    }

    fn cqrs_revision(&self) -> i64 {
        i64::from(self.cqrs_revision)
    }

    fn cqrs_instance_data(&self) -> Map<String, Value> {
        Map::new()
    }

    fn cqrs_tracked_data(&self) -> Map<String, Value> {
        Map::new()
    }
}

macro_rules! columns {
    ($backend:ty) => {
        impl MasterColumns<$backend> for Note {
            type Updated = NaiveDateTime;
            type Pk = i64;
            const COLUMNS: &'static [&'static str] =
                &["id", "text", "cqrs_revision", "cqrs_updated"];
            const PK_INDEX: usize = 0;
            const REVISION_INDEX: usize = 2;
            const UPDATED_INDEX: usize = 3;
            const TRACKED_INDEXES: &'static [usize] = &[];

            fn walk_table(out: AstPass<'_, '_, $backend>) -> QueryResult<()> {
                QueryFragment::<$backend>::walk_ast(&note::table, out)
            }

            fn walk_value<'b>(
                &'b self,
                index: usize,
                mut out: AstPass<'_, 'b, $backend>,
            ) -> QueryResult<()> {
                use diesel::sql_types::{BigInt, Integer, Text};
                match index {
                    0 => out.push_bind_param::<BigInt, i64>(&self.id),
                    1 => out.push_bind_param::<Text, String>(&self.text),
                    2 => out.push_bind_param::<Integer, i32>(&self.cqrs_revision),
                    _ => out.push_bind_param::<diesel::sql_types::Timestamp, NaiveDateTime>(
                        &self.cqrs_updated,
                    ),
                }
            }

            fn walk_updated<'b>(
                at: &'b NaiveDateTime,
                mut out: AstPass<'_, 'b, $backend>,
            ) -> QueryResult<()> {
                out.push_bind_param::<diesel::sql_types::Timestamp, NaiveDateTime>(at)
            }

            fn walk_key<'b>(key: &'b i64, mut out: AstPass<'_, 'b, $backend>) -> QueryResult<()> {
                out.push_bind_param::<diesel::sql_types::BigInt, i64>(key)
            }

            fn cqrs_key(&self) -> i64 {
                self.id
            }

            fn from_row<'a>(
                _: &impl diesel::row::NamedRow<'a, $backend>,
            ) -> diesel::deserialize::Result<Self> {
                Err("not read in these tests".into())
            }
        }
    };
}

columns!(diesel::pg::Pg);
columns!(diesel::mysql::Mysql);
columns!(diesel::sqlite::Sqlite);
columns!(diesel::mariadb::Mariadb);

fn row(id: i64) -> Note {
    Note {
        id,
        text: "a".into(),
        cqrs_revision: 0,
        cqrs_updated: NaiveDateTime::default(),
    }
}

/// The SQL of `kind` on each backend, without its binds.
fn sql(kind: impl Fn() -> (Vec<Note>, bool, bool)) -> [String; 3] {
    fn text<DB, Q>(query: &Q) -> String
    where
        DB: diesel::backend::Backend + Default,
        DB::QueryBuilder: Default,
        Q: QueryFragment<DB>,
    {
        let sql = diesel::debug_query::<DB, _>(query).to_string();
        sql.split(" -- binds").next().unwrap_or_default().to_owned()
    }
    let (rows, with_key, upsert) = kind();
    let refs: Vec<&Note> = rows.iter().collect();
    let now = NaiveDateTime::default();
    fn insert<'a, DB: Dialect>(
        rows: &'a [&'a Note],
        now: &'a NaiveDateTime,
        with_key: bool,
        upsert: bool,
    ) -> Stmt<'a, Note, DB>
    where
        Note: MasterColumns<DB, Updated = NaiveDateTime>,
    {
        Stmt::new(Kind::Insert {
            rows,
            now,
            with_key,
            upsert,
        })
    }
    [
        text::<diesel::pg::Pg, _>(&insert::<diesel::pg::Pg>(&refs, &now, with_key, upsert)),
        text::<diesel::mysql::Mysql, _>(&insert::<diesel::mysql::Mysql>(
            &refs, &now, with_key, upsert,
        )),
        text::<diesel::sqlite::Sqlite, _>(&insert::<diesel::sqlite::Sqlite>(
            &refs, &now, with_key, upsert,
        )),
    ]
}

#[test]
fn an_upsert_stamps_later_than_the_stored_time_and_bumps_the_revision_per_backend() {
    let [pg, mysql, sqlite] = sql(|| (vec![row(1)], true, true));
    assert_eq!(
        pg,
        "INSERT INTO \"note\" (\"id\", \"text\", \"cqrs_revision\", \"cqrs_updated\") \
         VALUES ($1, $2, $3, $4) ON CONFLICT (\"id\") DO UPDATE SET \"text\" = \
         excluded.\"text\", \"cqrs_updated\" = GREATEST(excluded.\"cqrs_updated\", \
         \"note\".\"cqrs_updated\" + interval '1 microsecond'), \"cqrs_revision\" = \
         \"note\".\"cqrs_revision\" + 1 RETURNING \"id\", \"text\", \"cqrs_revision\", \
         \"cqrs_updated\""
    );
    assert_eq!(
        mysql,
        "INSERT INTO `note` (`id`, `text`, `cqrs_revision`, `cqrs_updated`) VALUES (?, ?, \
         ?, ?) ON DUPLICATE KEY UPDATE `text` = VALUES(`text`), `cqrs_updated` = \
         GREATEST(VALUES(`cqrs_updated`), `cqrs_updated` + INTERVAL 1 MICROSECOND), \
         `cqrs_revision` = `cqrs_revision` + 1"
    );
    // SQLite: the stamp is bound as computed after reading the stored time under the write
    // lock (`stamp_after_stored`), so the statement takes it as it is.
    assert_eq!(
        sqlite,
        "INSERT INTO `note` (`id`, `text`, `cqrs_revision`, `cqrs_updated`) VALUES (?, ?, \
         ?, ?) ON CONFLICT (`id`) DO UPDATE SET `text` = excluded.`text`, `cqrs_updated` \
         = excluded.`cqrs_updated`, `cqrs_revision` = `note`.`cqrs_revision` + 1 \
         RETURNING `id`, `text`, `cqrs_revision`, `cqrs_updated`"
    );
}

#[test]
fn a_generated_key_insert_leaves_the_key_out() {
    let [pg, _, _] = sql(|| (vec![row(0), row(0)], false, false));
    assert_eq!(
        pg,
        "INSERT INTO \"note\" (\"text\", \"cqrs_revision\", \"cqrs_updated\") VALUES ($1, \
         $2, $3), ($4, $5, $6) RETURNING \"id\", \"text\", \"cqrs_revision\", \
         \"cqrs_updated\""
    );
}

#[test]
fn only_statements_of_one_row_are_kept_prepared() {
    let now = NaiveDateTime::default();
    let (one, two) = (row(1), row(2));
    let single = [&one];
    let pair = [&one, &two];
    let insert = |rows| {
        Stmt::<Note, diesel::pg::Pg>::new(Kind::Insert {
            rows,
            now: &now,
            with_key: true,
            upsert: false,
        })
    };
    let pg = diesel::pg::Pg;
    assert!(insert(&single).is_safe_to_cache_prepared(&pg).unwrap());
    assert!(!insert(&pair).is_safe_to_cache_prepared(&pg).unwrap());
    let select = |keys| Stmt::<Note, diesel::pg::Pg>::new(Kind::Select { keys, lock: true });
    assert!(
        select(Keys::Rows(&single))
            .is_safe_to_cache_prepared(&pg)
            .unwrap()
    );
    assert!(
        !select(Keys::Rows(&pair))
            .is_safe_to_cache_prepared(&pg)
            .unwrap()
    );
}

#[test]
fn locked_reads_lock_where_the_backend_has_row_locks() {
    fn select<'a, DB: Dialect>(rows: &'a [&'a Note]) -> Stmt<'a, Note, DB>
    where
        Note: MasterColumns<DB>,
    {
        Stmt::new(Kind::Select {
            keys: Keys::Rows(rows),
            lock: true,
        })
    }
    let one = row(1);
    let rows = [&one];
    let pg = diesel::debug_query::<diesel::pg::Pg, _>(&select::<diesel::pg::Pg>(&rows)).to_string();
    assert!(pg.contains("WHERE \"id\" = $1 FOR UPDATE"), "{pg}");
    let sqlite =
        diesel::debug_query::<diesel::sqlite::Sqlite, _>(&select::<diesel::sqlite::Sqlite>(&rows))
            .to_string();
    assert!(!sqlite.contains("FOR UPDATE"), "{sqlite}");
}

#[test]
fn the_mariadb_backend_returns_inserted_rows_and_reads_updated_ones_back() {
    type Mariadb = diesel::mariadb::Mariadb;
    fn text<Q: QueryFragment<Mariadb>>(query: &Q) -> String {
        let sql = diesel::debug_query::<Mariadb, _>(query).to_string();
        sql.split(" -- binds").next().unwrap_or_default().to_owned()
    }
    let now = NaiveDateTime::default();
    let one = row(1);
    let rows = [&one];
    let upsert = Stmt::<Note, Mariadb>::new(Kind::Insert {
        rows: &rows,
        now: &now,
        with_key: true,
        upsert: true,
    });
    let [_, mysql, _] = sql(|| (vec![row(1)], true, true));
    assert_eq!(
        text(&upsert),
        format!("{mysql} RETURNING `id`, `text`, `cqrs_revision`, `cqrs_updated`"),
        "MySQL's upsert, returning the row"
    );
    let delete = Stmt::<Note, Mariadb>::new(Kind::Delete { row: &one });
    assert!(text(&delete).ends_with(" RETURNING `id`, `text`, `cqrs_revision`, `cqrs_updated`"));
    let update = Stmt::<Note, Mariadb>::new(Kind::Update {
        row: &one,
        now: &now,
        bump: false,
    });
    assert!(
        !text(&update).contains("RETURNING"),
        "MariaDB has no UPDATE ... RETURNING: {}",
        text(&update)
    );
}
