//! The C ABI: the only module that knows raw pointers. Each `ns_*` function checks its pointers,
//! runs its body inside [`ffi_panic_boundary!`], and returns an `ns_result` code (or a typed
//! fallback), setting `ns_last_error()` on every failure.
//!
//! The functions are plain `extern "C"` (not `unsafe`) because their C callers cannot see
//! Rust's `unsafe`; what makes them sound is the NULL checks and the pointer rules stated in
//! each doc comment (and so in the header).
#![allow(non_camel_case_types, clippy::not_unsafe_ptr_arg_deref)]

#[macro_use]
mod boundary;
pub mod client;
pub mod conn;
pub mod log;
pub mod options;
pub mod owned;
pub mod peer;
pub mod result;
pub mod server;
pub mod stats;
pub mod tls;
