//! What every stage leans on: child processes, the cache, failure kinds and
//! exit codes, provisioning the host.

pub mod cache;
pub mod evict;
pub mod failure;
pub mod proc;
pub mod provision;
pub mod rustc_cache;
pub mod sandbox;
