//! What every stage leans on: child processes, the cache, failure kinds and
//! exit codes, provisioning the host.

pub mod cache;
pub mod evict;
pub mod failure;
pub mod proc;
pub mod provision;
pub mod rustc_cache;
pub mod sandbox;

/// The repository's own files (patches/, configs/, module/, the scripts).
pub fn repo_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}
