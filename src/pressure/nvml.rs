//! NVML: the live memory of one GPU, sampled on its own thread every
//! `sample_interval_ms`. libnvidia-ml is loaded at run time: without it,
//! [`Nvml::start`] says so and nothing panics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{PressureSource, Sample};
use crate::error::{Error, Result};

/// A running sampler of one GPU's memory.
pub struct Nvml {
    latest: Arc<Mutex<Option<Sample>>>,
    history: Arc<Mutex<Vec<Sample>>>,
    /// Reads that failed after the first sample, and the last error.
    failed: Arc<Mutex<(u64, Option<String>)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    device: String,
}

const MB: f64 = 1024.0 * 1024.0;

impl Nvml {
    /// Starts sampling GPU `index` every `interval_ms`; the first sample is
    /// taken before this returns.
    pub fn start(index: u32, interval_ms: u64) -> Result<Self> {
        let latest = Arc::new(Mutex::new(None));
        let history = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new((0, None)));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<std::result::Result<String, String>>();
        let (l, h, f, s) = (
            latest.clone(),
            history.clone(),
            failed.clone(),
            stop.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("padic-nvml".into())
            .spawn(move || {
                let nvml = match nvml_wrapper::Nvml::init() {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(format!(
                            "NVML is not available ({e}): no libnvidia-ml.so.1, or no NVIDIA driver"
                        )));
                        return;
                    }
                };
                let device = match nvml.device_by_index(index) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = tx.send(Err(format!("NVML has no GPU {index}: {e}")));
                        return;
                    }
                };
                let started = Instant::now();
                let mut told = false;
                while !s.load(Ordering::Relaxed) {
                    match device.memory_info() {
                        Ok(m) => {
                            let sample = Sample {
                                t_ms: started.elapsed().as_millis() as u64,
                                used_mb: m.used as f64 / MB,
                                total_mb: m.total as f64 / MB,
                            };
                            *l.lock().expect("sample lock") = Some(sample);
                            h.lock().expect("history lock").push(sample);
                        }
                        Err(e) if !told => {
                            let _ =
                                tx.send(Err(format!("NVML cannot read GPU {index}'s memory: {e}")));
                            return;
                        }
                        Err(e) => {
                            let mut f = f.lock().expect("failure lock");
                            f.0 += 1;
                            f.1 = Some(e.to_string());
                        }
                    }
                    if !told {
                        told = true;
                        let name = device.name().unwrap_or_else(|_| "unknown".into());
                        let _ = tx.send(Ok(format!("GPU {index}: {name}")));
                    }
                    std::thread::sleep(Duration::from_millis(interval_ms.max(1)));
                }
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the NVML sampler: {e}")))?;
        let device = match rx.recv() {
            Ok(Ok(name)) => name,
            Ok(Err(why)) => {
                let _ = thread.join();
                return Err(Error::InvalidArgument(why));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::InvalidArgument("the NVML sampler stopped".into()));
            }
        };
        Ok(Nvml {
            latest,
            history,
            failed,
            stop,
            thread: Some(thread),
            device,
        })
    }

    /// The GPU sampled, in words.
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl PressureSource for Nvml {
    fn sample_at(&self, _t_ms: u64) -> Option<Sample> {
        *self.latest.lock().expect("sample lock")
    }
    fn has_gpu(&self) -> bool {
        true
    }
    fn history(&self) -> Option<Vec<Sample>> {
        Some(self.history.lock().expect("history lock").clone())
    }
    fn failed_reads(&self) -> (u64, Option<String>) {
        self.failed.lock().expect("failure lock").clone()
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
