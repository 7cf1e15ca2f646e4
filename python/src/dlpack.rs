//! DLPack hand-over (`numpy.from_dlpack`, `torch.from_dlpack`): the
//! framework's tensor points into memory Rust owns, which lives until the
//! framework calls the deleter. A consumer that asks for DLPack 1.0
//! (`max_version`) gets a `dltensor_versioned` capsule, whose tensors are
//! writable (NumPy marks those of a legacy `dltensor` read-only); others get
//! the legacy one. The buffer protocol would do for host memory, but abi3
//! before CPython 3.11 has no buffer protocol for extension types; DLPack
//! also carries device memory.

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;
use std::sync::Arc;

use padic_burst::engine::gpu::DeviceBuffer;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// A decoded host buffer handed to Python: tensors are views into it. Rust
/// never reads or writes it after [`HostStorage::new`]; the frameworks may
/// write their (disjoint) tensors in place, as with a safetensors load.
pub struct HostStorage {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the storage is a plain heap allocation, owned uniquely here and
// freed once, in Drop; Rust holds no reference into it after `new`.
unsafe impl Send for HostStorage {}
// SAFETY: as above: `&HostStorage` only gives out the pointer.
unsafe impl Sync for HostStorage {}

impl HostStorage {
    pub fn new(data: Vec<u8>) -> Self {
        let len = data.len();
        let raw = Box::into_raw(data.into_boxed_slice()) as *mut u8;
        HostStorage {
            ptr: NonNull::new(raw).expect("Box::into_raw is never null"),
            len,
        }
    }
}

impl Drop for HostStorage {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
        // SAFETY: `ptr` and `len` came from `Box::into_raw` of a boxed slice
        // of exactly `len` bytes in `new`, and this is the only drop.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// DLPack's device types.
const KDL_CPU: i32 = 1;
const KDL_CUDA: i32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

/// DLPack 1.0's managed tensor (no flags: writable, not a copy).
#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

/// What keeps a tensor's memory alive (a [`HostStorage`] or a device buffer),
/// held only to be dropped.
type Owner = Arc<dyn std::any::Any + Send + Sync>;

/// A managed tensor (`T`, either kind) with what it points into; the
/// tensor's `manager_ctx` points here, its `shape` into `shape`.
#[repr(C)]
struct Managed<T> {
    tensor: T,
    shape: Vec<i64>,
    _owner: Owner,
}

unsafe extern "C" fn delete_legacy(m: *mut DLManagedTensor) {
    if !m.is_null() {
        // SAFETY: `manager_ctx` is the `Box<Managed<_>>` leaked in
        // `__dlpack__`, and DLPack calls the deleter once.
        drop(unsafe { Box::from_raw((*m).manager_ctx as *mut Managed<DLManagedTensor>) });
    }
}

unsafe extern "C" fn delete_versioned(m: *mut DLManagedTensorVersioned) {
    if !m.is_null() {
        // SAFETY: as in `delete_legacy`.
        drop(unsafe { Box::from_raw((*m).manager_ctx as *mut Managed<DLManagedTensorVersioned>) });
    }
}

const LEGACY_NAME: &CStr = c"dltensor";
const VERSIONED_NAME: &CStr = c"dltensor_versioned";

/// Frees a capsule nobody consumed (a consumer renames it `used_...` and
/// calls the deleter itself).
unsafe extern "C" fn drop_capsule(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule, holding the GIL; the valid
    // name says which struct the pointer is.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, LEGACY_NAME.as_ptr()) == 1 {
            delete_legacy(ffi::PyCapsule_GetPointer(capsule, LEGACY_NAME.as_ptr()) as _);
        } else if ffi::PyCapsule_IsValid(capsule, VERSIONED_NAME.as_ptr()) == 1 {
            delete_versioned(ffi::PyCapsule_GetPointer(capsule, VERSIONED_NAME.as_ptr()) as _);
        }
    }
}

/// Wraps the leaked `raw` in a capsule named `name`; frees it with `delete`
/// if Python cannot.
///
/// # Safety
/// `raw` must come from `Box::into_raw` of a `Managed<T>` that `delete` frees,
/// and `name` must say which kind `T` is.
unsafe fn capsule<T>(
    py: Python<'_>,
    raw: *mut Managed<T>,
    name: &'static CStr,
    delete: unsafe extern "C" fn(*mut T),
) -> PyResult<PyObject> {
    // SAFETY: the caller's contract; `tensor` is the first field of the
    // repr(C) `Managed`, so `raw` is also a pointer to it.
    unsafe {
        let capsule = ffi::PyCapsule_New(raw as *mut c_void, name.as_ptr(), Some(drop_capsule));
        if capsule.is_null() {
            delete(raw as *mut T);
            return Err(PyErr::fetch(py));
        }
        Ok(PyObject::from_owned_ptr(py, capsule))
    }
}

/// Whether the consumer takes DLPack 1.0 (`max_version=(1, ...)` or later).
fn wants_versioned(kwargs: Option<&Bound<'_, PyDict>>) -> bool {
    let Some(Ok(Some(v))) = kwargs.map(|k| k.get_item("max_version")) else {
        return false;
    };
    v.extract::<(u32, u32)>().is_ok_and(|(major, _)| major >= 1)
}

/// The width in bits of one value of safetensors dtype `dtype`.
fn value_bits(dtype: &str) -> Result<u64, String> {
    padic_burst::format::dtype_bits(dtype).ok_or_else(|| format!("unknown dtype {dtype}"))
}

/// The DLPack type of a safetensors dtype: as it is (`exact`) or as unsigned
/// integers of its width, for a framework that lacks the type to view. The
/// packed sub-byte dtypes (F4, F6_E2M3, F6_E3M2) travel as their bytes (`u8`,
/// see [`handover_shape`]): no framework takes them through DLPack.
fn dl_dtype(dtype: &str, exact: bool) -> Result<DLDataType, String> {
    let bits = value_bits(dtype)?;
    let code = match dtype {
        _ if !exact || bits < 8 => 1,
        "F64" | "F32" | "F16" => 2,
        "BF16" => 4,
        "BOOL" => 6,
        "C64" => 5,
        d if d.starts_with('I') => 0,
        // Unsigned, and the 8-bit floats (viewed by the caller).
        _ => 1,
    };
    Ok(DLDataType {
        code,
        bits: bits.max(8) as u8,
        lanes: 1,
    })
}

/// One tensor, ready for `numpy.from_dlpack` / `torch.from_dlpack`.
#[pyclass(frozen, module = "padic_burst._padic_burst")]
pub struct DlTensor {
    owner: Owner,
    /// The first byte (host address or `CUdeviceptr`).
    address: u64,
    device: DLDevice,
    dtype: DLDataType,
    shape: Vec<i64>,
}

/// The shape tensor `shape` of `dtype` is handed over with, checked against
/// its `len` bytes. A packed sub-byte dtype goes as bytes: its last dimension
/// counts bytes (F4 `[4, 8]` goes as `[4, 4]`, the shape safetensors gives
/// PyTorch's `float4_e2m1fn_x2`), or, when a row of that dimension does not
/// fill whole bytes, the tensor goes as one dimension of `len` bytes (the
/// caller refuses or reshapes it).
fn handover_shape(shape: &[u64], dtype: &str, len: usize) -> Result<Vec<i64>, String> {
    let bits = value_bits(dtype)?;
    let too_large = || format!("{dtype} tensor of shape {shape:?} is too large");
    let values = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(too_large)?;
    let total_bits = values.checked_mul(bits).ok_or_else(too_large)?;
    if total_bits % 8 != 0 {
        return Err(format!(
            "{dtype} tensor of shape {shape:?}: {values} values of {bits} bits do not fill whole bytes"
        ));
    }
    if total_bits / 8 != len as u64 {
        return Err(format!(
            "{dtype} tensor of shape {shape:?} needs {} bytes ({values} values of {bits} bits), found {len}",
            total_bits / 8
        ));
    }
    let mut out = shape.to_vec();
    if bits < 8 {
        match out.last_mut() {
            Some(last) if last.checked_mul(bits).is_some_and(|b| b % 8 == 0) => {
                *last = *last * bits / 8
            }
            _ => out = vec![len as u64],
        }
    }
    out.iter()
        .map(|&d| i64::try_from(d).map_err(|_| too_large()))
        .collect()
}

impl DlTensor {
    /// `len` bytes of `storage` from `offset`.
    pub fn host(
        storage: Arc<HostStorage>,
        offset: usize,
        len: usize,
        shape: &[u64],
        dtype: &str,
        exact: bool,
    ) -> Result<DlTensor, String> {
        if offset.checked_add(len).is_none_or(|end| end > storage.len) {
            return Err(format!(
                "bytes {offset}..+{len} lie outside the {}-byte data region",
                storage.len
            ));
        }
        let dt = dl_dtype(dtype, exact)?;
        Ok(DlTensor {
            address: storage.ptr.as_ptr() as u64 + offset as u64,
            owner: storage,
            device: DLDevice {
                device_type: KDL_CPU,
                device_id: 0,
            },
            shape: handover_shape(shape, dtype, len)?,
            dtype: dt,
        })
    }

    /// A tensor in device memory of CUDA device `id`.
    pub fn device(
        buf: Arc<dyn DeviceBuffer>,
        id: u32,
        shape: &[u64],
        dtype: &str,
    ) -> Result<DlTensor, String> {
        let dt = dl_dtype(dtype, true)?;
        Ok(DlTensor {
            address: buf.device_ptr(),
            shape: handover_shape(shape, dtype, buf.len())?,
            owner: Arc::new(buf),
            device: DLDevice {
                device_type: KDL_CUDA,
                device_id: id as i32,
            },
            dtype: dt,
        })
    }
}

#[pymethods]
impl DlTensor {
    /// A new DLPack capsule (each call its own; the memory is shared): DLPack
    /// 1.0 when the consumer passes `max_version=(1, _)`, else the legacy
    /// kind. `stream` and the rest are accepted: the device is synchronized
    /// when the tensor is made.
    #[pyo3(signature = (*_args, **kwargs))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyObject> {
        let tensor = DLTensor {
            data: self.address as *mut c_void,
            device: self.device,
            ndim: self.shape.len() as i32,
            dtype: self.dtype,
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        };
        let (shape, owner) = (self.shape.clone(), self.owner.clone());
        if wants_versioned(kwargs) {
            let raw = Box::into_raw(Box::new(Managed {
                tensor: DLManagedTensorVersioned {
                    version: DLPackVersion { major: 1, minor: 0 },
                    manager_ctx: std::ptr::null_mut(),
                    deleter: Some(delete_versioned),
                    flags: 0,
                    dl_tensor: tensor,
                },
                shape,
                _owner: owner,
            }));
            // SAFETY: `raw` is a valid leaked `Managed`, pointed at itself
            // and its own shape before it is handed over.
            unsafe {
                (*raw).tensor.dl_tensor.shape = (*raw).shape.as_mut_ptr();
                (*raw).tensor.manager_ctx = raw as *mut c_void;
                capsule(py, raw, VERSIONED_NAME, delete_versioned)
            }
        } else {
            let raw = Box::into_raw(Box::new(Managed {
                tensor: DLManagedTensor {
                    dl_tensor: tensor,
                    manager_ctx: std::ptr::null_mut(),
                    deleter: Some(delete_legacy),
                },
                shape,
                _owner: owner,
            }));
            // SAFETY: as above.
            unsafe {
                (*raw).tensor.dl_tensor.shape = (*raw).shape.as_mut_ptr();
                (*raw).tensor.manager_ctx = raw as *mut c_void;
                capsule(py, raw, LEGACY_NAME, delete_legacy)
            }
        }
    }

    /// `(device type, device id)`: (1, 0) for host memory, (2, N) for CUDA device N.
    fn __dlpack_device__(&self) -> (i32, i32) {
        (self.device.device_type, self.device.device_id)
    }
}
