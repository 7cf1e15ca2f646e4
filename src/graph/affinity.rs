//! Pinning worker threads to cores (`cpu_affinity`), through libc.

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> std::result::Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if core >= libc::CPU_SETSIZE as usize {
            return Err(format!(
                "cpu_affinity core {core} is beyond this system's CPU set"
            ));
        }
        // SAFETY: `core` is below CPU_SETSIZE (checked above) and `set` is a valid set.
        unsafe { libc::CPU_SET(core, &mut set) };
        // SAFETY: pid 0 is the calling thread; the size and pointer describe `set`.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            return Err(format!(
                "cannot pin a worker to core {core}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(format!(
            "cpu_affinity (core {core}) is supported on Linux only"
        ))
    }
}

/// The cores the calling thread may run on.
#[cfg(target_os = "linux")]
pub fn current_affinity() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is the empty set, which sched_getaffinity fills.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the size and pointer describe `set`.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Vec::new();
    }
    // SAFETY: `set` is initialised and every index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}
