//! Parsing of `#[cqrs(...)]` (and the `#[diesel(...)]` keys we honour) into a model
//! description. Every mistake is a `syn::Error` spanned at the attribute that caused it.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, LitBool, LitStr, Path, Token, Type};

/// The backends a model's statements are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendName {
    Postgres,
    Mysql,
    /// Diesel's MariaDB backend (`MariadbConnection`): master models only.
    Mariadb,
    Sqlite,
}

impl BackendName {
    /// Every backend a master model is generated for unless it lists its own.
    pub(crate) const ALL: [BackendName; 4] = [
        BackendName::Postgres,
        BackendName::Mysql,
        BackendName::Mariadb,
        BackendName::Sqlite,
    ];

    /// Every backend a replica model is generated for unless it lists its own: replicas write
    /// to MariaDB through the MySQL backend.
    pub(crate) const REPLICA: [BackendName; 3] = [
        BackendName::Postgres,
        BackendName::Mysql,
        BackendName::Sqlite,
    ];

    /// cqrs-diesel's feature gate macro, the connection type and the backend type, as paths
    /// relative to the generated code's `__d` (Diesel) alias.
    pub(crate) fn tokens(
        self,
    ) -> (
        proc_macro2::TokenStream,
        proc_macro2::TokenStream,
        proc_macro2::TokenStream,
    ) {
        use quote::quote;
        match self {
            BackendName::Postgres => (
                quote! { ::cqrs_diesel::__cqrs_if_postgres },
                quote! { __d::PgConnection },
                quote! { __d::pg::Pg },
            ),
            BackendName::Mysql => (
                quote! { ::cqrs_diesel::__cqrs_if_mysql },
                quote! { __d::MysqlConnection },
                quote! { __d::mysql::Mysql },
            ),
            BackendName::Mariadb => (
                quote! { ::cqrs_diesel::__cqrs_if_mariadb },
                quote! { __d::MariadbConnection },
                quote! { __d::mariadb::Mariadb },
            ),
            BackendName::Sqlite => (
                quote! { ::cqrs_diesel::__cqrs_if_sqlite },
                quote! { __d::SqliteConnection },
                quote! { __d::sqlite::Sqlite },
            ),
        }
    }
}

/// One field of the model struct.
pub(crate) struct Field {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    /// The Diesel column (the field name unless renamed with `column_name`).
    pub(crate) column: Ident,
    /// The key in `instance_data`.
    pub(crate) wire_name: String,
    /// Left out of the payload (still written to the table).
    pub(crate) skip: bool,
    /// A naive timestamp holding UTC, written in the aware form.
    pub(crate) utc: bool,
}

/// A `#[derive(MasterModel)]` struct, parsed.
pub(crate) struct Model {
    pub(crate) ident: Ident,
    pub(crate) cqrs_id: String,
    pub(crate) table: Path,
    pub(crate) fields: Vec<Field>,
    /// Index into `fields`.
    pub(crate) pk: usize,
    pub(crate) revision: usize,
    pub(crate) updated: usize,
    /// Indexes into `fields`.
    pub(crate) tracked: Vec<usize>,
    pub(crate) produce: bool,
    pub(crate) hooks: bool,
    pub(crate) backends: Vec<BackendName>,
}

const STRUCT_KEYS: &str =
    "`id`, `table`, `pk`, `tracked(...)`, `produce`, `hooks`, `backends(...)`";
const FIELD_KEYS: &str = "`skip`, `rename`, `column`, `utc`";

/// Checks a `cqrs_id`: it becomes a routing key and part of `cqrs.<queue>.<cqrs_id>`, so it
/// must be a non-empty word without AMQP wildcards or whitespace.
pub(crate) fn check_cqrs_id(lit: &LitStr) -> syn::Result<String> {
    let id = lit.value();
    if id.is_empty() {
        return Err(syn::Error::new(lit.span(), "`cqrs_id` must not be empty"));
    }
    if id.len() > 200 {
        return Err(syn::Error::new(
            lit.span(),
            "`cqrs_id` is too long: it is part of routing keys, which are limited to 255 bytes",
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`cqrs_id` {id:?} contains {bad:?}: use letters, digits, `_`, `-`, `.` or `:` \
                 (it is an AMQP routing key, where `*` and `#` are wildcards)"
            ),
        ));
    }
    if id.starts_with('.') || id.ends_with('.') || id.contains("..") {
        return Err(syn::Error::new(
            lit.span(),
            format!("`cqrs_id` {id:?} has an empty routing-key word around a `.`"),
        ));
    }
    Ok(id)
}

#[derive(Default)]
struct StructAttrs {
    cqrs_id: Option<String>,
    table: Option<Path>,
    diesel_table: Option<Path>,
    pk: Option<Ident>,
    diesel_pk: Option<Ident>,
    tracked: Vec<Ident>,
    produce: Option<bool>,
    hooks: bool,
    backends: Option<Vec<BackendName>>,
}

/// `backends(postgres, mysql, mariadb, sqlite)`: a non-empty list of backends, out of
/// `allowed`.
pub(crate) fn parse_backends(
    meta: &syn::meta::ParseNestedMeta<'_>,
    allowed: &[BackendName],
) -> syn::Result<Vec<BackendName>> {
    let mut list = Vec::new();
    meta.parse_nested_meta(|backend| {
        let name = if backend.path.is_ident("postgres") {
            BackendName::Postgres
        } else if backend.path.is_ident("mysql") {
            BackendName::Mysql
        } else if backend.path.is_ident("mariadb") {
            BackendName::Mariadb
        } else if backend.path.is_ident("sqlite") {
            BackendName::Sqlite
        } else {
            let expected = if allowed.contains(&BackendName::Mariadb) {
                "`postgres`, `mysql`, `mariadb` or `sqlite`"
            } else {
                "`postgres`, `mysql` or `sqlite`"
            };
            return Err(backend.error(format!("unknown backend: expected {expected}")));
        };
        if !allowed.contains(&name) {
            return Err(backend.error(
                "a replica writes to MariaDB through the MySQL backend (`MysqlConnection`): \
                 list `mysql` instead of `mariadb`",
            ));
        }
        list.push(name);
        Ok(())
    })?;
    if list.is_empty() {
        return Err(meta.error("`backends(...)` needs at least one backend"));
    }
    Ok(list)
}

/// Skips the value of a `#[diesel(...)]` key we do not read (`key = value` or `key(...)`);
/// Diesel's own derives check those.
pub(crate) fn skip_diesel_key(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: proc_macro2::TokenStream = content.parse()?;
    }
    Ok(())
}

/// The column named by a field's `#[diesel(column_name = ...)]`, if any.
pub(crate) fn diesel_column_name(attr: &syn::Attribute) -> Option<Ident> {
    let mut column = None;
    let _ = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("column_name") {
            column = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            skip_diesel_key(&meta)
        }
    });
    column
}

/// The table named by a struct's `#[diesel(table_name = ...)]`, if any.
pub(crate) fn diesel_table_name(attr: &syn::Attribute) -> Option<Path> {
    let mut table = None;
    let _ = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("table_name") {
            table = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            skip_diesel_key(&meta)
        }
    });
    table
}

/// Errors collected while parsing a derive's input, reported together, each at its own span.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Keeps the error of `result`, if any, and returns its value.
    pub(crate) fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// `Err` with every error pushed, if there was one.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Stores `value` for `key`, or reports the key as given twice (at its second use).
pub(crate) fn set_once<T>(
    errors: &mut Errors,
    slot: &mut Option<T>,
    value: T,
    meta: &syn::meta::ParseNestedMeta<'_>,
    key: &str,
) {
    if slot.is_some() {
        errors.push(meta.error(format!("`{key}` is given twice")));
    } else {
        *slot = Some(value);
    }
}

/// Reports an unknown key and skips its value, so the keys after it are still checked.
pub(crate) fn unknown_key(
    errors: &mut Errors,
    meta: &syn::meta::ParseNestedMeta<'_>,
    message: String,
) -> syn::Result<()> {
    errors.push(meta.error(message));
    skip_diesel_key(meta)
}

fn parse_struct_attrs(input: &DeriveInput, errors: &mut Errors) -> StructAttrs {
    let mut out = StructAttrs::default();
    let mut hooks = None;
    for attr in &input.attrs {
        if attr.path().is_ident("cqrs") {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("id") {
                    let lit: LitStr = meta.value()?.parse()?;
                    // A bad id is reported as such, not also as a missing one.
                    let id = errors
                        .ok(check_cqrs_id(&lit))
                        .unwrap_or_else(|| lit.value());
                    set_once(errors, &mut out.cqrs_id, id, &meta, "id");
                } else if meta.path.is_ident("table") {
                    let table = meta.value()?.parse()?;
                    set_once(errors, &mut out.table, table, &meta, "table");
                } else if meta.path.is_ident("pk") {
                    let pk = meta.value()?.parse()?;
                    set_once(errors, &mut out.pk, pk, &meta, "pk");
                } else if meta.path.is_ident("tracked") {
                    meta.parse_nested_meta(|field| {
                        let ident = field
                            .path
                            .get_ident()
                            .cloned()
                            .ok_or_else(|| field.error("`tracked(...)` lists field names"))?;
                        if out.tracked.contains(&ident) {
                            errors.push(field.error(format!("`{ident}` is tracked twice")));
                        } else {
                            out.tracked.push(ident);
                        }
                        Ok(())
                    })?;
                } else if meta.path.is_ident("produce") {
                    let lit: LitBool = meta.value()?.parse()?;
                    set_once(errors, &mut out.produce, lit.value, &meta, "produce");
                } else if meta.path.is_ident("hooks") {
                    set_once(errors, &mut hooks, (), &meta, "hooks");
                } else if meta.path.is_ident("backends") {
                    let backends = parse_backends(&meta, &BackendName::ALL)?;
                    set_once(errors, &mut out.backends, backends, &meta, "backends");
                } else {
                    unknown_key(
                        errors,
                        &meta,
                        format!("unknown `cqrs` attribute; expected one of {STRUCT_KEYS}"),
                    )?;
                }
                Ok(())
            });
            errors.ok(result);
        } else if attr.path().is_ident("diesel") {
            // Only read what we use; Diesel's own derives report the rest.
            out.diesel_table = out.diesel_table.take().or_else(|| diesel_table_name(attr));
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("primary_key") {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let keys =
                        content.parse_terminated(<Ident as syn::parse::Parse>::parse, Token![,])?;
                    if keys.len() == 1 {
                        out.diesel_pk = keys.into_iter().next();
                    }
                    Ok(())
                } else {
                    skip_diesel_key(&meta)
                }
            });
        }
    }
    out.hooks = hooks.is_some();
    out
}

fn parse_field(field: &syn::Field, errors: &mut Errors) -> Option<Field> {
    let Some(ident) = field.ident.clone() else {
        errors.push(syn::Error::new(field.span(), "fields must be named"));
        return None;
    };
    let mut column: Option<Ident> = None;
    let mut diesel_column: Option<Ident> = None;
    let mut wire_name: Option<String> = None;
    let mut skip = None;
    let mut utc = None;
    for attr in &field.attrs {
        if attr.path().is_ident("cqrs") {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    set_once(errors, &mut skip, (), &meta, "skip");
                } else if meta.path.is_ident("utc") {
                    set_once(errors, &mut utc, (), &meta, "utc");
                } else if meta.path.is_ident("rename") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().is_empty() {
                        errors.push(syn::Error::new(lit.span(), "`rename` must not be empty"));
                    } else {
                        set_once(errors, &mut wire_name, lit.value(), &meta, "rename");
                    }
                } else if meta.path.is_ident("column") {
                    let name = meta.value()?.parse()?;
                    set_once(errors, &mut column, name, &meta, "column");
                } else {
                    unknown_key(
                        errors,
                        &meta,
                        format!("unknown `cqrs` field attribute; expected one of {FIELD_KEYS}"),
                    )?;
                }
                Ok(())
            });
            errors.ok(result);
        } else if attr.path().is_ident("diesel") {
            diesel_column = diesel_column.or_else(|| diesel_column_name(attr));
        }
    }
    let column = column.or(diesel_column).unwrap_or_else(|| ident.clone());
    let wire_name = wire_name.unwrap_or_else(|| ident.to_string());
    Some(Field {
        ident,
        ty: field.ty.clone(),
        column,
        wire_name,
        skip: skip.is_some(),
        utc: utc.is_some(),
    })
}

fn find_field(fields: &[Field], name: &str) -> Option<usize> {
    fields.iter().position(|f| f.ident == name)
}

fn missing_column(span: Span, name: &str, hint: &str) -> syn::Error {
    syn::Error::new(
        span,
        format!("a MasterModel needs a `{name}` field; {hint}"),
    )
}

/// Parses and checks the whole struct: stage one reads every attribute into a typed model,
/// stage two checks the attributes against each other and the fields. Every mistake found in
/// either stage is reported, each at its own span.
pub(crate) fn parse_model(input: &DeriveInput) -> syn::Result<Model> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "MasterModel can only be derived for a struct with named fields (a Diesel model)",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new(
            input.ident.span(),
            "MasterModel can only be derived for a struct with named fields (a Diesel model)",
        ));
    };
    let mut errors = Errors::default();
    if !input.generics.params.is_empty() {
        errors.push(syn::Error::new(
            input.generics.span(),
            "MasterModel cannot be derived for a generic struct",
        ));
    }
    let attrs = parse_struct_attrs(input, &mut errors);
    let fields: Vec<Field> = named
        .named
        .iter()
        .filter_map(|field| parse_field(field, &mut errors))
        .collect();

    let span = input.ident.span();
    let cqrs_id = attrs.cqrs_id.or_else(|| {
        errors.push(syn::Error::new(
            span,
            "missing `#[cqrs(id = \"...\")]`: the cqrs_id master and replicas share",
        ));
        None
    });
    let table = attrs.table.or(attrs.diesel_table).or_else(|| {
        errors.push(syn::Error::new(
            span,
            "missing table: add `#[cqrs(table = path::to::table)]` (or `#[diesel(table_name = ...)]`)",
        ));
        None
    });
    let revision = find_field(&fields, "cqrs_revision").or_else(|| {
        errors.push(missing_column(
            span,
            "cqrs_revision",
            "add `cqrs_revision: i32` backed by a column `cqrs_revision INTEGER NOT NULL DEFAULT 0`",
        ));
        None
    });
    let updated = find_field(&fields, "cqrs_updated").or_else(|| {
        errors.push(missing_column(
            span,
            "cqrs_updated",
            "add `cqrs_updated: chrono::DateTime<chrono::Utc>` (or `chrono::NaiveDateTime` on \
             MySQL) backed by a timestamp column",
        ));
        None
    });
    let pk = match attrs.pk.or(attrs.diesel_pk) {
        Some(ident) => find_field(&fields, &ident.to_string()).or_else(|| {
            errors.push(syn::Error::new(
                ident.span(),
                format!("no field `{ident}` for the primary key"),
            ));
            None
        }),
        None => find_field(&fields, "id").or_else(|| {
            errors.push(syn::Error::new(
                span,
                "no `id` field: name the primary key field with `#[cqrs(pk = field)]`",
            ));
            None
        }),
    };
    let mut tracked = Vec::with_capacity(attrs.tracked.len());
    for ident in &attrs.tracked {
        match find_field(&fields, &ident.to_string()) {
            None => errors.push(syn::Error::new(
                ident.span(),
                format!(
                    "tracked field `{ident}` does not exist on `{}`",
                    input.ident
                ),
            )),
            Some(index) if fields[index].skip => errors.push(syn::Error::new(
                ident.span(),
                format!("tracked field `{ident}` is `#[cqrs(skip)]`: it is not in the payload"),
            )),
            Some(index) => tracked.push(index),
        }
    }
    errors.finish()?;
    match (cqrs_id, table, pk, revision, updated) {
        (Some(cqrs_id), Some(table), Some(pk), Some(revision), Some(updated)) => Ok(Model {
            ident: input.ident.clone(),
            cqrs_id,
            table,
            fields,
            pk,
            revision,
            updated,
            tracked,
            produce: attrs.produce.unwrap_or(true),
            hooks: attrs.hooks,
            backends: attrs.backends.unwrap_or_else(|| BackendName::ALL.to_vec()),
        }),
        // Each missing part pushed an error above.
        _ => Err(syn::Error::new(span, "invalid MasterModel")),
    }
}
