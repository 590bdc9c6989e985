//! The read-only contract of zero-copy tensors, in a type.
//!
//! A tensor that borrows a payload's bytes is an ordinary `tch::Tensor`: libtorch offers no
//! read-only tensor, and a safe in-place op (`add_`, `copy_`) writes through its data pointer.
//! Over bytes Rust treats as immutable that would be undefined behaviour. So the owners a safe
//! API may lend bytes from are exactly those whose bytes no write can silently change: read-only
//! file mappings, where such a write faults. The marker lives here, below both the chain (whose
//! payload handle implements it) and the tensor format (which requires it), because neither
//! crate may depend on the other.
//!
//! This is the one module of this crate with `unsafe`: the trait's declaration and the
//! implementations that carry its proof.
#![allow(unsafe_code)]

/// Bytes that stay put and are never written while their owner lives.
///
/// # Safety
/// An implementor promises that the slice [`AsRef::as_ref`] returns
/// 1. has the same address, length and contents for as long as the owner (or any clone that
///    shares it) is alive, wherever the owner is moved;
/// 2. is written by nobody while the owner lives; and
/// 3. lies in memory mapped read-only, so that a write through a raw pointer derived from it
///    (a tensor's in-place op) faults instead of changing bytes other code reads as immutable.
///
/// Heap memory never meets (3): wrap it with [`AssumeImmutable::new`], whose caller takes the
/// promise over.
pub unsafe trait ImmutableBytes: AsRef<[u8]> + Send + Sync + 'static {}

// SAFETY: `memmap2::Mmap` is a `PROT_READ` mapping (a write faults), unmapped only on drop, and
// its address never changes. That nobody changes the file behind it is the promise its own
// `unsafe fn Mmap::map` already required of whoever created it.
#[cfg(feature = "memmap2")]
unsafe impl ImmutableBytes for memmap2::Mmap {}

/// An owner whose bytes the creator promises never to write, nor let a tensor over them write:
/// the one way heap bytes (a `Vec<u8>` read from a file or a socket) reach an API that lends
/// them without a copy.
#[derive(Debug, Clone)]
pub struct AssumeImmutable<T>(T);

impl<T: AsRef<[u8]> + Send + Sync + 'static> AssumeImmutable<T> {
    /// Wraps `owner`.
    ///
    /// # Safety
    /// The bytes `owner.as_ref()` returns keep their address and contents while the wrapper (or
    /// any clone of it) lives, and nothing writes them: in particular no in-place operation is
    /// ever applied to a tensor that views them. Heap memory does not fault on such a write; it
    /// is silently changed, which is undefined behaviour for bytes Rust treats as immutable.
    pub unsafe fn new(owner: T) -> Self {
        Self(owner)
    }

    /// The owner back.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for AssumeImmutable<T> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

// SAFETY: every clause is the promise `AssumeImmutable::new`'s caller made; `T: 'static + Send +
// Sync` as the trait requires.
unsafe impl<T: AsRef<[u8]> + Send + Sync + 'static> ImmutableBytes for AssumeImmutable<T> {}
