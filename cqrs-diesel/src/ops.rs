//! Operations on registered models by `cqrs_id`, for operator commands (see [`crate::cli`]):
//! paging through master rows, reading and writing replica rows, without knowing the model
//! types at the call site.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cqrs_core::SignalType;
use serde_json::{Map, Value};

use crate::connection::CqrsConnection;
use crate::error::{Error, Result};
use crate::master::{MasterConfig, MasterStore, RowFilter, body, page_instance_data};
use crate::replica::sql::ready;
use crate::replica::state::{self, NewState};
use crate::replica::{ReplicaModel, ReplicaStore};

/// One master row as operator commands need it.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterRow {
    /// The primary key, as on the wire.
    pub pk: Value,
    /// The stored revision.
    pub revision: i64,
    /// `instance_data` as a SAVE or SYNC of this row carries it (custom serializer included).
    pub instance_data: Map<String, Value>,
    /// The body of a SYNC of this row, or `None` when the model does not publish it
    /// (`produce = false`, or `is_sync_instance` said no).
    pub sync_body: Option<String>,
}

/// A master row's primary key and revision, without its payload (for diffs).
#[derive(Debug, Clone, PartialEq)]
pub struct MasterKey {
    /// The primary key, as on the wire.
    pub pk: Value,
    /// The stored revision.
    pub revision: i64,
    /// Whether the model publishes this row (`produce` and `is_sync_instance`): a SYNC of it
    /// would be sent.
    pub publishes: bool,
}

/// What a master model offers operator commands.
pub trait MasterOps<C>: Send + Sync {
    /// The model's `cqrs_id`.
    fn cqrs_id(&self) -> &'static str;

    /// How many rows match `filter`.
    fn count(&self, conn: &mut C, filter: &RowFilter) -> Result<u64>;

    /// Like [`page`](MasterOps::page), only the keys and revisions: no payload is built (no
    /// serializer hook runs).
    fn keys(
        &self,
        conn: &mut C,
        filter: &RowFilter,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<MasterKey>> {
        Ok(self
            .page(conn, filter, after, limit)?
            .into_iter()
            .map(|row| MasterKey {
                pk: row.pk,
                revision: row.revision,
                publishes: row.sync_body.is_some(),
            })
            .collect())
    }

    /// Up to `limit` rows matching `filter`, in primary-key order, after the key `after`.
    fn page(
        &self,
        conn: &mut C,
        filter: &RowFilter,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<MasterRow>>;
}

/// Why a record of a bulk load was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The record's position, as the caller numbered it (a line number for files).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// What a replica model offers operator commands.
pub trait ReplicaOps<C>: Send + Sync {
    /// The model's `cqrs_id`.
    fn cqrs_id(&self) -> &'static str;

    /// How many rows the replica table holds.
    fn count(&self, conn: &mut C) -> Result<u64>;

    /// The stored revisions of these keys (keys without a row are absent).
    fn revisions(&self, conn: &mut C, keys: &[Value]) -> Result<Vec<(Value, i64)>>;

    /// Up to `limit` stored `(key, revision)` pairs in key order, after `after`.
    fn key_page(
        &self,
        conn: &mut C,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<(Value, i64)>>;

    /// Writes `instance_data` records as SYNCs do (whatever the stored revision), with one
    /// statement; records that cannot be decoded are returned with their reason, the others
    /// are written.
    fn load(&self, conn: &mut C, records: &[(usize, Map<String, Value>)]) -> Result<Vec<Rejected>>;

    /// Deletes the rows with these keys.
    fn delete(&self, conn: &mut C, keys: &[Value]) -> Result<usize>;

    /// Deletes every row.
    fn clear(&self, conn: &mut C) -> Result<usize>;
}

struct MasterAdapter<M> {
    /// The clock and TTL of the SYNC bodies `page` builds.
    config: MasterConfig,
    model: PhantomData<fn() -> M>,
}

impl<M, C> MasterOps<C> for MasterAdapter<M>
where
    C: CqrsConnection,
    M: MasterStore<C>,
{
    fn cqrs_id(&self) -> &'static str {
        M::CQRS_ID
    }

    fn count(&self, conn: &mut C, filter: &RowFilter) -> Result<u64> {
        Ok(u64::try_from(M::cqrs_count(conn, filter)?).unwrap_or_default())
    }

    fn keys(
        &self,
        conn: &mut C,
        filter: &RowFilter,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<MasterKey>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(M::cqrs_select_page(conn, filter, after, limit)?
            .into_iter()
            .map(|row| MasterKey {
                pk: row.cqrs_pk(),
                revision: row.cqrs_revision(),
                publishes: M::PRODUCE && row.is_sync_instance(),
            })
            .collect())
    }

    fn page(
        &self,
        conn: &mut C,
        filter: &RowFilter,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<MasterRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = M::cqrs_select_page(conn, filter, after, limit)?;
        // One page: the model's `relate_cqrs_serialization` runs once for all of it.
        let refs: Vec<&M> = rows.iter().collect();
        let data = crate::exec::run_ready(page_instance_data(&refs, conn))?;
        let mut out = Vec::with_capacity(rows.len());
        for (row, instance_data) in rows.iter().zip(data) {
            let sync_body = (M::PRODUCE && row.is_sync_instance()).then(|| {
                // Read from the database: no previous values (`null`, as django-cqrs sends).
                body(
                    &self.config,
                    row,
                    SignalType::Sync,
                    instance_data.clone(),
                    None,
                    None,
                )
            });
            out.push(MasterRow {
                pk: row.cqrs_pk(),
                revision: row.cqrs_revision(),
                instance_data,
                sync_body,
            });
        }
        Ok(out)
    }
}

struct ReplicaAdapter<M>(PhantomData<fn() -> M>);

fn decode_keys<M: ReplicaModel>(keys: &[Value]) -> Result<Vec<M::Pk>> {
    keys.iter()
        .map(|key| {
            M::cqrs_decode_pk(key).map_err(|reason| {
                Error::Database(diesel::result::Error::QueryBuilderError(
                    format!("`{}` key {key}: {reason}", M::CQRS_ID).into(),
                ))
            })
        })
        .collect()
}

impl<M, C> ReplicaOps<C> for ReplicaAdapter<M>
where
    C: CqrsConnection,
    M: ReplicaStore<C>,
{
    fn cqrs_id(&self) -> &'static str {
        M::CQRS_ID
    }

    fn count(&self, conn: &mut C) -> Result<u64> {
        Ok(u64::try_from(M::cqrs_count_all(conn)?).unwrap_or_default())
    }

    fn revisions(&self, conn: &mut C, keys: &[Value]) -> Result<Vec<(Value, i64)>> {
        let keys = decode_keys::<M>(keys)?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            for (key, revision) in M::cqrs_stored_revisions(chunk, conn)? {
                out.push((M::cqrs_encode_pk(&key), revision));
            }
        }
        Ok(out)
    }

    fn key_page(
        &self,
        conn: &mut C,
        after: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<(Value, i64)>> {
        let after = match after {
            Some(after) => decode_keys::<M>(std::slice::from_ref(after))?.pop(),
            None => None,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(M::cqrs_key_page(after.as_ref(), limit, conn)?
            .into_iter()
            .map(|(key, revision)| (M::cqrs_encode_pk(&key), revision))
            .collect())
    }

    fn load(&self, conn: &mut C, records: &[(usize, Map<String, Value>)]) -> Result<Vec<Rejected>> {
        let mut rejected = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        let mut keys_text = Vec::with_capacity(records.len());
        let mut updated = Vec::with_capacity(records.len());
        for (line, data) in records {
            match M::cqrs_decode(data) {
                Ok(row) => {
                    keys_text.push(crate::replica::key_text(&M::cqrs_encode_pk(
                        &row.cqrs_key(),
                    )));
                    updated.push(
                        data.get("cqrs_updated")
                            .and_then(Value::as_str)
                            .and_then(|s| cqrs_core::parse_timestamp(s).ok())
                            .map_or(0, |ts| ts.timestamp_micros()),
                    );
                    rows.push(row);
                }
                Err(reason) => rejected.push(Rejected {
                    line: *line,
                    reason,
                }),
            }
        }
        let refs: Vec<&M> = rows.iter().collect();
        let per_statement = crate::replica::sql::rows_per_statement(M::COLUMN_COUNT);
        for ((rows, keys), updated) in refs
            .chunks(per_statement)
            .zip(keys_text.chunks(per_statement))
            .zip(updated.chunks(per_statement))
        {
            M::cqrs_write(rows, conn)?;
            // As a SYNC would: the record is the row's state from now on (no sequence, no floor).
            let states: Vec<NewState<'_>> = rows
                .iter()
                .zip(keys)
                .zip(updated)
                .map(|((row, pk), &updated_us)| NewState {
                    cqrs_id: M::CQRS_ID,
                    pk,
                    revision: row.cqrs_revision().unwrap_or(0),
                    updated_us,
                    deleted: false,
                    seq: None,
                    floor_us: None,
                })
                .collect();
            ready(state::record(conn, &states))?;
        }
        Ok(rejected)
    }

    fn delete(&self, conn: &mut C, keys: &[Value]) -> Result<usize> {
        let keys = decode_keys::<M>(keys)?;
        let mut deleted = 0;
        for chunk in keys.chunks(1000) {
            deleted += M::cqrs_delete_keys(chunk, conn)?;
        }
        Ok(deleted)
    }

    fn clear(&self, conn: &mut C) -> Result<usize> {
        // A reset: the rows and what the replica knew of them.
        ready(state::clear(conn, M::CQRS_ID))?;
        Ok(M::cqrs_delete_all(conn)?)
    }
}

type MasterBuilder<C> = fn(MasterConfig) -> Arc<dyn MasterOps<C>>;

fn master_adapter<M, C>(config: MasterConfig) -> Arc<dyn MasterOps<C>>
where
    C: CqrsConnection,
    M: MasterStore<C>,
{
    Arc::new(MasterAdapter::<M> {
        config,
        model: PhantomData,
    })
}

/// The models of a service, by `cqrs_id`, for operator commands.
pub struct Operations<C: CqrsConnection> {
    masters: BTreeMap<&'static str, Arc<dyn MasterOps<C>>>,
    /// How each master's operations are made from a configuration, to remake them when it
    /// changes.
    master_builders: BTreeMap<&'static str, MasterBuilder<C>>,
    replicas: BTreeMap<&'static str, Arc<dyn ReplicaOps<C>>>,
    master_config: MasterConfig,
}

impl<C: CqrsConnection> Default for Operations<C> {
    fn default() -> Self {
        Operations {
            masters: BTreeMap::new(),
            master_builders: BTreeMap::new(),
            replicas: BTreeMap::new(),
            master_config: MasterConfig::DEFAULT,
        }
    }
}

impl<C: CqrsConnection> Clone for Operations<C> {
    fn clone(&self) -> Self {
        Operations {
            masters: self.masters.clone(),
            master_builders: self.master_builders.clone(),
            replicas: self.replicas.clone(),
            master_config: self.master_config.clone(),
        }
    }
}

impl<C: CqrsConnection> Operations<C> {
    /// No models yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The clock, message TTL and meta and correlation functions of the SYNC messages built
    /// for the master models, those added before this call and after (default
    /// [`MasterConfig::DEFAULT`]).
    pub fn with_master_config(mut self, config: MasterConfig) -> Self {
        for (cqrs_id, build) in &self.master_builders {
            self.masters.insert(cqrs_id, build(config.clone()));
        }
        self.master_config = config;
        self
    }

    /// The configuration of the SYNC messages built for the master models.
    pub fn master_config(&self) -> &MasterConfig {
        &self.master_config
    }

    /// Adds a master model.
    pub fn master<M: MasterStore<C>>(mut self) -> Self {
        let build: MasterBuilder<C> = master_adapter::<M, C>;
        self.masters
            .insert(M::CQRS_ID, build(self.master_config.clone()));
        self.master_builders.insert(M::CQRS_ID, build);
        self
    }

    /// Adds a replica model (written with the default statements; custom models are not
    /// supported by the row-level commands).
    pub fn replica<M: ReplicaStore<C>>(mut self) -> Self {
        self.replicas
            .insert(M::CQRS_ID, Arc::new(ReplicaAdapter::<M>(PhantomData)));
        self
    }

    /// The master model with this `cqrs_id`.
    pub fn master_ops(&self, cqrs_id: &str) -> Option<&dyn MasterOps<C>> {
        self.masters.get(cqrs_id).map(|ops| ops.as_ref())
    }

    /// The replica model with this `cqrs_id`.
    pub fn replica_ops(&self, cqrs_id: &str) -> Option<&dyn ReplicaOps<C>> {
        self.replicas.get(cqrs_id).map(|ops| ops.as_ref())
    }

    /// The `cqrs_id`s of the master models.
    pub fn master_ids(&self) -> Vec<&'static str> {
        self.masters.keys().copied().collect()
    }

    /// The `cqrs_id`s of the replica models.
    pub fn replica_ids(&self) -> Vec<&'static str> {
        self.replicas.keys().copied().collect()
    }
}
