//! The pipeline's steps, in the order a run takes them.

pub mod build;
pub mod compare;
pub mod config;
pub mod initramfs;
pub mod kbuild;
pub mod kselftest;
pub mod ktap;
pub mod mask;
pub mod patch;
pub mod qemu;
pub mod report;
pub mod source;
pub mod toolchain;
pub mod variant;
