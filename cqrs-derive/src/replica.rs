//! `#[derive(ReplicaModel)]`: attribute parsing and code generation.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, LitBool, LitInt, LitStr, Path, Type};

use crate::attrs::{
    BackendName, Errors, check_cqrs_id, diesel_column_name, diesel_table_name, parse_backends,
    set_once, unknown_key,
};

struct Field {
    ident: Ident,
    ty: Type,
    column: Ident,
    /// The key in `instance_data` this field is read from.
    wire_name: String,
    /// A missing key gives `Default::default()`.
    default: bool,
}

struct Model {
    ident: Ident,
    cqrs_id: String,
    table: Option<Path>,
    fields: Vec<Field>,
    pk: usize,
    revision: Option<usize>,
    custom: bool,
    meta: bool,
    only_direct_syncs: bool,
    /// `#[cqrs(hooks)]`: the user implements `ReplicaHooks`.
    hooks: bool,
    max_retries: Option<Option<u32>>,
    retry_delay_ms: Option<u64>,
    retry_exponential: Option<bool>,
    backends: Vec<BackendName>,
}

const STRUCT_KEYS: &str = "`id`, `table`, `pk`, `custom`, `meta`, `only_direct_syncs`, \
                           `hooks`, `max_retries`, `retry_delay`, `retry_exponential`, \
                           `backends(...)`";
const FIELD_KEYS: &str = "`from`, `column`, `default`";

/// `"500ms"`, `"2s"`, `"5m"` or a whole number of seconds, in milliseconds.
fn parse_duration(lit: &LitStr) -> syn::Result<u64> {
    let text = lit.value();
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1000)
    };
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| {
            syn::Error::new(
                lit.span(),
                format!(
                    "`retry_delay` {text:?} is not a duration: write \"500ms\", \"2s\" or \"1m\""
                ),
            )
        })
}

fn is_option(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none()
        && path.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

fn parse(input: &DeriveInput) -> syn::Result<Model> {
    let span = input.ident.span();
    let (Data::Struct(data), true) = (&input.data, input.generics.params.is_empty()) else {
        return Err(syn::Error::new(
            span,
            "ReplicaModel can only be derived for a non-generic struct with named fields",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new(
            span,
            "ReplicaModel can only be derived for a struct with named fields",
        ));
    };
    let mut errors = Errors::default();
    let mut cqrs_id = None;
    let mut table: Option<Path> = None;
    let mut diesel_table: Option<Path> = None;
    let mut pk: Option<Ident> = None;
    let mut custom = None;
    let mut meta = None;
    let mut only_direct_syncs = None;
    let mut hooks = None;
    let mut max_retries = None;
    let mut retry_delay_ms = None;
    let mut retry_exponential = None;
    let mut backends = None;
    for attr in &input.attrs {
        if attr.path().is_ident("cqrs") {
            let result = attr.parse_nested_meta(|meta_item| {
                let path = &meta_item.path;
                if path.is_ident("id") {
                    let lit: LitStr = meta_item.value()?.parse()?;
                    // A bad id is reported as such, not also as a missing one.
                    let id = errors
                        .ok(check_cqrs_id(&lit))
                        .unwrap_or_else(|| lit.value());
                    set_once(&mut errors, &mut cqrs_id, id, &meta_item, "id");
                } else if path.is_ident("table") {
                    let value = meta_item.value()?.parse()?;
                    set_once(&mut errors, &mut table, value, &meta_item, "table");
                } else if path.is_ident("pk") {
                    let value = meta_item.value()?.parse()?;
                    set_once(&mut errors, &mut pk, value, &meta_item, "pk");
                } else if path.is_ident("custom") {
                    set_once(&mut errors, &mut custom, (), &meta_item, "custom");
                } else if path.is_ident("meta") {
                    set_once(&mut errors, &mut meta, (), &meta_item, "meta");
                } else if path.is_ident("hooks") {
                    set_once(&mut errors, &mut hooks, (), &meta_item, "hooks");
                } else if path.is_ident("only_direct_syncs") {
                    set_once(
                        &mut errors,
                        &mut only_direct_syncs,
                        (),
                        &meta_item,
                        "only_direct_syncs",
                    );
                } else if path.is_ident("max_retries") {
                    let value = meta_item.value()?;
                    let retries = if value.peek(LitStr) {
                        let lit: LitStr = value.parse()?;
                        if lit.value() != "none" {
                            return Err(syn::Error::new(
                                lit.span(),
                                "`max_retries` is a number, or \"none\" for unlimited retries",
                            ));
                        }
                        None
                    } else {
                        let lit: LitInt = value.parse()?;
                        Some(lit.base10_parse::<u32>()?)
                    };
                    set_once(
                        &mut errors,
                        &mut max_retries,
                        retries,
                        &meta_item,
                        "max_retries",
                    );
                } else if path.is_ident("retry_delay") {
                    let lit: LitStr = meta_item.value()?.parse()?;
                    if let Some(ms) = errors.ok(parse_duration(&lit)) {
                        set_once(
                            &mut errors,
                            &mut retry_delay_ms,
                            ms,
                            &meta_item,
                            "retry_delay",
                        );
                    }
                } else if path.is_ident("retry_exponential") {
                    let lit: LitBool = meta_item.value()?.parse()?;
                    set_once(
                        &mut errors,
                        &mut retry_exponential,
                        lit.value,
                        &meta_item,
                        "retry_exponential",
                    );
                } else if path.is_ident("backends") {
                    let value = parse_backends(&meta_item, &BackendName::REPLICA)?;
                    set_once(&mut errors, &mut backends, value, &meta_item, "backends");
                } else {
                    unknown_key(
                        &mut errors,
                        &meta_item,
                        format!("unknown `cqrs` attribute; expected one of {STRUCT_KEYS}"),
                    )?;
                }
                Ok(())
            });
            errors.ok(result);
        } else if attr.path().is_ident("diesel") {
            diesel_table = diesel_table.or_else(|| diesel_table_name(attr));
        }
    }
    let custom = custom.is_some();
    let meta = meta.is_some();
    let only_direct_syncs = only_direct_syncs.is_some();
    let hooks = hooks.is_some();
    let mut fields = Vec::new();
    for field in &named.named {
        let Some(ident) = field.ident.clone() else {
            errors.push(syn::Error::new(field.span(), "fields must be named"));
            continue;
        };
        let mut column = None;
        let mut diesel_column = None;
        let mut wire_name = None;
        let mut default = None;
        for attr in &field.attrs {
            if attr.path().is_ident("cqrs") {
                let result = attr.parse_nested_meta(|meta_item| {
                    if meta_item.path.is_ident("from") {
                        let lit: LitStr = meta_item.value()?.parse()?;
                        if lit.value().is_empty() {
                            errors.push(syn::Error::new(lit.span(), "`from` must not be empty"));
                        } else {
                            set_once(&mut errors, &mut wire_name, lit.value(), &meta_item, "from");
                        }
                    } else if meta_item.path.is_ident("column") {
                        let value = meta_item.value()?.parse()?;
                        set_once(&mut errors, &mut column, value, &meta_item, "column");
                    } else if meta_item.path.is_ident("default") {
                        set_once(&mut errors, &mut default, (), &meta_item, "default");
                    } else {
                        unknown_key(
                            &mut errors,
                            &meta_item,
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
        fields.push(Field {
            column: column.or(diesel_column).unwrap_or_else(|| ident.clone()),
            wire_name: wire_name.unwrap_or_else(|| ident.to_string()),
            ident,
            ty: field.ty.clone(),
            default: default.is_some(),
        });
    }
    if cqrs_id.is_none() {
        errors.push(syn::Error::new(
            span,
            "missing `#[cqrs(id = \"...\")]`: the cqrs_id of the master model",
        ));
    }
    let find = |name: &str| fields.iter().position(|f| f.ident == name);
    let pk = match &pk {
        Some(ident) => find(&ident.to_string()).or_else(|| {
            errors.push(syn::Error::new(
                ident.span(),
                format!("no field `{ident}` for the primary key"),
            ));
            None
        }),
        None => find("id").or_else(|| {
            errors.push(syn::Error::new(
                span,
                "no `id` field: name the primary key field with `#[cqrs(pk = field)]`",
            ));
            None
        }),
    };
    let table = table.or(diesel_table);
    let revision = find("cqrs_revision");
    if !custom {
        if table.is_none() {
            errors.push(syn::Error::new(
                span,
                "missing table: add `#[cqrs(table = path::to::table)]`, or `#[cqrs(custom)]` \
                 for a model whose handlers write it themselves",
            ));
        }
        if revision.is_none() {
            errors.push(syn::Error::new(
                span,
                "a ReplicaModel needs a `cqrs_revision` field (an integer column) to keep the \
                 newest revision; add it, or use `#[cqrs(custom)]`",
            ));
        }
        if find("cqrs_updated").is_none() {
            errors.push(syn::Error::new(
                span,
                "a ReplicaModel needs a `cqrs_updated` field (a timestamp column); add it, or \
                 use `#[cqrs(custom)]`",
            ));
        }
    }
    errors.finish()?;
    let (Some(cqrs_id), Some(pk)) = (cqrs_id, pk) else {
        // Both pushed an error above when missing.
        return Err(syn::Error::new(span, "invalid ReplicaModel"));
    };
    Ok(Model {
        ident: input.ident.clone(),
        cqrs_id,
        table,
        fields,
        pk,
        revision,
        custom,
        meta,
        only_direct_syncs,
        hooks,
        max_retries,
        retry_delay_ms,
        retry_exponential,
        backends: backends.unwrap_or_else(|| BackendName::REPLICA.to_vec()),
    })
}

pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let model = parse(input)?;
    let ident = &model.ident;
    let cqrs_id = &model.cqrs_id;
    let meta = model.meta;
    let pk = &model.fields[model.pk];
    let pk_ident = &pk.ident;
    let pk_ty = &pk.ty;
    let only_direct = model.only_direct_syncs;
    let column_count = model.fields.len();
    let max_retries = match model.max_retries {
        None => quote! { ::core::option::Option::None },
        Some(None) => quote! { ::core::option::Option::Some(::core::option::Option::None) },
        Some(Some(n)) => {
            quote! { ::core::option::Option::Some(::core::option::Option::Some(#n)) }
        }
    };
    let retry_delay = match model.retry_delay_ms {
        None => quote! { ::core::option::Option::None },
        Some(ms) => {
            quote! { ::core::option::Option::Some(::core::time::Duration::from_millis(#ms)) }
        }
    };
    let retry_exponential = match model.retry_exponential {
        None => quote! { ::core::option::Option::None },
        Some(b) => quote! { ::core::option::Option::Some(#b) },
    };
    let decode_fields = model.fields.iter().map(|f| {
        let field = &f.ident;
        let ty = &f.ty;
        let key = &f.wire_name;
        let missing = if f.default {
            quote! { ::core::default::Default::default() }
        } else if is_option(ty) {
            quote! { ::core::option::Option::None }
        } else {
            let column = f.column.to_string();
            quote! {
                return ::core::result::Result::Err(::std::format!(
                    "instance_data has no `{}`, which the non-null column `{}` needs",
                    #key, #column
                ))
            }
        };
        quote! {
            #field: match data.get(#key) {
                ::core::option::Option::Some(value) => {
                    <#ty as __p::WireValue>::from_wire(value)
                        .map_err(|error| ::std::format!("instance_data.{}: {}", #key, error))?
                }
                ::core::option::Option::None => { #missing }
            },
        }
    });
    let revision = match model.revision {
        Some(i) => {
            let field = &model.fields[i].ident;
            quote! { ::core::option::Option::Some(::core::convert::From::from(self.#field)) }
        }
        None => quote! { ::core::option::Option::None },
    };
    let hooks = if model.hooks {
        quote! {}
    } else {
        quote! {
            #[automatically_derived]
            impl ::cqrs_diesel::ReplicaHooks for #ident {}
        }
    };
    let stores = if model.custom {
        Vec::new()
    } else {
        model
            .backends
            .iter()
            .map(|&backend| store(&model, backend))
            .collect()
    };
    Ok(quote! {
        const _: () = {
            use ::cqrs_diesel::__private as __p;
            #[allow(unused_imports)]
            use ::cqrs_diesel::__private::diesel as __d;

            #hooks

            #[automatically_derived]
            impl ::cqrs_diesel::ReplicaModel for #ident {
                const CQRS_ID: &'static str = #cqrs_id;
                const RECEIVES_META: bool = #meta;
                const COLUMN_COUNT: usize = #column_count;
                type Pk = #pk_ty;

                fn cqrs_policy() -> ::cqrs_diesel::runtime::ModelPolicy {
                    let mut policy = ::cqrs_diesel::runtime::ModelPolicy::default();
                    policy.max_retries = #max_retries;
                    policy.retry_delay = #retry_delay;
                    policy.retry_exponential = #retry_exponential;
                    policy.only_direct_syncs = #only_direct;
                    policy
                }

                fn cqrs_decode(
                    data: &__p::serde_json::Map<::std::string::String, __p::serde_json::Value>,
                ) -> ::core::result::Result<Self, ::std::string::String> {
                    ::core::result::Result::Ok(#ident { #(#decode_fields)* })
                }

                fn cqrs_decode_pk(
                    value: &__p::serde_json::Value,
                ) -> ::core::result::Result<#pk_ty, ::std::string::String> {
                    <#pk_ty as __p::WireValue>::from_wire(value)
                        .map_err(|error| ::std::format!("instance_pk: {}", error))
                }

                fn cqrs_encode_pk(key: &#pk_ty) -> __p::serde_json::Value {
                    <#pk_ty as __p::WireValue>::to_wire(key)
                }

                fn cqrs_key(&self) -> #pk_ty {
                    ::core::clone::Clone::clone(&self.#pk_ident)
                }

                fn cqrs_revision(&self) -> ::core::option::Option<i64> {
                    #revision
                }
            }

            #(#stores)*
        };
    })
}

/// The `ReplicaColumns` implementation for one backend, wrapped in cqrs-diesel's feature gate:
/// the names, binds and reads every replica statement is built from by generic code in
/// cqrs-diesel (which implements `ReplicaStore` from it).
fn store(model: &Model, backend: BackendName) -> TokenStream {
    let ident = &model.ident;
    let Some(table) = &model.table else {
        return TokenStream::new();
    };
    let Some(revision_index) = model.revision else {
        return TokenStream::new();
    };
    let fields = &model.fields;
    let pk = &fields[model.pk];
    let pk_col = &pk.column;
    let pk_ty = &pk.ty;
    let pk_index = model.pk;
    let rev_col = &fields[revision_index].column;
    let rev_ty = &fields[revision_index].ty;
    let columns = fields.iter().map(|f| {
        let col = &f.column;
        quote! { <#table::#col as __d::Column>::NAME }
    });
    let (gate, _, db_ty) = backend.tokens();
    let walkers = crate::columns::walk_methods(
        ident,
        table,
        &db_ty,
        fields.iter().map(|f| (&f.column, &f.ident, &f.ty)),
    );
    // Read by the columns' names, spanned at their types: a type Diesel cannot read from its
    // column is reported at that field.
    let read_key = quote_spanned! {pk_ty.span()=>
        __d::row::NamedRow::get::<__d::dsl::SqlTypeOf<#table::#pk_col>, #pk_ty>(
            row,
            <#table::#pk_col as __d::Column>::NAME,
        )?
    };
    let read_revision = quote_spanned! {rev_ty.span()=>
        __d::row::NamedRow::get::<__d::dsl::SqlTypeOf<#table::#rev_col>, #rev_ty>(
            row,
            <#table::#rev_col as __d::Column>::NAME,
        )?
    };
    quote! {
        #gate! {
            #[automatically_derived]
            impl __p::ReplicaColumns<#db_ty> for #ident {
                const COLUMNS: &'static [&'static str] = &[#(#columns),*];
                const PK_INDEX: usize = #pk_index;
                const REVISION_INDEX: usize = #revision_index;

                #walkers

                fn walk_key<'b>(
                    key: &'b #pk_ty,
                    mut out: __d::query_builder::AstPass<'_, 'b, #db_ty>,
                ) -> __d::QueryResult<()> {
                    out.push_bind_param::<__d::dsl::SqlTypeOf<#table::#pk_col>, #pk_ty>(key)
                }

                fn read_key_revision<'a>(
                    row: &impl __d::row::NamedRow<'a, #db_ty>,
                ) -> __d::deserialize::Result<(#pk_ty, i64)> {
                    let key = #read_key;
                    let revision = #read_revision;
                    ::core::result::Result::Ok((key, ::core::convert::From::from(revision)))
                }
            }
        }
    }
}

/// The impls emitted beside the errors of a struct that failed to parse (see cqrs-diesel's
/// `__cqrs_replica_fallback!`), when it is a plain struct they can be written for. The
/// attributes did not parse, so what the fallback needs is read from their raw tokens: whether
/// the user implements `ReplicaHooks` (the flag `hooks`) and the primary key's type (the field
/// named by `pk = field`, or `id`; `i64` when neither is found).
pub(crate) fn fallback(input: &DeriveInput) -> TokenStream {
    let (Data::Struct(data), true) = (&input.data, input.generics.params.is_empty()) else {
        return TokenStream::new();
    };
    let ident = &input.ident;
    let mut hooks = false;
    let mut pk_name: Option<Ident> = None;
    for attr in &input.attrs {
        let Ok(list) = attr.meta.require_list() else {
            continue;
        };
        if !attr.path().is_ident("cqrs") {
            continue;
        }
        let tokens: Vec<proc_macro2::TokenTree> = list.tokens.clone().into_iter().collect();
        for (i, token) in tokens.iter().enumerate() {
            let proc_macro2::TokenTree::Ident(name) = token else {
                continue;
            };
            let next = tokens.get(i + 1);
            let is_punct = |t: Option<&proc_macro2::TokenTree>, c: char| matches!(t, Some(proc_macro2::TokenTree::Punct(p)) if p.as_char() == c);
            // Only the flag: `hooks = ...` is an error of its own, with no impl of the user's.
            if name == "hooks" && (next.is_none() || is_punct(next, ',')) {
                hooks = true;
            }
            if name == "pk"
                && is_punct(next, '=')
                && let Some(proc_macro2::TokenTree::Ident(field)) = tokens.get(i + 2)
            {
                pk_name = Some(field.clone());
            }
        }
    }
    let pk_name = pk_name.unwrap_or_else(|| Ident::new("id", proc_macro2::Span::call_site()));
    let pk_ty = data
        .fields
        .iter()
        .find(|f| f.ident.as_ref() == Some(&pk_name))
        .map_or_else(
            || quote! { i64 },
            |f| {
                let ty = &f.ty;
                quote! { #ty }
            },
        );
    quote! { ::cqrs_diesel::__cqrs_replica_fallback!(#ident, pk = #pk_ty, hooks = #hooks); }
}
