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
    Sqlite,
}

impl BackendName {
    pub(crate) const ALL: [BackendName; 3] = [
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

/// `backends(postgres, mysql, sqlite)`: a non-empty list of backends.
pub(crate) fn parse_backends(
    meta: &syn::meta::ParseNestedMeta<'_>,
) -> syn::Result<Vec<BackendName>> {
    let mut list = Vec::new();
    meta.parse_nested_meta(|backend| {
        list.push(if backend.path.is_ident("postgres") {
            BackendName::Postgres
        } else if backend.path.is_ident("mysql") {
            BackendName::Mysql
        } else if backend.path.is_ident("sqlite") {
            BackendName::Sqlite
        } else {
            return Err(backend.error("unknown backend: expected `postgres`, `mysql` or `sqlite`"));
        });
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

fn parse_struct_attrs(input: &DeriveInput) -> syn::Result<StructAttrs> {
    let mut out = StructAttrs::default();
    for attr in &input.attrs {
        if attr.path().is_ident("cqrs") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("id") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if out.cqrs_id.is_some() {
                        return Err(meta.error("`id` is given twice"));
                    }
                    out.cqrs_id = Some(check_cqrs_id(&lit)?);
                } else if meta.path.is_ident("table") {
                    out.table = Some(meta.value()?.parse()?);
                } else if meta.path.is_ident("pk") {
                    out.pk = Some(meta.value()?.parse()?);
                } else if meta.path.is_ident("tracked") {
                    meta.parse_nested_meta(|field| {
                        let ident = field
                            .path
                            .get_ident()
                            .cloned()
                            .ok_or_else(|| field.error("`tracked(...)` lists field names"))?;
                        out.tracked.push(ident);
                        Ok(())
                    })?;
                } else if meta.path.is_ident("produce") {
                    let lit: LitBool = meta.value()?.parse()?;
                    out.produce = Some(lit.value);
                } else if meta.path.is_ident("hooks") {
                    out.hooks = true;
                } else if meta.path.is_ident("backends") {
                    out.backends = Some(parse_backends(&meta)?);
                } else {
                    return Err(meta.error(format!(
                        "unknown `cqrs` attribute; expected one of {STRUCT_KEYS}"
                    )));
                }
                Ok(())
            })?;
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
    Ok(out)
}

fn parse_field(field: &syn::Field) -> syn::Result<Field> {
    let ident = field
        .ident
        .clone()
        .ok_or_else(|| syn::Error::new(field.span(), "fields must be named"))?;
    let mut column: Option<Ident> = None;
    let mut diesel_column: Option<Ident> = None;
    let mut wire_name: Option<String> = None;
    let mut skip = false;
    let mut utc = false;
    for attr in &field.attrs {
        if attr.path().is_ident("cqrs") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    skip = true;
                } else if meta.path.is_ident("utc") {
                    utc = true;
                } else if meta.path.is_ident("rename") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().is_empty() {
                        return Err(syn::Error::new(lit.span(), "`rename` must not be empty"));
                    }
                    wire_name = Some(lit.value());
                } else if meta.path.is_ident("column") {
                    column = Some(meta.value()?.parse()?);
                } else {
                    return Err(meta.error(format!(
                        "unknown `cqrs` field attribute; expected one of {FIELD_KEYS}"
                    )));
                }
                Ok(())
            })?;
        } else if attr.path().is_ident("diesel") {
            diesel_column = diesel_column.or_else(|| diesel_column_name(attr));
        }
    }
    let column = column.or(diesel_column).unwrap_or_else(|| ident.clone());
    let wire_name = wire_name.unwrap_or_else(|| ident.to_string());
    Ok(Field {
        ident,
        ty: field.ty.clone(),
        column,
        wire_name,
        skip,
        utc,
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

/// Parses and checks the whole struct.
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
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "MasterModel cannot be derived for a generic struct",
        ));
    }
    let attrs = parse_struct_attrs(input)?;
    let mut fields = Vec::with_capacity(named.named.len());
    let mut errors: Option<syn::Error> = None;
    for field in &named.named {
        match parse_field(field) {
            Ok(f) => fields.push(f),
            Err(e) => match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            },
        }
    }
    if let Some(errors) = errors {
        return Err(errors);
    }
    let span = input.ident.span();
    let cqrs_id = attrs.cqrs_id.ok_or_else(|| {
        syn::Error::new(
            span,
            "missing `#[cqrs(id = \"...\")]`: the cqrs_id master and replicas share",
        )
    })?;
    let table = attrs.table.or(attrs.diesel_table).ok_or_else(|| {
        syn::Error::new(
            span,
            "missing table: add `#[cqrs(table = path::to::table)]` (or `#[diesel(table_name = ...)]`)",
        )
    })?;
    let revision = find_field(&fields, "cqrs_revision").ok_or_else(|| {
        missing_column(
            span,
            "cqrs_revision",
            "add `cqrs_revision: i32` backed by a column `cqrs_revision INTEGER NOT NULL DEFAULT 0`",
        )
    })?;
    let updated = find_field(&fields, "cqrs_updated").ok_or_else(|| {
        missing_column(
            span,
            "cqrs_updated",
            "add `cqrs_updated: chrono::DateTime<chrono::Utc>` (or `chrono::NaiveDateTime` on \
             MySQL) backed by a timestamp column",
        )
    })?;
    let pk_ident = attrs.pk.or(attrs.diesel_pk);
    let pk = match &pk_ident {
        Some(ident) => find_field(&fields, &ident.to_string()).ok_or_else(|| {
            syn::Error::new(
                ident.span(),
                format!("no field `{ident}` for the primary key"),
            )
        })?,
        None => find_field(&fields, "id").ok_or_else(|| {
            syn::Error::new(
                span,
                "no `id` field: name the primary key field with `#[cqrs(pk = field)]`",
            )
        })?,
    };
    let mut tracked = Vec::with_capacity(attrs.tracked.len());
    for ident in &attrs.tracked {
        let index = find_field(&fields, &ident.to_string()).ok_or_else(|| {
            syn::Error::new(
                ident.span(),
                format!(
                    "tracked field `{ident}` does not exist on `{}`",
                    input.ident
                ),
            )
        })?;
        if fields[index].skip {
            return Err(syn::Error::new(
                ident.span(),
                format!("tracked field `{ident}` is `#[cqrs(skip)]`: it is not in the payload"),
            ));
        }
        if !tracked.contains(&index) {
            tracked.push(index);
        }
    }
    Ok(Model {
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
    })
}
