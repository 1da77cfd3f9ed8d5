//! Builds the eBPF object with aya-build, on the pinned toolchain, and the SPIFFE
//! Workload API's gRPC service from proto/workload.proto.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// protox parses the .proto in Rust (well-known types included), so the build needs
/// no protoc binary of some version on the machine.
fn workload_api() -> anyhow::Result<()> {
    println!("cargo::rerun-if-changed=proto/workload.proto");
    let fds = protox::compile(["workload.proto"], ["proto"]).context("proto/workload.proto")?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(fds)
        .context("generating the Workload API service")
}

fn main() -> anyhow::Result<()> {
    workload_api()?;
    // AYA_BUILD_SKIP=1 builds the library without the eBPF object (for the fuzz targets,
    // which exercise userspace parsing only); loading programs then fails with an error.
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1") {
        let out = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?;
        std::fs::write(std::path::Path::new(&out).join("zt-agent"), b"")?;
        println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "zt-agent-ebpf")
        .ok_or_else(|| anyhow!("zt-agent-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir: manifest_path
            .parent()
            .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
            .as_str(),
        ..Default::default()
    };
    // The eBPF target needs `-Z build-std=core`, which the pinned stable toolchain
    // allows only with RUSTC_BOOTSTRAP. Scoped to the nested build.
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([ebpf_package], Toolchain::Custom("1.98.0"))
}
