//! Generates the C header with cbindgen into OUT_DIR, then refreshes the committed
//! `include/netsock.h` from it, except in a packaged build (`cargo package`/`publish` forbid
//! writing into the source tree; there the header in OUT_DIR is the only one).

use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let version = |part: &str| std::env::var(format!("CARGO_PKG_VERSION_{part}")).unwrap();
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(format!(
        "\n/* The version of netsock this header belongs to; ns_version() tells the library's. */\n\
         #define NS_VERSION_MAJOR {}\n#define NS_VERSION_MINOR {}\n#define NS_VERSION_PATCH {}\n",
        version("MAJOR"),
        version("MINOR"),
        version("PATCH")
    ));
    let generated = out_dir.join("netsock.h");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write_to_file(&generated);

    // The shared library's soname carries the major version, as C libraries' do: programs
    // linked against 0.x load libnetsock.so.0, and an incompatible 1.0 can be installed beside it.
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,-soname,libnetsock.so.{}",
        version("MAJOR")
    );

    let packaged = crate_dir.join(".cargo_vcs_info.json").exists();
    if !packaged {
        refresh(&generated, &crate_dir.join("include/netsock.h"));
    }
}

/// Copies the header only when it changed, so its timestamp tells `make` the truth.
fn refresh(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap();
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, new).unwrap();
    }
}
