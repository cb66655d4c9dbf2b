//! One module per `cargo xtask` command; each implements `run` on its flags
//! (declared in `crate::flags`).

pub mod bench;
pub mod bisect;
pub mod clean;
pub mod doctor;
pub mod matrix;
pub mod mutants;
pub mod probe;
pub mod report;
pub mod setup;
pub mod test;
pub mod verify;
