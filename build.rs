//! Compiles the gRPC contract with a protoc that ships inside a crate, so a
//! machine with cargo alone can build the service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
