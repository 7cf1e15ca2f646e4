// Compiles the CUDA kernels' source as C++ over src/cuda_host.h (g++ or
// clang++, whichever `cc` finds; no CUDA needed).
fn main() {
    for f in [
        "../decode.cu",
        "src/cuda_host.h",
        "src/host.cpp",
        "src/probe.cu",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include("..")
        .include("src")
        .file("src/host.cpp")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wno-unused-parameter")
        // Nothing here needs the C++ runtime library, so no binary that
        // links this crate needs libstdc++ where it runs.
        .flag("-fno-exceptions")
        .flag("-fno-rtti")
        .cpp_link_stdlib(None)
        .opt_level(2)
        .compile("padic_kernels_host");
}
