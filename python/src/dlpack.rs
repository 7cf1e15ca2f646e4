//! DLPack hand-over (the legacy, unversioned `dltensor` capsule that
//! `numpy.from_dlpack` and `torch.from_dlpack` both take): the framework's
//! tensor points into memory Rust owns, which lives until the framework calls
//! the deleter. The buffer protocol would do for host memory, but abi3 before
//! CPython 3.11 has no buffer protocol for extension types; DLPack also
//! carries device memory.

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

/// What keeps a tensor's memory alive (a [`HostStorage`] or a device buffer),
/// held only to be dropped.
type Owner = Arc<dyn std::any::Any + Send + Sync>;

/// A DLManagedTensor with what it points into; `manager_ctx` points here.
#[repr(C)]
struct Managed {
    tensor: DLManagedTensor,
    shape: Vec<i64>,
    _owner: Owner,
}

unsafe extern "C" fn delete_managed(m: *mut DLManagedTensor) {
    if m.is_null() {
        return;
    }
    // SAFETY: `manager_ctx` is the `Box<Managed>` leaked in `__dlpack__`, and
    // DLPack calls the deleter once.
    drop(unsafe { Box::from_raw((*m).manager_ctx as *mut Managed) });
}

const CAPSULE_NAME: &CStr = c"dltensor";

/// Frees a capsule nobody consumed (a consumer renames it `used_dltensor`
/// and calls the deleter itself).
unsafe extern "C" fn drop_capsule(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule, holding the GIL.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, CAPSULE_NAME.as_ptr()) == 1 {
            let m =
                ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME.as_ptr()) as *mut DLManagedTensor;
            if let Some(deleter) = (*m).deleter {
                deleter(m);
            }
        }
    }
}

/// The DLPack type of a safetensors dtype: as it is (`exact`) or as unsigned
/// integers of its width, for a framework that lacks the type to view.
fn dl_dtype(dtype: &str, exact: bool) -> Result<DLDataType, String> {
    let bits = padic_burst::format::dtype_bits(dtype)
        .ok_or_else(|| format!("unknown dtype {dtype}"))? as u8;
    let code = match dtype {
        _ if !exact => 1,
        "F64" | "F32" | "F16" => 2,
        "BF16" => 4,
        "BOOL" => 6,
        d if d.starts_with('I') => 0,
        // Unsigned, and the 8-bit floats (viewed by the caller).
        _ => 1,
    };
    Ok(DLDataType {
        code,
        bits,
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

fn checked_shape(shape: &[u64], dtype: DLDataType, len: usize) -> Result<Vec<i64>, String> {
    let elements = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let expected = elements.checked_mul(dtype.bits as u64 / 8);
    if expected != Some(len as u64) {
        return Err(format!(
            "shape {shape:?} of {}-bit values needs {expected:?} bytes, found {len}",
            dtype.bits
        ));
    }
    shape
        .iter()
        .map(|&d| i64::try_from(d).map_err(|_| format!("dimension {d} too large")))
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
            shape: checked_shape(shape, dt, len)?,
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
            shape: checked_shape(shape, dt, buf.len())?,
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
    /// A new `dltensor` capsule (each call its own; the memory is shared).
    /// The arguments newer consumers pass (`stream`, `max_version`, ...) are
    /// accepted; the device is synchronized when the tensor is made.
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyObject> {
        let mut managed = Box::new(Managed {
            tensor: DLManagedTensor {
                dl_tensor: DLTensor {
                    data: self.address as *mut c_void,
                    device: self.device,
                    ndim: self.shape.len() as i32,
                    dtype: self.dtype,
                    shape: std::ptr::null_mut(),
                    strides: std::ptr::null_mut(),
                    byte_offset: 0,
                },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_managed),
            },
            shape: self.shape.clone(),
            _owner: self.owner.clone(),
        });
        managed.tensor.dl_tensor.shape = managed.shape.as_mut_ptr();
        let raw = Box::into_raw(managed);
        // SAFETY: `raw` is a valid, leaked `Managed`; the capsule or its
        // consumer frees it through `delete_managed`, once.
        unsafe {
            (*raw).tensor.manager_ctx = raw as *mut c_void;
            let capsule = ffi::PyCapsule_New(
                raw as *mut c_void,
                CAPSULE_NAME.as_ptr(),
                Some(drop_capsule),
            );
            if capsule.is_null() {
                delete_managed(raw as *mut DLManagedTensor);
                return Err(PyErr::fetch(py));
            }
            Ok(PyObject::from_owned_ptr(py, capsule))
        }
    }

    /// `(device type, device id)`: (1, 0) for host memory, (2, N) for CUDA device N.
    fn __dlpack_device__(&self) -> (i32, i32) {
        (self.device.device_type, self.device.device_id)
    }
}
