//! Records the commit the binary is built from, so that every run directory
//! names it even where the binary runs without the repository; with the
//! `tch` feature, compiles the ATen calls tch does not wrap
//! (`csrc/aten.cpp`) against the libtorch that torch-sys links.

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
        .map_or("", |_| "+changes");
    println!("cargo:rustc-env=COMBINER_BUILD_COMMIT={commit}{dirty}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    println!("cargo:rerun-if-changed=../../.git/index");
    #[cfg(feature = "tch")]
    aten();
}

#[cfg(feature = "tch")]
fn aten() {
    use std::path::PathBuf;
    println!("cargo:rerun-if-changed=csrc/aten.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // torch-sys (`links = "tch"`) passes its libtorch lib dir to dependents
    let root = std::env::var_os("DEP_TCH_LIBTORCH_LIB")
        .map(|lib| PathBuf::from(lib).join(".."))
        .or_else(|| std::env::var_os("LIBTORCH").map(PathBuf::from))
        .expect("the tch feature needs libtorch: set LIBTORCH (see ../shared/gpu/README.md)");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/aten.cpp")
        .compile("combiner_aten");
}
