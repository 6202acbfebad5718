//! Compile-time behaviour of `#[requires_approval]`: what expands, and the errors users see.
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p approvals-macros --test ui`
//! and review them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
