//! Build script shared by every package that links libtorch.
//!
//! torch-sys (`links = "tch"`) publishes the directory of the libtorch it linked as
//! `DEP_TCH_LIBTORCH_LIB`. Embedding it as an rpath lets the binaries, tests and benches of the
//! package run in a fresh shell, and after `cargo install`, without `LD_LIBRARY_PATH`.
//!
//! When that libtorch has CUDA (the PyPI wheel does), `libtorch_cuda.so` is linked with
//! `--no-as-needed`: nothing references its symbols directly, so the linker would otherwise drop
//! it, and `tch::Cuda::is_available()` would say false on a machine with a GPU. Without a GPU
//! the library still loads (the driver is opened lazily).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
