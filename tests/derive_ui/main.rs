//! Compile-time checks of `#[derive(MasterModel)]`: misuse is a compile error at the
//! attribute (or struct) that causes it, with a message that says what to write instead.

#[test]
fn derive_errors_point_at_the_mistake() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("derive_ui/fail/*.rs");
    cases.pass("derive_ui/pass/*.rs");
}
