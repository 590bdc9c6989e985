//! libtorch's CUDA backend, loaded when a process asks for a GPU.
//!
//! `libtorch_cuda.so` registers the CUDA backend from its static initialisers. Linked into every
//! binary, it would cost each process start about 145 ms and 130 MB of resident memory on a
//! machine without a GPU (measured on the PyPI wheel, `benches/README.md`), which is where a
//! node usually runs. So no binary links it; [`load_cuda_backend`] opens it with `dlopen` (found
//! through the binary's rpath or `LD_LIBRARY_PATH`, the directory of the libtorch it linked)
//! before the first CUDA call, and keeps it for the life of the process, as if linked.
//!
//! One of the two modules of this crate with `unsafe`: the `dlopen` call and reading its error.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The library that registers libtorch's CUDA backend.
pub const CUDA_BACKEND_LIBRARY: &str = "libtorch_cuda.so";

static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Loads libtorch's CUDA backend, once per process (later calls return the first outcome).
/// After it, `tch::Cuda::is_available()` says whether a GPU can be used; before it, a CUDA
/// device is "not linked" even on a machine with a GPU.
///
/// [`Error::CudaBackend`] when the library cannot be loaded: a CPU-only libtorch, or a libtorch
/// directory moved since the build.
pub fn load_cuda_backend() -> Result<()> {
    LOADED
        .get_or_init(|| {
            let name = c"libtorch_cuda.so";
            // SAFETY: `name` is NUL-terminated and outlives the call. The handle is never
            // closed, so the library's code and its registrations stay valid for the process's
            // life; its static initialisers run once, inside this call, under the loader's lock.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: `dlerror` returns null or a NUL-terminated string owned by the loader,
                // valid until the next `dl*` call on this thread; it is copied at once.
                let message = unsafe {
                    let message = libc::dlerror();
                    if message.is_null() {
                        "unknown dlopen error".to_owned()
                    } else {
                        CStr::from_ptr(message).to_string_lossy().into_owned()
                    }
                };
                return Err(message);
            }
            tracing::debug!(
                library = CUDA_BACKEND_LIBRARY,
                "libtorch's CUDA backend loaded"
            );
            Ok(())
        })
        .clone()
        .map_err(|reason| Error::CudaBackend { reason })
}
