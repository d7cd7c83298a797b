//! What the `MasterColumns` and `ReplicaColumns` impls share: how a model names its table and
//! binds the value of one of its columns, for the statements cqrs-diesel builds.

use proc_macro2::{Ident, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

/// `walk_table` and `walk_value` for `fields` (column, field, type) of a model of `table` on the
/// backend `db_ty`. Each bind is spanned at its field's type, so a type Diesel cannot bind to
/// its column is reported at that field.
pub(crate) fn walk_methods<'a>(
    ident: &Ident,
    table: &syn::Path,
    db_ty: &TokenStream,
    fields: impl Iterator<Item = (&'a Ident, &'a Ident, &'a syn::Type)>,
) -> TokenStream {
    let ident_str = ident.to_string();
    let value_arms = fields.enumerate().map(|(i, (col, field, ty))| {
        quote_spanned! {ty.span()=>
            #i => out.push_bind_param::<__d::dsl::SqlTypeOf<#table::#col>, #ty>(&self.#field),
        }
    });
    quote! {
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
    }
}
