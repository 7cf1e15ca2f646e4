//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use padic_burst::codec::plan::{BatchPlan, BatchSegment, Kernel, Piece};
use padic_burst::codec::rans::Word;
use padic_burst::codec::Tables;
use padic_burst::compress::{compress_file, CompressOptions};
use padic_burst::engine::batch;
use padic_burst::engine::gpu::{DeviceBuffer, GpuEngine, GpuError, GpuRange};
use padic_burst::engine::{CpuEngine, DecodedModel};
use padic_burst::format::Container;
use padic_burst::progress::Progress;
use padic_burst_kernels_host::{self as host, Guarded};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A safetensors file from (name, dtype, shape, bytes).
pub fn safetensors_bytes(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("source".to_string(), "padic-burst tests".to_string());
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// Writes `bytes` as `name` in `dir`, compresses it with `opts`, returns the container path.
pub fn compress_bytes(dir: &Path, name: &str, bytes: &[u8], opts: &CompressOptions) -> PathBuf {
    let input = dir.join(format!("{name}.safetensors"));
    let output = dir.join(format!("{name}.padic"));
    std::fs::write(&input, bytes).unwrap();
    compress_file(&input, &output, opts, &Progress::hidden()).unwrap();
    output
}

/// A small mixed container: a BF16 tensor of several 2 KiB chunks, an F32
/// one and a passthrough I64 one: (safetensors bytes, container bytes).
pub fn mixed_sample(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut rng = padic_burst::demo::Rng::new(11);
    let w = padic_burst::demo::gaussian_bytes(&mut rng, 3000, 0.05, Dtype::BF16);
    let f = padic_burst::demo::gaussian_bytes(&mut rng, 1500, 0.02, Dtype::F32);
    let ids: Vec<u8> = (0..64i64).flat_map(|i| i.to_le_bytes()).collect();
    let file = safetensors_bytes(&[
        ("layer.w", Dtype::BF16, vec![30, 100], w),
        ("layer.f", Dtype::F32, vec![1500], f),
        ("ids", Dtype::I64, vec![64], ids),
    ]);
    let o = CompressOptions {
        chunk_kib: 2,
        ..CompressOptions::default()
    };
    let packed = compress_bytes(dir, "sample", &file, &o);
    (file, std::fs::read(packed).unwrap())
}

/// Decodes a whole container in memory.
pub fn decode(path: &Path, target: Option<u32>) -> DecodedModel {
    let c = Container::open(path).unwrap();
    CpuEngine::new(Some(2))
        .unwrap()
        .decompress_to_memory(&c, target)
        .unwrap()
        .0
}

/// The data region of a safetensors file.
pub fn data_region(file: &[u8]) -> &[u8] {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    &file[8 + n..]
}

/// The bytes of tensor `name` in a safetensors file's data region.
pub fn tensor_bytes<'a>(c: &Container, data: &'a [u8], name: &str) -> &'a [u8] {
    let e = c
        .header()
        .tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor '{name}'"));
    &data[e.data_offset as usize..(e.data_offset + e.byte_len) as usize]
}

/// Every 16-bit pattern, little-endian.
pub fn all_u16_patterns() -> Vec<u8> {
    (0..=u16::MAX).flat_map(|v| v.to_le_bytes()).collect()
}

/// Reference truncation, written independently of the library: keep the
/// top `k` of the `w` base-`p` digits of the fraction (`w` the exact digit
/// count). What a container before version 3 decodes to.
pub fn reference_truncate_plain(bits: u32, frac_bits: u32, p: u64, k: u32) -> u32 {
    let w = reference_digits(frac_bits, p);
    let unit = p.pow(w - k.min(w));
    let mask = (1u32 << frac_bits) - 1;
    let frac = (bits & mask) as u64;
    (bits & !mask) | ((frac / unit * unit) as u32)
}

/// The exact digit count: the smallest `w` with `p^w >= 2^frac_bits`.
fn reference_digits(frac_bits: u32, p: u64) -> u32 {
    let mut w = 0u32;
    let mut pw = 1u64;
    while pw < (1u64 << frac_bits) {
        pw *= p;
        w += 1;
    }
    w
}

/// Reference of a decode to `k` digits (container version 3): the plain
/// truncation, and where digits are dropped, a NaN whose top digit is 0
/// (`frac < p^(w-1)`) gets `2^frac_bits - p^(w-1)` added to its kept
/// fraction, so that it stays a NaN (the NaN flag).
pub fn reference_truncate(bits: u32, exp_bits: u32, frac_bits: u32, p: u64, k: u32) -> u32 {
    let w = reference_digits(frac_bits, p);
    let kept = reference_truncate_plain(bits, frac_bits, p, k);
    let frac = (bits & ((1u32 << frac_bits) - 1)) as u64;
    let exp_max = (1u32 << exp_bits) - 1;
    let top = p.pow(w - 1);
    if k < w && (bits >> frac_bits) & exp_max == exp_max && frac != 0 && frac < top {
        kept + ((1u64 << frac_bits) - top) as u32
    } else {
        kept
    }
}

/// Fails when a temporary output (`.NAME.tmp-...`) is left in `dir`.
pub fn assert_no_temp_files(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A test-only GPU: decodes with the CPU codec, fails with out-of-memory on
/// the chunks (global order of first use) it is told to, and can dawdle to
/// shuffle arrival order.
pub struct FakeGpu {
    pub oom_on: HashSet<(usize, usize)>,
    /// Chunks on which it fails with an error that is not out-of-memory.
    pub fail_on: HashSet<(usize, usize)>,
    pub calls: AtomicUsize,
    pub seen: Mutex<Vec<(usize, usize, usize, usize)>>,
    pub sleep_every: usize,
    /// Ranges in each `decode_batch` call, in call order.
    pub batches: Mutex<Vec<usize>>,
    /// "Device" bytes left for `decode_to_device` and `upload`.
    pub device_room: Mutex<u64>,
    /// Tensors decoded "to the device", in order.
    pub on_device: Mutex<Vec<usize>>,
    /// Each `decode_batch` call's start and end.
    pub intervals: Mutex<Vec<(std::time::Instant, std::time::Instant)>>,
    /// How long each `decode_batch` call dawdles (a slow device).
    pub batch_delay: std::time::Duration,
}

/// The stand-in's "device" memory: host bytes, for tests only.
#[derive(Debug)]
pub struct FakeDeviceBuffer(Vec<u8>);

impl DeviceBuffer for FakeDeviceBuffer {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn device(&self) -> String {
        "test stand-in".into()
    }
    fn device_ptr(&self) -> u64 {
        self.0.as_ptr() as u64
    }
    fn to_host(&self) -> Result<Vec<u8>, GpuError> {
        Ok(self.0.clone())
    }
}

impl FakeGpu {
    /// Takes `bytes` of the "device" room, or fails as out of memory.
    fn allocate(&self, bytes: u64) -> Result<(), GpuError> {
        let mut room = self.device_room.lock().unwrap();
        if bytes > *room {
            return Err(GpuError::OutOfMemory {
                requested: bytes,
                free: *room,
            });
        }
        *room -= bytes;
        Ok(())
    }
}

impl FakeGpu {
    pub fn new(oom_on: &[(usize, usize)]) -> Self {
        FakeGpu {
            oom_on: oom_on.iter().copied().collect(),
            fail_on: HashSet::new(),
            calls: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            sleep_every: 0,
            batches: Mutex::new(Vec::new()),
            device_room: Mutex::new(u64::MAX),
            on_device: Mutex::new(Vec::new()),
            intervals: Mutex::new(Vec::new()),
            batch_delay: std::time::Duration::ZERO,
        }
    }
}

impl GpuEngine for FakeGpu {
    fn describe(&self) -> String {
        "test stand-in (CPU codec)".into()
    }
    fn decode_to_device(
        &self,
        c: &Container,
        tables: &Tables,
        tensor: usize,
    ) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        let t = &c.header().tensors[tensor];
        if self.fail_on.iter().any(|&(x, _)| x == tensor) {
            return Err(GpuError::Failed("an injected launch failure".into()));
        }
        self.allocate(t.byte_len)?;
        let mut out = vec![0u8; t.byte_len as usize];
        let mut at = 0usize;
        for (k, ch) in t.chunks.iter().enumerate() {
            let n = (ch.elements * t.unit()) as usize;
            let secs = c
                .sections(tensor, k, tables.sections_used())
                .map_err(|e| GpuError::Failed(e.to_string()))?;
            tables
                .decode_bytes(&secs, &mut out[at..at + n], &mut Vec::new())
                .map_err(|e| GpuError::Failed(e.to_string()))?;
            at += n;
        }
        self.on_device.lock().unwrap().push(tensor);
        Ok(Arc::new(FakeDeviceBuffer(out)))
    }
    fn upload(&self, bytes: &[u8]) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        self.allocate(bytes.len() as u64)?;
        Ok(Arc::new(FakeDeviceBuffer(bytes.to_vec())))
    }
    fn decode_batch(
        &self,
        c: &Container,
        ranges: &mut [GpuRange<'_>],
    ) -> Vec<Result<(), GpuError>> {
        let start = std::time::Instant::now();
        self.batches.lock().unwrap().push(ranges.len());
        std::thread::sleep(self.batch_delay);
        let results = ranges.iter_mut().map(|r| self.decode_range(c, r)).collect();
        self.intervals
            .lock()
            .unwrap()
            .push((start, std::time::Instant::now()));
        results
    }
    fn decode_range(&self, c: &Container, r: &mut GpuRange<'_>) -> Result<(), GpuError> {
        let (tables, tensor, chunk, total, first) = (r.tables, r.tensor, r.chunk, r.total, r.first);
        let out = &mut *r.out;
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.sleep_every > 0 && n % self.sleep_every == 0 {
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        if self.oom_on.contains(&(tensor, chunk)) {
            return Err(GpuError::OutOfMemory {
                requested: out.len() as u64,
                free: 1024,
            });
        }
        if self.fail_on.contains(&(tensor, chunk)) {
            return Err(GpuError::Failed("an injected launch failure".into()));
        }
        self.seen
            .lock()
            .unwrap()
            .push((tensor, chunk, first, out.len()));
        // Sections the caller read and checked already are not read again.
        let secs = match r.sections {
            Some(secs) => secs.to_vec(),
            None => c
                .sections(tensor, chunk, tables.sections_used())
                .map_err(|e| GpuError::Failed(e.to_string()))?,
        };
        tables
            .decode_range_bytes(&secs, total, first, out, &mut Vec::new())
            .map_err(|e| GpuError::Failed(e.to_string()))
    }
}

/// Runs the CUDA engine's launch list for `b` ([`BatchPlan::launches`],
/// pieces and segments as the eight words the engine uploads) through
/// `kernels/decode.cu` itself, compiled for the host (crate
/// `padic-burst-kernels-host`), on buffers with guard pages. `Err` is the
/// error word the kernels raised; a launch that breaks a warp rule or
/// CUDA's launch limits panics with what it broke.
pub fn run_kernels<W: Word + host::Word>(
    b: &BatchPlan,
    out: &mut [W],
) -> std::result::Result<(), u32> {
    let data = Guarded::new(&b.data);
    let tables = Guarded::new(&b.tables);
    let luts = Guarded::new(&b.luts);
    let mut device = Guarded::new(&out[..]);
    let mut err = Guarded::new(&[0u32]);
    for l in b.launches() {
        let pass = &b.passes[l.pass];
        let outcome = match l.kernel {
            Kernel::Pieces => {
                let rows = &pass.pieces[l.first..l.first + l.count];
                let pieces = Guarded::new(bytemuck::cast_slice::<Piece, u32>(rows));
                // SAFETY: the plan's checks put every piece's bytes in
                // `data` and its table in `luts`; the kernel checks its
                // reads against them, and the guard pages catch a miss.
                unsafe {
                    host::pieces(
                        l.grid,
                        l.block,
                        &mut device,
                        &data,
                        &luts,
                        &pieces,
                        l.assign(),
                        &mut err,
                    )
                }
            }
            Kernel::Rans => {
                let segs = Guarded::new(bytemuck::cast_slice::<BatchSegment, u32>(&pass.segments));
                // SAFETY: as above, for the segments' states, words and
                // tables.
                unsafe {
                    host::rans(
                        l.grid,
                        l.block,
                        &mut device,
                        &data,
                        &tables,
                        &segs,
                        l.count as u32,
                        l.assign(),
                        &mut err,
                    )
                }
            }
        };
        if let Err(m) = outcome {
            panic!("{:?} launch of pass {}: {m}", l.kernel, l.pass);
        }
    }
    out.copy_from_slice(device.as_slice());
    match err.as_slice()[0] {
        0 => Ok(()),
        e => Err(e),
    }
}

/// Runs the CUDA engine's launch list for a batch through
/// `kernels/decode.cu` on the host (crate `padic-burst-kernels-host`)
/// and returns its output as the device holds it, little-endian words.
pub fn run_kernels_bytes(b: &BatchPlan) -> Result<Vec<u8>, u32> {
    if b.word_size == 4 {
        let mut out = vec![0u32; b.count];
        run_kernels(b, &mut out)?;
        Ok(out.iter().flat_map(|v| v.to_le_bytes()).collect())
    } else {
        let mut out = vec![0u16; b.count];
        run_kernels(b, &mut out)?;
        Ok(out.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// A GPU engine whose "device" runs `kernels/decode.cu` on the host: the
/// CUDA engine's planning, sub-batching ([`batch::sub_batches`], at
/// `batch_bytes` a sub-batch), launch list and scatter, with the kernels'
/// own source in place of the card. Tests only, like [`FakeGpu`].
pub struct HostKernelGpu {
    pub batch_bytes: usize,
    /// Per sub-batch run: its word size and its ranges.
    pub sub_batches: Mutex<Vec<(usize, usize)>>,
    /// Plans reused as the CUDA engine reuses them.
    spares: batch::Spares,
}

impl HostKernelGpu {
    pub fn new(batch_bytes: usize) -> Self {
        HostKernelGpu {
            batch_bytes,
            sub_batches: Mutex::new(Vec::new()),
            spares: batch::Spares::default(),
        }
    }

    fn run(&self, plan: &BatchPlan) -> Result<Vec<u8>, GpuError> {
        self.sub_batches
            .lock()
            .unwrap()
            .push((plan.word_size, plan.len()));
        run_kernels_bytes(plan).map_err(|bits| {
            GpuError::Failed(format!(
                "the decode kernels reported a damaged stream (error bits {bits:#x})"
            ))
        })
    }
}

impl GpuEngine for HostKernelGpu {
    fn describe(&self) -> String {
        "kernels/decode.cu on the host (tests)".into()
    }
    fn decode_range(&self, c: &Container, r: &mut GpuRange<'_>) -> Result<(), GpuError> {
        self.decode_batch(c, std::slice::from_mut(r)).remove(0)
    }
    fn decode_batch(
        &self,
        c: &Container,
        ranges: &mut [GpuRange<'_>],
    ) -> Vec<Result<(), GpuError>> {
        let mut results: Vec<Result<(), GpuError>> = ranges.iter().map(|_| Ok(())).collect();
        for sub in batch::sub_batches(c, ranges, self.batch_bytes, &mut results, &self.spares) {
            match self.run(&sub.plan) {
                Ok(out) => batch::scatter(&sub, &out, ranges),
                Err(e) => sub.ranges.iter().for_each(|&i| results[i] = Err(e.clone())),
            }
            self.spares.give(sub.plan);
        }
        results
    }
    fn decode_to_device(
        &self,
        c: &Container,
        tables: &Tables,
        tensor: usize,
    ) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        let mut out = Vec::new();
        for plan in batch::tensor_batches(c, tables, tensor, self.batch_bytes, &self.spares) {
            let plan = plan?;
            out.extend(self.run(&plan)?);
            self.spares.give(plan);
        }
        Ok(Arc::new(FakeDeviceBuffer(out)))
    }
    fn upload(&self, bytes: &[u8]) -> Result<Arc<dyn DeviceBuffer>, GpuError> {
        Ok(Arc::new(FakeDeviceBuffer(bytes.to_vec())))
    }
}

/// The real test weights of `dtype` (bf16, f16, f32), written by
/// `scripts/fetch-test-weights.sh`; `None` (said on stderr) when missing,
/// a panic instead when `PADIC_REQUIRE_REAL_WEIGHTS=1`.
pub fn real_weights(dtype: &str) -> Option<PathBuf> {
    real_test_file(&format!("minilm-{dtype}.safetensors"))
}

/// The real MiniLM model directory as its package ships it (config,
/// tokenizer, `1_Pooling/`, `model.safetensors`), reached through a symlink:
/// `None` as [`real_weights`].
pub fn real_model_dir() -> Option<PathBuf> {
    real_test_file("minilm-model")
}

fn real_test_file(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("PADIC_TEST_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-weights"));
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("PADIC_REQUIRE_REAL_WEIGHTS").as_deref() == Ok("1") {
        panic!(
            "{} is missing: run scripts/fetch-test-weights.sh",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing (run scripts/fetch-test-weights.sh)",
        path.display()
    );
    None
}

/// The real test weights of `dtype` compressed with the defaults into `dir`:
/// (the original file, the container's path); `None` as [`real_weights`].
pub fn compress_real_weights(dir: &Path, dtype: &str) -> Option<(Vec<u8>, PathBuf)> {
    let input = real_weights(dtype)?;
    let original = std::fs::read(&input).unwrap();
    let packed = dir.join(format!("{dtype}.padic"));
    compress_file(
        &input,
        &packed,
        &CompressOptions::default(),
        &Progress::hidden(),
    )
    .unwrap();
    Some((original, packed))
}

/// Where the container's stored header starts, and its JSON (unsealed).
pub fn header_json(packed: &[u8]) -> (usize, serde_json::Value) {
    let n = packed.len();
    let hlen = u64::from_le_bytes(packed[n - 24..n - 16].try_into().unwrap()) as usize;
    let start = n - 24 - hlen;
    let version = u32::from_le_bytes(packed[8..12].try_into().unwrap());
    let json = padic_burst::format::open_header(version, &packed[start..n - 24]).unwrap();
    (start, serde_json::from_slice(&json).unwrap())
}

/// `body` (everything before the header) with `stored` as the header's
/// stored bytes and a valid footer.
pub fn with_stored_header(body: &[u8], stored: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(stored);
    out.extend_from_slice(&(stored.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(stored).to_le_bytes());
    out.extend_from_slice(b"PADICEND");
    out
}

/// Rewrites the container's header JSON through `edit`, sealed as this
/// build writes it, with a valid checksum.
pub fn with_header(packed: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let (start, mut h) = header_json(packed);
    edit(&mut h);
    let json = serde_json::to_vec(&h).unwrap();
    let stored =
        padic_burst::format::seal_header(&json, (start as u64).saturating_sub(16)).unwrap();
    with_stored_header(&packed[..start], &stored)
}

/// A model from `seed`: per entry (name, dtype, shape, std), Gaussian weights
/// of that std for a float dtype, `0..n` for I64; written and compressed
/// into `dir` as `name` with `chunk_kib` chunks: (container, safetensors bytes).
pub fn gaussian_model(
    dir: &Path,
    name: &str,
    seed: u64,
    tensors: &[(&str, Dtype, Vec<usize>, f64)],
    chunk_kib: u32,
) -> (PathBuf, Vec<u8>) {
    let mut rng = padic_burst::demo::Rng::new(seed);
    let built: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, shape, std)| {
            let count: usize = shape.iter().product();
            let bytes = match d {
                Dtype::I64 => (0..count as i64).flat_map(|i| i.to_le_bytes()).collect(),
                _ => padic_burst::demo::gaussian_bytes(&mut rng, count, *std, *d),
            };
            (*n, *d, shape.clone(), bytes)
        })
        .collect();
    let file = safetensors_bytes(&built);
    let packed = compress_bytes(
        dir,
        name,
        &file,
        &CompressOptions {
            chunk_kib,
            ..CompressOptions::default()
        },
    );
    (packed, file)
}

/// The index of tensor `name` in `c` (file order).
pub fn tensor_index(c: &Container, name: &str) -> usize {
    c.header()
        .tensors
        .iter()
        .position(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor '{name}'"))
}

/// Chunks of the float tensors of `c` (the ones a GPU can take).
pub fn float_chunks(c: &Container) -> usize {
    c.header()
        .tensors
        .iter()
        .filter(|t| t.codec.is_some())
        .map(|t| t.chunks.len())
        .sum()
}

/// A hosts file in `dir` for a two-process cluster on loopback, at two free
/// ports (returned too).
pub fn loopback_hosts(dir: &Path) -> (PathBuf, [u16; 2]) {
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let ports = [port(), port()];
    let hosts = dir.join("hosts.txt");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    (hosts, ports)
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Reads `fifo` to its end on a thread of its own; join for the bytes.
pub fn read_fifo(fifo: &Path) -> std::thread::JoinHandle<Vec<u8>> {
    let fifo = fifo.to_path_buf();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut got = Vec::new();
        std::fs::File::open(&fifo)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        got
    })
}

/// The command-line binary under test.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_padic-burst"))
}

/// Asserts that a run of the binary succeeded, showing its stderr if not.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
