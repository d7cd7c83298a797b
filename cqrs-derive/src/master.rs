//! Code generation for `#[derive(MasterModel)]`: the `MasterModel` constants and
//! serialization, and one `MasterStore` implementation (the model's statements) per backend.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
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
                        ::cqrs_diesel::MasterModel::cqrs_updated_wire(self),
                    );
                    #(#data_inserts)*
                    data
                }

                fn cqrs_updated_wire(&self) -> __p::serde_json::Value {
                    <#updated_ty as ::cqrs_diesel::UpdatedAt>::to_wire_utc(&self.#updated_ident)
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

/// The `MasterColumns` implementation for one backend, wrapped in cqrs-diesel's feature gate:
/// the names and binds generic code builds the model's statements from, and the glue that runs
/// them with the model's concrete row type.
fn store(model: &Model, backend: BackendName) -> TokenStream {
    let ident = &model.ident;
    let table = &model.table;
    let fields = &model.fields;
    let pk_field = &fields[model.pk];
    let (pk_ident, pk_ty, pk_col) = (&pk_field.ident, &pk_field.ty, &pk_field.column);
    let upd_ty = &fields[model.updated].ty;
    let upd_col = &fields[model.updated].column;
    let (pk_index, revision_index, updated_index) = (model.pk, model.revision, model.updated);
    let tracked_indexes = &model.tracked;
    let (gate, _, db_ty) = backend.tokens();

    let columns = fields.iter().map(|f| {
        let col = &f.column;
        quote! { <#table::#col as __d::Column>::NAME }
    });
    // Each field read by its column's name, spanned at its type: a type Diesel cannot read
    // from its column is reported at that field.
    let reads = fields.iter().map(|f| {
        let (col, field, ty) = (&f.column, &f.ident, &f.ty);
        quote_spanned! {ty.span()=>
            #field: __d::row::NamedRow::get::<__d::dsl::SqlTypeOf<#table::#col>, #ty>(
                row,
                <#table::#col as __d::Column>::NAME,
            )?,
        }
    });
    let walkers = crate::columns::walk_methods(
        ident,
        table,
        &db_ty,
        fields.iter().map(|f| (&f.column, &f.ident, &f.ty)),
    );
    quote! {
        #gate! {
            #[automatically_derived]
            impl __p::MasterColumns<#db_ty> for #ident {
                type Updated = #upd_ty;
                type Pk = #pk_ty;
                const COLUMNS: &'static [&'static str] = &[#(#columns),*];
                const PK_INDEX: usize = #pk_index;
                const REVISION_INDEX: usize = #revision_index;
                const UPDATED_INDEX: usize = #updated_index;
                const TRACKED_INDEXES: &'static [usize] = &[#(#tracked_indexes),*];

                #walkers

                fn walk_updated<'b>(
                    at: &'b #upd_ty,
                    mut out: __d::query_builder::AstPass<'_, 'b, #db_ty>,
                ) -> __d::QueryResult<()> {
                    out.push_bind_param::<__d::dsl::SqlTypeOf<#table::#upd_col>, #upd_ty>(at)
                }

                fn walk_key<'b>(
                    key: &'b #pk_ty,
                    mut out: __d::query_builder::AstPass<'_, 'b, #db_ty>,
                ) -> __d::QueryResult<()> {
                    out.push_bind_param::<__d::dsl::SqlTypeOf<#table::#pk_col>, #pk_ty>(key)
                }

                fn cqrs_key(&self) -> #pk_ty {
                    ::core::clone::Clone::clone(&self.#pk_ident)
                }

                fn from_row<'a>(
                    row: &impl __d::row::NamedRow<'a, #db_ty>,
                ) -> __d::deserialize::Result<Self> {
                    ::core::result::Result::Ok(#ident { #(#reads)* })
                }
            }
        }
    }
}
