//! Compiles the gRPC contract with a protoc that ships inside a crate, so a
//! machine with cargo alone can build the service; and tells the tests
//! whether PostgreSQL's server is installed (`cfg(postgres_installed)`),
//! so the tests that need it are reported ignored where it is not.

use std::path::Path;

/// Where Debian's packages put each PostgreSQL version's server binaries.
const POSTGRES_LIB: &str = "/usr/lib/postgresql";
/// Changes whenever a Debian package is installed or removed.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rustc-check-cfg=cfg(postgres_installed)");
    println!("cargo::rerun-if-changed=build.rs");
    // A directory is watched as a whole: any change to the contract recompiles it.
    println!("cargo::rerun-if-changed=proto");
    // Only paths that exist: a missing one would rerun this every build.
    for watched in [POSTGRES_LIB, DPKG_STATUS] {
        if Path::new(watched).exists() {
            println!("cargo::rerun-if-changed={watched}");
        }
    }
    if postgres_installed() {
        println!("cargo::rustc-cfg=postgres_installed");
    }

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("imageledger_descriptor.bin"))
        // Written by hand so a page is encoded straight from the state
        // (src/grpc/page.rs); same wire format.
        .extern_path(
            ".imageledger.v1.DescribeImagesResponse",
            "crate::grpc::page::DescribeImagesResponse",
        )
        .compile_protos(
            &[
                "proto/imageledger/v1/ledger.proto",
                "proto/imageledger/v1/audit.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}

/// Whether a PostgreSQL version with `initdb` and `pg_ctl` is installed:
/// what the tests' throwaway clusters start from.
fn postgres_installed() -> bool {
    std::fs::read_dir(POSTGRES_LIB).is_ok_and(|versions| {
        versions.flatten().any(|version| {
            let bin = version.path().join("bin");
            bin.join("initdb").exists() && bin.join("pg_ctl").exists()
        })
    })
}
