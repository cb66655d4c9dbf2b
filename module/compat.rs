// SPDX-License-Identifier: GPL-2.0

//! What differs between the two generations of the `kernel` crate the module
//! builds against, in one place: Linux 6.12's, and Linux 6.1's (rustc 1.62
//! era: `module!`, printing and an `Error` that can only say ENOMEM). The
//! module's Makefile sets `--cfg patverify_kernel_6_1` on a 6.1 tree. Both
//! sides export the same names; the rest of the module is one source,
//! written in the Rust both compilers accept (no let-else, no const
//! `mem::zeroed`), and reaches what differs in C through helpers.c.

pub(crate) use imp::*;

#[cfg(not(patverify_kernel_6_1))]
mod imp {
    use kernel::alloc::{flags::GFP_KERNEL, KVec};
    pub(crate) use kernel::error::code::{EINVAL, ENODEV, ENOENT, ENOMEM};
    pub(crate) use kernel::error::{from_err_ptr, to_result, Error, Result};
    pub(crate) use kernel::ffi::{c_char, c_int, c_ulong, c_void};

    /// A growable byte buffer (the KTAP report).
    pub(crate) struct Bytes(KVec<u8>);

    impl Bytes {
        pub(crate) fn new() -> Self {
            Bytes(KVec::new())
        }

        pub(crate) fn push(&mut self, bytes: &[u8]) -> Result {
            self.0
                .extend_from_slice(bytes, GFP_KERNEL)
                .map_err(|_| ENOMEM)
        }

        pub(crate) fn as_slice(&self) -> &[u8] {
            &self.0
        }
    }

    /// The error `Module::init` returns.
    pub(crate) fn init_error(err: Error) -> kernel::error::Error {
        err
    }

    /// `.huge_fault`'s second argument: the order of the entry (6.12).
    pub(crate) type HugeFaultSize = kernel::ffi::c_uint;
}

#[cfg(patverify_kernel_6_1)]
mod imp {
    use alloc::vec::Vec;
    pub(crate) use core::ffi::{c_char, c_int, c_ulong, c_void};
    use kernel::bindings;

    /// A kernel error code (negative errno). 6.1's `kernel::error::Error`
    /// cannot be made from a code, so the module carries its own.
    ///
    /// # Invariants
    ///
    /// The value is a negative errno, `-MAX_ERRNO..0`.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) struct Error(c_int);

    pub(crate) type Result<T = ()> = core::result::Result<T, Error>;

    const MAX_ERRNO: isize = 4095;

    pub(crate) const EINVAL: Error = Error(-(bindings::EINVAL as c_int));
    pub(crate) const ENODEV: Error = Error(-(bindings::ENODEV as c_int));
    pub(crate) const ENOENT: Error = Error(-(bindings::ENOENT as c_int));
    pub(crate) const ENOMEM: Error = Error(-(bindings::ENOMEM as c_int));

    impl Error {
        pub(crate) fn to_errno(self) -> c_int {
            self.0
        }
    }

    /// A C return value: negative is an error.
    pub(crate) fn to_result(ret: c_int) -> Result {
        if ret < 0 && ret as isize >= -MAX_ERRNO {
            // INVARIANT: checked just above.
            Err(Error(ret))
        } else {
            Ok(())
        }
    }

    /// A C pointer that may carry an error code (`IS_ERR()`).
    pub(crate) fn from_err_ptr<T>(ptr: *mut T) -> Result<*mut T> {
        let value = ptr as isize;
        if (-MAX_ERRNO..0).contains(&value) {
            // INVARIANT: checked just above.
            Err(Error(value as c_int))
        } else {
            Ok(ptr)
        }
    }

    /// A growable byte buffer (the KTAP report): 6.1's `alloc` has only
    /// fallible `try_reserve` and `try_push`.
    pub(crate) struct Bytes(Vec<u8>);

    impl Bytes {
        pub(crate) fn new() -> Self {
            Bytes(Vec::new())
        }

        pub(crate) fn push(&mut self, bytes: &[u8]) -> Result {
            self.0.try_reserve(bytes.len()).map_err(|_| ENOMEM)?;
            for byte in bytes {
                self.0.try_push(*byte).map_err(|_| ENOMEM)?;
            }
            Ok(())
        }

        pub(crate) fn as_slice(&self) -> &[u8] {
            &self.0
        }
    }

    /// The error `Module::init` returns: 6.1's `Error` can only be ENOMEM,
    /// so the real code goes to the log first.
    pub(crate) fn init_error(err: Error) -> kernel::error::Error {
        kernel::pr_info!("init failed with errno {}\n", err.0);
        kernel::error::code::ENOMEM
    }

    /// `.huge_fault`'s second argument: `enum page_entry_size` (6.1).
    pub(crate) type HugeFaultSize = bindings::page_entry_size;
}
