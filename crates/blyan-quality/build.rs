//! Embeds libtorch's directory as an rpath, so this package's binaries, tests and benches run in
//! a fresh shell, and after `cargo install`, without `LD_LIBRARY_PATH`.
//!
//! torch-sys (`links = "tch"`) publishes the directory of the libtorch it linked as
//! `DEP_TCH_LIBTORCH_LIB` to the build scripts of the packages that depend on it directly. A link
//! argument applies only to the package whose build script prints it, so every package that
//! links libtorch has this script. Without that variable (docs.rs builds torch-sys with
//! `doc-only`) it prints nothing.
//!
//! `libtorch_cuda.so` is deliberately not linked (nothing references its symbols, so the linker
//! drops it): loading it costs every process start about 145 ms on a machine without a GPU.
//! A process that wants a GPU loads it through that rpath with
//! `blyan_tensorblock::load_cuda_backend`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
