//! Build script shared by every package that links libtorch.
//!
//! torch-sys (`links = "tch"`) publishes the directory of the libtorch it linked as
//! `DEP_TCH_LIBTORCH_LIB`. Embedding it as an rpath lets the binaries, tests and benches of the
//! package run in a fresh shell, and after `cargo install`, without `LD_LIBRARY_PATH`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
