//! Snapshots of what the derives generate, one model per backend, so a change of the generated
//! code shows in review. After a deliberate change: `cargo insta review -p cqrs-derive` (or
//! `INSTA_UPDATE=always cargo test -p cqrs-derive` and read the diff).

use syn::DeriveInput;

fn pretty(tokens: proc_macro2::TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    }
}

fn master(input: DeriveInput) -> String {
    let model = crate::attrs::parse_model(&input).expect("a valid model");
    pretty(crate::master::expand(&model))
}

fn replica(input: DeriveInput) -> String {
    pretty(crate::replica::derive(&input).expect("a valid model"))
}

#[test]
fn master_on_postgres() {
    insta::assert_snapshot!(master(syn::parse_quote! {
        #[cqrs(id = "author", table = author, tracked(name), backends(postgres))]
        struct Author {
            id: i32,
            name: String,
            #[cqrs(rename = "mail")]
            email: Option<String>,
            cqrs_revision: i32,
            cqrs_updated: chrono::DateTime<chrono::Utc>,
        }
    }));
}

#[test]
fn master_on_mysql() {
    insta::assert_snapshot!(master(syn::parse_quote! {
        #[cqrs(id = "author", table = author, backends(mysql))]
        struct Author {
            id: i64,
            name: String,
            #[cqrs(utc)]
            joined_at: chrono::NaiveDateTime,
            cqrs_revision: i32,
            cqrs_updated: chrono::NaiveDateTime,
        }
    }));
}

#[test]
fn master_on_sqlite() {
    insta::assert_snapshot!(master(syn::parse_quote! {
        #[cqrs(id = "author", table = author, produce = false, hooks, backends(sqlite))]
        struct Author {
            id: i64,
            name: String,
            #[cqrs(skip)]
            secret: String,
            cqrs_revision: i32,
            cqrs_updated: chrono::DateTime<chrono::Utc>,
        }
    }));
}

#[test]
fn replica_on_postgres() {
    insta::assert_snapshot!(replica(syn::parse_quote! {
        #[cqrs(id = "author", table = author_copy, max_retries = 3, backends(postgres))]
        struct AuthorCopy {
            id: i32,
            #[cqrs(from = "full_name")]
            name: String,
            #[cqrs(default)]
            score: f64,
            cqrs_revision: i32,
            cqrs_updated: chrono::DateTime<chrono::Utc>,
        }
    }));
}

#[test]
fn fallback_of_a_failed_master() {
    let input: DeriveInput = syn::parse_quote! {
        #[cqrs(id = "author", colour = "red", hooks)]
        struct Author {
            id: i32,
        }
    };
    assert!(crate::attrs::parse_model(&input).is_err());
    insta::assert_snapshot!(pretty(crate::master::fallback(&input)));
}

#[test]
fn fallback_of_a_failed_replica() {
    let input: DeriveInput = syn::parse_quote! {
        #[cqrs(id = "author", table = author, colour = "red", pk = code, hooks)]
        struct AuthorCopy {
            code: String,
            cqrs_revision: i32,
            cqrs_updated: chrono::DateTime<chrono::Utc>,
        }
    };
    assert!(crate::replica::derive(&input).is_err());
    insta::assert_snapshot!(pretty(crate::replica::fallback(&input)));
}
