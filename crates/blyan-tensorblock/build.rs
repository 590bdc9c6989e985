//! Build script of `blyan-tensorblock`.
//!
//! With the `tch` feature (the default) it does two things:
//! - embeds libtorch's directory as an rpath, as every libtorch package's build script does, so
//!   tests, benches and binaries run without `LD_LIBRARY_PATH`;
//! - compiles `src/shim/from_blob.cpp`, a few lines of C++ over `at::from_blob` that attach a
//!   deleter to the tensor's storage (tch 0.24's `Tensor::from_blob` has none).
//!
//! torch-sys (`links = "tch"`) publishes the libtorch it linked as `DEP_TCH_LIBTORCH_LIB`
//! (`<torch dir>/lib`); the headers sit beside it in `<torch dir>/include`. The C++ ABI flag must
//! match the one libtorch was built with: torch-sys reads `LIBTORCH_CXX11_ABI`, default 1, and
//! the PyPI wheels of torch 2.x are built with the new ABI (`torch._C._GLIBCXX_USE_CXX11_ABI`).
//!
//! On docs.rs (`DOCS_RS` set; torch-sys built with `doc-only`, so there is no libtorch) it does
//! nothing: rustdoc neither compiles the shim nor links.
use std::path::PathBuf;

const SHIM_SOURCE: &str = "src/shim/from_blob.cpp";

fn main() {
    println!("cargo:rerun-if-changed={SHIM_SOURCE}");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        // The pure format layer: nothing to link.
        return;
    }
    if std::env::var_os("DOCS_RS").is_some() {
        // Documentation only: no libtorch headers to compile the shim against, nothing linked.
        return;
    }
    let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        panic!(
            "DEP_TCH_LIBTORCH_LIB is not set: torch-sys must be a direct dependency of \
             blyan-tensorblock for the libtorch headers to be found"
        );
    };
    let lib_dir = PathBuf::from(lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    build_shim(&lib_dir);
}

#[cfg(feature = "tch")]
fn build_shim(lib_dir: &std::path::Path) {
    let Some(torch_dir) = lib_dir.parent() else {
        panic!(
            "DEP_TCH_LIBTORCH_LIB={} has no parent directory",
            lib_dir.display()
        );
    };
    let include = torch_dir.join("include");
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // libtorch's headers are noisy under -Wall; the shim itself is a handful of lines.
        .warnings(false)
        .file(SHIM_SOURCE)
        .compile("blyan_tensorblock_shim");
}

#[cfg(not(feature = "tch"))]
fn build_shim(_lib_dir: &std::path::Path) {
    unreachable!("CARGO_FEATURE_TCH is set only when the tch feature is on");
}
