//! Code generation for `#[derive(MasterModel)]`: the `MasterModel` constants and
//! serialization, and one `MasterStore` implementation (the model's statements) per backend.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attrs::{BackendName, Model};

pub(crate) fn expand(model: &Model) -> TokenStream {
    let ident = &model.ident;
    let cqrs_id = &model.cqrs_id;
    let produce = model.produce;
    let column_count = model.fields.len();
    let pk = &model.fields[model.pk].ident;
    let revision = &model.fields[model.revision].ident;
    let updated = &model.fields[model.updated];
    let updated_ident = &updated.ident;
    let updated_ty = &updated.ty;
    let tracked_names: Vec<&str> = model
        .tracked
        .iter()
        .map(|&i| model.fields[i].wire_name.as_str())
        .collect();
    let tracked_inserts = model.tracked.iter().map(|&i| {
        let field = &model.fields[i];
        let name = &field.wire_name;
        let value = wire_value(field);
        quote! { data.insert(#name.to_owned(), #value); }
    });
    let data_inserts = model
        .fields
        .iter()
        .enumerate()
        .filter(|(i, f)| !f.skip && *i != model.revision && *i != model.updated)
        .map(|(_, field)| {
            let name = &field.wire_name;
            let value = wire_value(field);
            quote! { data.insert(#name.to_owned(), #value); }
        });
    let value_checks = model
        .fields
        .iter()
        .enumerate()
        .filter(|(i, f)| !f.skip && !f.utc && *i != model.revision && *i != model.updated)
        .map(|(_, field)| {
            let ident = &field.ident;
            let name = &field.wire_name;
            let ty = &field.ty;
            quote_spanned! {ty.span()=>
                if let ::core::result::Result::Err(error) =
                    <#ty as __p::WireValue>::check_wire(&self.#ident)
                {
                    return ::core::result::Result::Err(::cqrs_diesel::Error::UnrepresentableValue {
                        cqrs_id: #cqrs_id,
                        field: #name,
                        reason: error.to_string(),
                    });
                }
            }
        });
    let custom_hooks = model.hooks;
    let tracked_in_sql = model
        .tracked
        .iter()
        .all(|&i| renders_like_the_wire(&model.fields[i]));
    let pk_field = &model.fields[model.pk];
    let pk_wire_name = if pk_field.skip {
        quote! { ::core::option::Option::None }
    } else {
        let name = &pk_field.wire_name;
        quote! { ::core::option::Option::Some(#name) }
    };
    let hooks = if model.hooks {
        quote! {}
    } else {
        quote! {
            #[automatically_derived]
            impl ::cqrs_diesel::MasterHooks for #ident {}
        }
    };
    let stores = model.backends.iter().map(|&backend| store(model, backend));

    quote! {
        const _: () = {
            use ::cqrs_diesel::__private as __p;
            use ::cqrs_diesel::__private::diesel as __d;
            #[allow(unused_imports)]
            use ::cqrs_diesel::__private::diesel::prelude::*;

            #[automatically_derived]
            impl ::cqrs_diesel::MasterModel for #ident {
                const CQRS_ID: &'static str = #cqrs_id;
                const PRODUCE: bool = #produce;
                const TRACKED_FIELDS: &'static [&'static str] = &[#(#tracked_names),*];
                const COLUMN_COUNT: usize = #column_count;
                const CUSTOM_HOOKS: bool = #custom_hooks;
                const TRACKED_IN_SQL: bool = #tracked_in_sql;
                const PK_WIRE_NAME: ::core::option::Option<&'static str> = #pk_wire_name;

                fn cqrs_pk(&self) -> __p::serde_json::Value {
                    __p::WireValue::to_wire(&self.#pk)
                }

                fn cqrs_revision(&self) -> i64 {
                    ::core::convert::From::from(self.#revision)
                }

                fn cqrs_instance_data(&self) -> __p::serde_json::Map<String, __p::serde_json::Value> {
                    let mut data = __p::serde_json::Map::with_capacity(#column_count);
                    data.insert(
                        "cqrs_revision".to_owned(),
                        __p::serde_json::Value::from(self.#revision),
                    );
                    data.insert(
                        "cqrs_updated".to_owned(),
                        <#updated_ty as ::cqrs_diesel::UpdatedAt>::to_wire_utc(&self.#updated_ident),
                    );
                    #(#data_inserts)*
                    data
                }

                fn cqrs_tracked_data(&self) -> __p::serde_json::Map<String, __p::serde_json::Value> {
                    #[allow(unused_mut)]
                    let mut data = __p::serde_json::Map::new();
                    #(#tracked_inserts)*
                    data
                }

                fn cqrs_check_values(&self) -> ::cqrs_diesel::Result<()> {
                    #(#value_checks)*
                    ::core::result::Result::Ok(())
                }
            }

            #hooks

            #(#stores)*
        };
    }
}

/// The impls emitted beside the errors of a struct that failed to parse (see cqrs-diesel's
/// `__cqrs_master_fallback!`), when it is a plain struct they can be written for.
pub(crate) fn fallback(input: &syn::DeriveInput) -> TokenStream {
    if !input.generics.params.is_empty() || !matches!(input.data, syn::Data::Struct(_)) {
        return TokenStream::new();
    }
    let ident = &input.ident;
    // Whether the user implements `MasterHooks` (`#[cqrs(hooks)]`), read from the raw tokens:
    // the attributes did not parse.
    let hooks = input.attrs.iter().any(|attr| {
        attr.path().is_ident("cqrs")
            && attr.meta.require_list().is_ok_and(|list| {
                list.tokens
                    .clone()
                    .into_iter()
                    .any(|token| matches!(token, proc_macro2::TokenTree::Ident(i) if i == "hooks"))
            })
    });
    quote! { ::cqrs_diesel::__cqrs_master_fallback!(#ident, hooks = #hooks); }
}

/// Whether PostgreSQL's `json_build_object` writes the field's stored value as its
/// `WireValue` does (the same JSON value): booleans, integers, text and UUIDs, or an `Option` of
/// one, judged by the type's name. A tracked update of a model whose tracked fields all are such
/// reads their old values and writes the row in one statement (see cqrs-diesel's
/// `master::single`).
fn renders_like_the_wire(field: &crate::attrs::Field) -> bool {
    fn last_segment(ty: &syn::Type) -> Option<&syn::PathSegment> {
        match ty {
            syn::Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
            _ => None,
        }
    }
    let Some(mut segment) = last_segment(&field.ty) else {
        return false;
    };
    if segment.ident == "Option" {
        let inner = match &segment.arguments {
            syn::PathArguments::AngleBracketed(args) => match args.args.first() {
                Some(syn::GenericArgument::Type(inner)) => last_segment(inner),
                _ => None,
            },
            _ => None,
        };
        let Some(inner) = inner else {
            return false;
        };
        segment = inner;
    }
    !field.utc
        && segment.arguments.is_none()
        && ["bool", "i16", "i32", "i64", "String", "Uuid"]
            .iter()
            .any(|name| segment.ident == name)
}

/// The wire value of `self.<field>`, spanned at the field's type: a type without the trait
/// is reported at that field.
fn wire_value(field: &crate::attrs::Field) -> TokenStream {
    let ident = &field.ident;
    let ty = &field.ty;
    if field.utc {
        quote_spanned! {ty.span()=> <#ty as __p::UtcWire>::to_wire_utc(&self.#ident) }
    } else {
        quote_spanned! {ty.span()=> <#ty as __p::WireValue>::to_wire(&self.#ident) }
    }
}

/// The `MasterStore` implementation for one backend, wrapped in cqrs-diesel's feature gate.
fn store(model: &Model, backend: BackendName) -> TokenStream {
    let ident = &model.ident;
    let table = &model.table;
    let fields = &model.fields;
    let pk_field = &fields[model.pk];
    let pk = &pk_field.ident;
    let pk_col = &pk_field.column;
    let rev_col = &fields[model.revision].column;
    let rev_ty = &fields[model.revision].ty;
    let upd_ty = &fields[model.updated].ty;
    let upd_col = &fields[model.updated].column;
    let pk_ty = &pk_field.ty;

    let columns: Vec<TokenStream> = fields
        .iter()
        .map(|f| {
            let col = &f.column;
            quote! { #table::#col }
        })
        .collect();
    let types: Vec<&syn::Type> = fields.iter().map(|f| &f.ty).collect();
    let bindings: Vec<proc_macro2::Ident> = (0..fields.len())
        .map(|i| format_ident!("__f{}", i))
        .collect();
    let idents: Vec<&proc_macro2::Ident> = fields.iter().map(|f| &f.ident).collect();
    let select = quote! { (#(#columns,)*) };
    let row_ty = quote! { (#(#types,)*) };
    let from_row = quote! {
        |(#(#bindings,)*): #row_ty| #ident { #(#idents: #bindings,)* }
    };
    // Every column from a row `r` (but the key when `with_key` is off: the database generates
    // it), with `cqrs_updated` set to `now`.
    let column_values = |r: TokenStream, with_key: bool| {
        let values = fields
            .iter()
            .enumerate()
            .filter(|(i, _)| with_key || *i != model.pk)
            .map(|(i, f)| {
                let col = &f.column;
                let field = &f.ident;
                if i == model.updated {
                    quote! { #table::#col.eq(&now) }
                } else {
                    quote! { #table::#col.eq(&#r.#field) }
                }
            });
        quote! { (#(#values,)*) }
    };
    let insert_values = |r: TokenStream| column_values(r, true);
    // `cqrs_updated` never goes backwards for one row: a writer that read the clock before
    // another took the row lock must not stamp its later revision with an earlier time (the
    // replica ranks one row's messages by time first: see cqrs-diesel's replica order). In SQL,
    // under the row lock: the later of now and the stored time plus one microsecond. SQLite
    // serialises writers, and reads the clock inside the write transaction.
    let upd_ty_sql = quote! { __d::dsl::SqlTypeOf<#table::#upd_col> };
    let monotonic_now = match backend {
        BackendName::Postgres | BackendName::Mysql => Some(quote! {
            __p::not_before(
                __d::IntoSql::into_sql::<#upd_ty_sql>(&now),
                #table::#upd_col,
            )
        }),
        BackendName::Sqlite => None,
    };
    // Non-key columns from `self`, and `cqrs_updated = now`; the revision is handled apart.
    let update_values = {
        let values = fields
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != model.pk && *i != model.revision)
            .map(|(i, f)| {
                let col = &f.column;
                let field = &f.ident;
                match (&monotonic_now, i == model.updated) {
                    (Some(later), true) => quote! { #table::#col.eq(#later) },
                    (None, true) => quote! { #table::#col.eq(&now) },
                    _ => quote! { #table::#col.eq(&self.#field) },
                }
            });
        quote! { (#(#values,)*) }
    };
    // For the bulk update, an upsert whose update part takes every non-key column from the
    // proposed row.
    let mysql_values = {
        let values = fields
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != model.pk && *i != model.revision)
            .map(|(i, f)| {
                let col = &f.column;
                if i == model.updated {
                    quote! {
                        #table::#col.eq(__p::not_before(__p::proposed(#table::#col), #table::#col))
                    }
                } else {
                    quote! { #table::#col.eq(__p::proposed(#table::#col)) }
                }
            });
        quote! { (#(#values,)*) }
    };
    let excluded_values = {
        let values = fields
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != model.pk && *i != model.revision)
            .map(|(i, f)| {
                let col = &f.column;
                if i == model.updated && backend == BackendName::Postgres {
                    quote! {
                        #table::#col.eq(__p::not_before(
                            __d::upsert::excluded(#table::#col),
                            #table::#col,
                        ))
                    }
                } else {
                    quote! { #table::#col.eq(__d::upsert::excluded(#table::#col)) }
                }
            });
        quote! { (#(#values,)*) }
    };
    let self_values = insert_values(quote! { self });
    let row_values = insert_values(quote! { row });
    let self_values_keyless = column_values(quote! { self }, false);
    let row_values_keyless = column_values(quote! { row }, false);

    let (gate, conn_ty, db_ty) = backend.tokens();
    let lockable = backend != BackendName::Sqlite;
    let find_one = if lockable {
        quote! {
            let query = #table::table.filter(#table::#pk_col.eq(&self.#pk)).select(#select);
            let row = if lock {
                query.for_update().first::<#row_ty>(conn).optional()?
            } else {
                query.first::<#row_ty>(conn).optional()?
            };
        }
    } else {
        quote! {
            let _ = lock; // SQLite serialises writers: the write transaction is the lock.
            let row = #table::table
                .filter(#table::#pk_col.eq(&self.#pk))
                .select(#select)
                .first::<#row_ty>(conn)
                .optional()?;
        }
    };
    let find_many = if lockable {
        quote! {
            let query = #table::table.filter(#table::#pk_col.eq_any(keys)).select(#select);
            let rows = if lock {
                query.for_update().load::<#row_ty>(conn)?
            } else {
                query.load::<#row_ty>(conn)?
            };
        }
    } else {
        quote! {
            let _ = lock;
            let rows = #table::table
                .filter(#table::#pk_col.eq_any(keys))
                .select(#select)
                .load::<#row_ty>(conn)?;
        }
    };

    let methods = if backend == BackendName::Mysql {
        // No RETURNING: write, then read back inside the same transaction.
        quote! {
            fn cqrs_update(&self, conn: &mut #conn_ty, bump: bool) -> __d::QueryResult<Option<Self>> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let target = #table::table.filter(#table::#pk_col.eq(&self.#pk));
                if bump {
                    let one: #rev_ty = 1;
                    __p::Cached(
                        __d::update(target)
                            .set((#update_values, #table::#rev_col.eq(#table::#rev_col + one))),
                    )
                    .execute(conn)?;
                } else {
                    __p::Cached(__d::update(target).set(#update_values)).execute(conn)?;
                }
                self.cqrs_find(conn, false)
            }

            fn cqrs_upsert(&self, conn: &mut #conn_ty) -> __d::QueryResult<Self> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let one: #rev_ty = 1;
                __p::Cached(
                    __d::insert_into(#table::table)
                        .values(#self_values)
                        .on_conflict(__d::dsl::DuplicatedKeys)
                        .do_update()
                        .set((#mysql_values, #table::#rev_col.eq(#table::#rev_col + one))),
                )
                .execute(conn)?;
                // `ON DUPLICATE KEY UPDATE` acts on a conflict with any unique key: a row that
                // collided with another row on another unique column updated that row, and
                // this one does not exist. The write's transaction rolls that back.
                self.cqrs_find(conn, false)?
                    .ok_or_else(|| __p::collided_on_another_unique_key(::core::stringify!(#table)))
            }

            fn cqrs_insert_generated(&self, conn: &mut #conn_ty) -> __d::QueryResult<Self> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                __d::insert_into(#table::table).values(#self_values_keyless).execute(conn)?;
                let key: #pk_ty = __p::key_from_insert_id(__p::last_insert_id(conn)?)?;
                #table::table
                    .filter(#table::#pk_col.eq(&key))
                    .select(#select)
                    .first::<#row_ty>(conn)
                    .map(#from_row)
            }

            fn cqrs_insert_many_generated(
                rows: &[&Self],
                conn: &mut #conn_ty,
            ) -> __d::QueryResult<Vec<Self>> {
                let Some(step) = __p::consecutive_insert_ids(conn)? else {
                    // Interleaved auto-increment: a multi-row insert's keys may have gaps.
                    return rows.iter().map(|row| row.cqrs_insert_generated(conn)).collect();
                };
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let values: Vec<_> = rows.iter().map(|row| #row_values_keyless).collect();
                __d::insert_into(#table::table).values(values).execute(conn)?;
                let first = __p::last_insert_id(conn)?;
                let keys = __p::insert_id_range(first, step, rows.len())?
                    .into_iter()
                    .map(__p::key_from_insert_id::<#pk_ty>)
                    .collect::<__d::QueryResult<Vec<#pk_ty>>>()?;
                let stored = #table::table
                    .filter(#table::#pk_col.eq_any(&keys))
                    .select(#select)
                    .order(#table::#pk_col.asc())
                    .load::<#row_ty>(conn)?;
                __p::expect_rows(stored.len(), rows.len())?;
                Ok(stored.into_iter().map(#from_row).collect())
            }

            fn cqrs_insert(&self, conn: &mut #conn_ty) -> __d::QueryResult<Self> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                __d::insert_into(#table::table).values(#self_values).execute(conn)?;
                self.cqrs_find(conn, false)?.ok_or(__d::result::Error::NotFound)
            }

            fn cqrs_delete(&self, conn: &mut #conn_ty) -> __d::QueryResult<Option<Self>> {
                let Some(old) = self.cqrs_find(conn, true)? else {
                    return Ok(None);
                };
                __d::delete(#table::table.filter(#table::#pk_col.eq(&self.#pk))).execute(conn)?;
                Ok(Some(old))
            }

            fn cqrs_insert_many(rows: &[&Self], conn: &mut #conn_ty) -> __d::QueryResult<Vec<Self>> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let values: Vec<_> = rows.iter().map(|row| #row_values).collect();
                __d::insert_into(#table::table).values(values).execute(conn)?;
                Self::cqrs_find_many(rows, conn, false)
            }

            fn cqrs_update_many(rows: &[&Self], conn: &mut #conn_ty) -> __d::QueryResult<Vec<Self>> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let one: #rev_ty = 1;
                let values: Vec<_> = rows.iter().map(|row| #row_values).collect();
                __d::insert_into(#table::table)
                    .values(values)
                    .on_conflict(__d::dsl::DuplicatedKeys)
                    .do_update()
                    .set((#mysql_values, #table::#rev_col.eq(#table::#rev_col + one)))
                    .execute(conn)?;
                Self::cqrs_find_many(rows, conn, false)
            }
        }
    } else {
        quote! {
            fn cqrs_update(&self, conn: &mut #conn_ty, bump: bool) -> __d::QueryResult<Option<Self>> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let target = #table::table.filter(#table::#pk_col.eq(&self.#pk));
                let row = if bump {
                    let one: #rev_ty = 1;
                    __p::Cached(
                        __d::update(target)
                            .set((#update_values, #table::#rev_col.eq(#table::#rev_col + one)))
                            .returning(#select),
                    )
                    .get_result::<#row_ty>(conn)
                    .optional()?
                } else {
                    __p::Cached(__d::update(target).set(#update_values).returning(#select))
                        .get_result::<#row_ty>(conn)
                        .optional()?
                };
                Ok(row.map(#from_row))
            }

            fn cqrs_upsert(&self, conn: &mut #conn_ty) -> __d::QueryResult<Self> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let one: #rev_ty = 1;
                __p::Cached(
                    __d::insert_into(#table::table)
                        .values(#self_values)
                        .on_conflict(#table::#pk_col)
                        .do_update()
                        .set((#excluded_values, #table::#rev_col.eq(#table::#rev_col + one)))
                        .returning(#select),
                )
                .get_result::<#row_ty>(conn)
                .map(#from_row)
            }

            fn cqrs_insert_generated(&self, conn: &mut #conn_ty) -> __d::QueryResult<Self> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                __d::insert_into(#table::table)
                    .values(#self_values_keyless)
                    .returning(#select)
                    .get_result::<#row_ty>(conn)
                    .map(#from_row)
            }

            fn cqrs_insert_many_generated(
                rows: &[&Self],
                conn: &mut #conn_ty,
            ) -> __d::QueryResult<Vec<Self>> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let values: Vec<_> = rows.iter().map(|row| #row_values_keyless).collect();
                // The rows come back in the order of the VALUES list.
                let stored = __d::insert_into(#table::table)
                    .values(values)
                    .returning(#select)
                    .get_results::<#row_ty>(conn)?;
                Ok(stored.into_iter().map(#from_row).collect())
            }

            fn cqrs_insert(&self, conn: &mut #conn_ty) -> __d::QueryResult<Self> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                __d::insert_into(#table::table)
                    .values(#self_values)
                    .returning(#select)
                    .get_result::<#row_ty>(conn)
                    .map(#from_row)
            }

            fn cqrs_delete(&self, conn: &mut #conn_ty) -> __d::QueryResult<Option<Self>> {
                let row = __d::delete(#table::table.filter(#table::#pk_col.eq(&self.#pk)))
                    .returning(#select)
                    .get_result::<#row_ty>(conn)
                    .optional()?;
                Ok(row.map(#from_row))
            }

            fn cqrs_insert_many(rows: &[&Self], conn: &mut #conn_ty) -> __d::QueryResult<Vec<Self>> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let values: Vec<_> = rows.iter().map(|row| #row_values).collect();
                let rows = __d::insert_into(#table::table)
                    .values(values)
                    .returning(#select)
                    .get_results::<#row_ty>(conn)?;
                Ok(rows.into_iter().map(#from_row).collect())
            }

            fn cqrs_update_many(rows: &[&Self], conn: &mut #conn_ty) -> __d::QueryResult<Vec<Self>> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::now();
                let one: #rev_ty = 1;
                let values: Vec<_> = rows.iter().map(|row| #row_values).collect();
                let rows = __d::insert_into(#table::table)
                    .values(values)
                    .on_conflict(#table::#pk_col)
                    .do_update()
                    .set((#excluded_values, #table::#rev_col.eq(#table::#rev_col + one)))
                    .returning(#select)
                    .get_results::<#row_ty>(conn)?;
                Ok(rows.into_iter().map(#from_row).collect())
            }
        }
    };

    // The conditions of a `RowFilter`, applied to a boxed query named `query`.
    let filters = quote! {
        if let ::core::option::Option::Some(keys) = &filter.pks {
            let keys = keys
                .iter()
                .map(__p::decode_key::<#pk_ty>)
                .collect::<__d::QueryResult<Vec<#pk_ty>>>()?;
            query = query.filter(#table::#pk_col.eq_any(keys));
        }
        if let ::core::option::Option::Some(from) = &filter.pk_from {
            query = query.filter(#table::#pk_col.ge(__p::decode_key::<#pk_ty>(from)?));
        }
        if let ::core::option::Option::Some(to) = &filter.pk_to {
            query = query.filter(#table::#pk_col.le(__p::decode_key::<#pk_ty>(to)?));
        }
        if let ::core::option::Option::Some(since) = filter.updated_since {
            query = query.filter(
                #table::#upd_col.ge(<#upd_ty as ::cqrs_diesel::UpdatedAt>::from_utc(since)),
            );
        }
        if let ::core::option::Option::Some(sql) = &filter.sql {
            query = query.filter(__d::dsl::sql::<__d::sql_types::Bool>(sql));
        }
    };
    let single = if backend == BackendName::Postgres {
        quote! {
            const SINGLE_STATEMENT: bool = true;

            fn cqrs_single(
                &self,
                conn: &mut #conn_ty,
                plan: &__p::SinglePlan,
            ) -> __d::QueryResult<Option<Self>> {
                let now = <#upd_ty as ::cqrs_diesel::UpdatedAt>::from_utc(plan.now());
                __p::SingleWrite::new(self, plan, &now)
                    .get_result::<#row_ty>(conn)
                    .optional()
                    .map(|row| row.map(#from_row))
            }
        }
    } else {
        TokenStream::new()
    };
    let columns_impl = if backend == BackendName::Postgres {
        columns_impl(model, &db_ty)
    } else {
        TokenStream::new()
    };
    quote! {
        #gate! {
            #columns_impl

            #[automatically_derived]
            impl ::cqrs_diesel::MasterStore<#conn_ty> for #ident {
                #single

                fn cqrs_find(&self, conn: &mut #conn_ty, lock: bool) -> __d::QueryResult<Option<Self>> {
                    #find_one
                    Ok(row.map(#from_row))
                }

                fn cqrs_find_many(rows: &[&Self], conn: &mut #conn_ty, lock: bool) -> __d::QueryResult<Vec<Self>> {
                    let keys: Vec<_> = rows.iter().map(|row| ::core::clone::Clone::clone(&row.#pk)).collect();
                    #find_many
                    Ok(rows.into_iter().map(#from_row).collect())
                }

                fn cqrs_select_page(
                    conn: &mut #conn_ty,
                    filter: &::cqrs_diesel::RowFilter,
                    after: ::core::option::Option<&__p::serde_json::Value>,
                    limit: i64,
                ) -> __d::QueryResult<Vec<Self>> {
                    let mut query = #table::table
                        .select(#select)
                        .order(#table::#pk_col.asc())
                        .limit(limit)
                        .into_boxed::<#db_ty>();
                    #filters
                    if let ::core::option::Option::Some(after) = after {
                        query = query.filter(#table::#pk_col.gt(__p::decode_key::<#pk_ty>(after)?));
                    }
                    let rows = query.load::<#row_ty>(conn)?;
                    Ok(rows.into_iter().map(#from_row).collect())
                }

                fn cqrs_count(
                    conn: &mut #conn_ty,
                    filter: &::cqrs_diesel::RowFilter,
                ) -> __d::QueryResult<i64> {
                    let mut query = #table::table.into_boxed::<#db_ty>();
                    #filters
                    query.count().get_result(conn)
                }

                #methods
            }
        }
    }
}

/// The `MasterColumns` implementation for one backend: the names and binds generic code
/// builds the model's statements from.
fn columns_impl(model: &Model, db_ty: &TokenStream) -> TokenStream {
    let ident = &model.ident;
    let ident_str = ident.to_string();
    let table = &model.table;
    let fields = &model.fields;
    let upd_ty = &fields[model.updated].ty;
    let (pk_index, revision_index, updated_index) = (model.pk, model.revision, model.updated);
    let tracked_indexes = &model.tracked;
    let columns = fields.iter().map(|f| {
        let col = &f.column;
        quote! { <#table::#col as __d::Column>::NAME }
    });
    let sql_types = fields.iter().map(|f| {
        let col = &f.column;
        quote! { __d::dsl::SqlTypeOf<#table::#col> }
    });
    let upd_col = &fields[model.updated].column;
    let value_arms = fields.iter().enumerate().map(|(i, f)| {
        let col = &f.column;
        let field = &f.ident;
        let ty = &f.ty;
        quote_spanned! {ty.span()=>
            #i => out.push_bind_param::<__d::dsl::SqlTypeOf<#table::#col>, #ty>(&self.#field),
        }
    });
    quote! {
        #[automatically_derived]
        impl __p::MasterColumns<#db_ty> for #ident {
            type RowSqlType = (#(#sql_types,)*);
            type Updated = #upd_ty;
            const COLUMNS: &'static [&'static str] = &[#(#columns),*];
            const PK_INDEX: usize = #pk_index;
            const REVISION_INDEX: usize = #revision_index;
            const UPDATED_INDEX: usize = #updated_index;
            const TRACKED_INDEXES: &'static [usize] = &[#(#tracked_indexes),*];

            fn walk_table(
                out: __d::query_builder::AstPass<'_, '_, #db_ty>,
            ) -> __d::QueryResult<()> {
                __d::query_builder::QueryFragment::<#db_ty>::walk_ast(&#table::table, out)
            }

            fn walk_value<'b>(
                &'b self,
                index: usize,
                mut out: __d::query_builder::AstPass<'_, 'b, #db_ty>,
            ) -> __d::QueryResult<()> {
                match index {
                    #(#value_arms)*
                    _ => ::core::result::Result::Err(__d::result::Error::QueryBuilderError(
                        ::std::format!("no column {} in {}", index, #ident_str).into(),
                    )),
                }
            }

            fn walk_updated<'b>(
                at: &'b #upd_ty,
                mut out: __d::query_builder::AstPass<'_, 'b, #db_ty>,
            ) -> __d::QueryResult<()> {
                out.push_bind_param::<__d::dsl::SqlTypeOf<#table::#upd_col>, #upd_ty>(at)
            }
        }
    }
}
