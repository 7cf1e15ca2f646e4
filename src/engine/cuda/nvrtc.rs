//! Compiling the kernels: finding libcuda and libnvrtc before cudarc does
//! (it panics on a missing library), and NVRTC to a CUBIN for the device.

/// The kernels' source, compiled at run time.
pub const KERNELS: &str = include_str!("../../../kernels/decode.cu");

/// Why CUDA cannot run here, or `Ok` when libcuda and libnvrtc both load.
///
/// Looked for once a process (the loader's search path is fixed at its
/// start): each look tries some forty names in four folders, 0.8 ms that a
/// Python `load_file`, which makes a pipeline each call, paid every time.
pub fn libraries_present() -> Result<(), String> {
    static DRIVER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: this only tries to dlopen the library by name.
    if !*DRIVER.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() }) {
        return Err("no CUDA driver found: libcuda.so.1 could not be loaded (is an NVIDIA driver installed?)".into());
    }
    nvrtc_present()
}

/// Why NVRTC cannot run here, or `Ok` (looked for once a process).
pub fn nvrtc_present() -> Result<(), String> {
    static NVRTC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: this only tries to dlopen the library by name.
    if !*NVRTC.get_or_init(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }) {
        return Err("no NVRTC found: libnvrtc.so (CUDA 12 or 13) could not be loaded; install the CUDA toolkit or the nvidia-cuda-nvrtc wheel and add its lib folder to LD_LIBRARY_PATH".into());
    }
    Ok(())
}

/// Compiles the kernels for `arch`, or gives the NVRTC log. `sm_90` and such
/// give a CUBIN, machine code for that GPU, which the engine loads: PTX from
/// an NVRTC newer than the driver (a CUDA 13.5 wheel on a 13.0 driver) is
/// refused with `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`, a CUBIN is not.
/// `compute_90` and such give PTX.
pub fn compile(arch: &str) -> Result<cudarc::nvrtc::Ptx, String> {
    use cudarc::nvrtc::{result, sys};
    use std::ffi::{c_char, CStr};
    nvrtc_present()?;
    let opts = [format!("--gpu-architecture={arch}"), "--std=c++14".into()];
    let src = std::ffi::CString::new(KERNELS).map_err(|e| format!("kernels/decode.cu: {e}"))?;
    let prog = result::create_program(&src, Some(c"decode.cu"))
        .map_err(|e| format!("NVRTC {}: creating the program: {e}", nvrtc_version()))?;
    let fail = |what: &str, e: result::NvrtcError| {
        format!(
            "NVRTC {} could not {what} kernels/decode.cu for {arch}: {e}",
            nvrtc_version()
        )
    };
    // SAFETY: `prog` is live until the destroy below, and `src` outlives it;
    // every buffer handed to NVRTC has the size NVRTC gave for it.
    let built = unsafe {
        (|| {
            if result::compile_program(prog, &opts).is_err() {
                let log = result::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(format!(
                    "NVRTC {} could not compile kernels/decode.cu for {arch}:\n{log}",
                    nvrtc_version()
                ));
            }
            if !arch.starts_with("sm_") {
                let ptx = result::get_ptx(prog).map_err(|e| fail("get the PTX of", e))?;
                let text = CStr::from_ptr(ptx.as_ptr()).to_string_lossy().into_owned();
                return Ok(cudarc::nvrtc::Ptx::from_src(text));
            }
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| fail("size the CUBIN of", e))?;
            let mut cubin = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| fail("get the CUBIN of", e))?;
            Ok(cudarc::nvrtc::Ptx::from_binary(cubin))
        })()
    };
    // SAFETY: `prog` came from `create_program` and is destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    built
}

/// NVRTC's version, `major.minor` (or `?` when it will not say).
pub fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two plain out-parameters.
    match unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }.result() {
        Ok(()) => format!("{major}.{minor}"),
        Err(_) => "?".into(),
    }
}

/// The CUDA version the driver supports, `major.minor` (or `?`).
pub(super) fn driver_version() -> String {
    let mut v = 0;
    // SAFETY: a plain out-parameter.
    match unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result() {
        Ok(()) => format!("{}.{}", v / 1000, v % 1000 / 10),
        Err(_) => "?".into(),
    }
}
