//! ktstr-macros: `#[ktstr_test]`.
//!
//! Filled by the frontend issue; it defines no macro yet.
