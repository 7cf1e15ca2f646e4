//! `kernels/decode.cu` run on the host: the CUDA source compiled as C++
//! over a small model of CUDA's execution (`src/cuda_host.h`): a grid of
//! blocks, each block's threads in warps of 32 on fibers of their own, and
//! `__ballot_sync`, which the model checks as the hardware requires (every
//! lane its mask names reaches it, with the same mask).
//!
//! padic-burst's tests run the GPU engine's launch list (`BatchPlan::launches`)
//! through these kernels and compare the words with the CPU decoder's, so the
//! kernels' own text, not a port of it, is held to bit-exactness on a machine
//! with no GPU. What this cannot show: timing, memory ordering between real
//! concurrent warps, and the device compiler's code (NVRTC compiles the same
//! text, and `tests/gpu.rs` checks that it does).
//!
//! Every buffer a kernel reads or writes is a [`Guarded`] copy, placed
//! against an inaccessible page at each end, so a read or write just past a
//! buffer faults rather than going unseen.

use std::ffi::{c_char, c_void, CStr};
use std::marker::PhantomData;

extern "C" {
    fn padic_host_pieces(
        word: u32,
        grid: *const u32,
        block: *const u32,
        out: *mut c_void,
        data: *const u8,
        luts: *const u32,
        pieces: *const u32,
        assign: i32,
        err: *mut u32,
    ) -> *const c_char;
    fn padic_host_rans(
        word: u32,
        grid: *const u32,
        block: *const u32,
        out: *mut c_void,
        data: *const u8,
        tables: *const u64,
        segs: *const u32,
        nsegs: u32,
        assign: i32,
        err: *mut u32,
    ) -> *const c_char;
}

/// A word type the kernels decode to.
pub trait Word: Copy + Default + 'static {
    const SIZE: u32;
}
impl Word for u16 {
    const SIZE: u32 = 2;
}
impl Word for u32 {
    const SIZE: u32 = 4;
}

fn page() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096).max(4096)
}

/// A copy of a slice in a mapping of its own, its last element against an
/// inaccessible page and another such page before its first, so that an
/// access just past either end faults. An empty one points at the page
/// after it.
pub struct Guarded<T: Copy> {
    base: *mut c_void,
    map: usize,
    ptr: *mut T,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Copy> Guarded<T> {
    pub fn new(v: &[T]) -> Self {
        let page = page();
        let bytes = std::mem::size_of_val(v);
        let body = bytes.div_ceil(page) * page;
        let map = body + 2 * page;
        // SAFETY: a fresh private anonymous mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(base != libc::MAP_FAILED, "mmap of {map} bytes failed");
        let start = base as usize;
        // SAFETY: both guard pages lie inside the mapping just made.
        unsafe {
            assert_eq!(libc::mprotect(base, page, libc::PROT_NONE), 0);
            assert_eq!(
                libc::mprotect((start + page + body) as *mut c_void, page, libc::PROT_NONE),
                0
            );
        }
        // The data ends where the second guard page begins; `bytes` is a
        // multiple of T's size and the page end of its alignment.
        let ptr = (start + page + body - bytes) as *mut T;
        // SAFETY: `ptr..ptr + len` lies in the writable part of the mapping.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), ptr, v.len()) };
        Guarded {
            base,
            map,
            ptr,
            len: v.len(),
            _t: PhantomData,
        }
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised elements (see `new`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_ptr(&self) -> *const T {
        self.ptr
    }

    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr
    }
}

impl<T: Copy> Drop for Guarded<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made.
        unsafe { libc::munmap(self.base, self.map) };
    }
}

fn outcome(msg: *const c_char) -> Result<(), String> {
    if msg.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated message in the host
    // scheduler's thread-local buffer, valid until this thread's next launch.
    Err(unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned())
}

/// Grid and block dimensions, as `cudarc::driver::LaunchConfig` holds them.
pub type Dim = (u32, u32, u32);

/// Runs `pieces_u16` or `pieces_u32` (by `W`) over `grid` and `block`, on
/// the arguments the CUDA engine passes. `Err` when the launch is one a GPU
/// would refuse or the kernel breaks a warp rule; damage the kernel detects
/// goes to `err`, as on the device.
///
/// # Safety
/// The kernel reads and writes at the offsets `pieces` names: they must lie
/// in the buffers, or past them by less than a page (which faults).
#[allow(clippy::too_many_arguments)]
pub unsafe fn pieces<W: Word>(
    grid: Dim,
    block: Dim,
    out: &mut Guarded<W>,
    data: &Guarded<u8>,
    luts: &Guarded<u32>,
    pieces: &Guarded<u32>,
    assign: bool,
    err: &mut Guarded<u32>,
) -> Result<(), String> {
    let (g, b) = ([grid.0, grid.1, grid.2], [block.0, block.1, block.2]);
    outcome(padic_host_pieces(
        W::SIZE,
        g.as_ptr(),
        b.as_ptr(),
        out.as_mut_ptr().cast(),
        data.as_ptr(),
        luts.as_ptr(),
        pieces.as_ptr(),
        assign as i32,
        err.as_mut_ptr(),
    ))
}

/// Runs `rans_u16` or `rans_u32` (by `W`): `nsegs` segments of `segs`, a
/// warp each. As [`pieces`] for the outcome.
///
/// # Safety
/// As [`pieces`], for the offsets the segments name.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rans<W: Word>(
    grid: Dim,
    block: Dim,
    out: &mut Guarded<W>,
    data: &Guarded<u8>,
    tables: &Guarded<u64>,
    segs: &Guarded<u32>,
    nsegs: u32,
    assign: bool,
    err: &mut Guarded<u32>,
) -> Result<(), String> {
    let (g, b) = ([grid.0, grid.1, grid.2], [block.0, block.1, block.2]);
    outcome(padic_host_rans(
        W::SIZE,
        g.as_ptr(),
        b.as_ptr(),
        out.as_mut_ptr().cast(),
        data.as_ptr(),
        tables.as_ptr(),
        segs.as_ptr(),
        nsegs,
        assign as i32,
        err.as_mut_ptr(),
    ))
}

#[cfg(test)]
extern "C" {
    fn padic_host_probe(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        out: *mut u32,
    ) -> *const c_char;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs probe `name` of src/probe.cu with `words` words of output.
    fn probe(name: &str, grid: Dim, block: Dim, words: usize) -> Result<Vec<u32>, String> {
        let mut out = Guarded::new(&vec![u32::MAX; words]);
        let name = std::ffi::CString::new(name).unwrap();
        let (g, b) = ([grid.0, grid.1, grid.2], [block.0, block.1, block.2]);
        // SAFETY: every probe writes inside the `words` its launch covers.
        outcome(unsafe {
            padic_host_probe(name.as_ptr(), g.as_ptr(), b.as_ptr(), out.as_mut_ptr())
        })?;
        Ok(out.as_slice().to_vec())
    }

    #[test]
    fn every_thread_of_the_grid_runs_once_with_its_own_indices() {
        let (grid, block) = ((3, 2, 2), (8, 4, 2));
        let got = probe("ids", grid, block, 12 * 64).unwrap();
        let want: Vec<u32> = (0..12u32)
            .flat_map(|b| (0..64u32).map(move |t| b << 16 | t))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_vote_gives_every_lane_its_warps_predicates() {
        // Two blocks of 64 threads: four warps, and a block boundary.
        let got = probe("vote", (2, 1, 1), (64, 1, 1), 256).unwrap();
        for t in 0..128usize {
            let (tid, warp_first) = (t % 64, t / 32 * 32);
            let lanes = |f: &dyn Fn(usize, usize) -> bool| {
                (0..32)
                    .filter(|&j| f(j, warp_first + j))
                    .fold(0u32, |v, j| v | 1 << j)
            };
            let a = lanes(&|j, _| (tid / 32 * 32 + j) % 3 == 0);
            let b = lanes(&|_, global| global >= 40);
            assert_eq!((got[2 * t], got[2 * t + 1]), (a, b), "thread {t}");
        }
    }

    #[test]
    fn lanes_may_vote_among_themselves_once_the_others_leave() {
        let got = probe("even_lanes", (1, 1, 1), (32, 1, 1), 32).unwrap();
        for (j, &v) in got.iter().enumerate() {
            assert_eq!(
                v,
                if j % 2 == 0 { 0x1111_1111 } else { u32::MAX },
                "lane {j}"
            );
        }
    }

    #[test]
    fn the_model_refuses_what_a_gpu_would_not_do() {
        let e = probe("diverged", (1, 1, 1), (32, 1, 1), 32).unwrap_err();
        assert!(e.contains("exited while others waited"), "{e}");
        let e = probe("masks", (1, 1, 1), (32, 1, 1), 32).unwrap_err();
        assert!(e.contains("different masks"), "{e}");
        let e = probe("ids", (1, 70000, 1), (32, 1, 1), 32).unwrap_err();
        assert!(e.contains("invalid launch"), "{e}");
        let e = probe("ids", (1, 1, 1), (2048, 1, 1), 32).unwrap_err();
        assert!(e.contains("invalid launch"), "{e}");
    }

    /// Reads word `at` of `g` in a child process; true when the child died
    /// of a segmentation fault.
    fn read_faults(g: &Guarded<u32>, at: isize) -> bool {
        // SAFETY: the child only reads (volatile, so the read happens) and
        // leaves with _exit; the parent waits for it.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                std::ptr::read_volatile(g.as_ptr().offset(at));
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV
        }
    }

    #[test]
    fn a_read_just_past_either_end_of_a_guarded_buffer_faults() {
        let g = Guarded::new(&[7u32; 5]);
        assert!(
            !read_faults(&g, 0) && !read_faults(&g, 4),
            "inside reads work"
        );
        assert!(read_faults(&g, 5), "one past the end");
        let page = (page() / 4) as isize;
        assert!(read_faults(&g, -page + 4), "a page before the start");
        assert!(read_faults(&Guarded::<u32>::new(&[]), 0), "an empty buffer");
    }

    #[test]
    fn guarded_buffers_hold_their_copy_against_the_guard_page() {
        for n in [0usize, 1, 3, 1024, 4097] {
            let v: Vec<u64> = (0..n as u64).collect();
            let g = Guarded::new(&v);
            assert_eq!(g.as_slice(), &v[..]);
            let end = g.as_ptr() as usize + 8 * n;
            assert_eq!(end % page(), 0, "{n} elements end on a page boundary");
            assert_eq!(g.as_ptr() as usize % 8, 0);
        }
    }
}
