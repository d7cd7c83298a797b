//! Compile-time checks of the derives and the public surface: misuse is a compile error at the
//! attribute (or struct) that causes it, with a message that says what to write instead;
//! correct models compile; the library's own statements are not methods an application can
//! call on its connection.

mod pass;

#[test]
fn derive_errors_point_at_the_mistake() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("derive_ui/fail/*.rs");
}
