//! Compile-time behaviour of `#[ktstr_test]`: valid uses compile, and each
//! kind of mistake is a compile error whose message names the fix
//! (trybuild UI tests; expected messages in `tests/ui/*.stderr`).
//!
//! These compile small crates against `ktstr` and need no VM.

#[test]
fn ktstr_test_attribute_diagnostics() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/fail_*.rs");
}
