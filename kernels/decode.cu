// padic-burst decode kernels, compiled at run time by NVRTC (the `cuda`
// feature; see src/engine/cuda.rs, which includes this file with
// include_str!). One kernel per section encoding and output word size.
//
// A chunk decodes section by section, in order, on one stream: section 0
// assigns each output word, the later ones add to it (wrapping in the word's
// width), exactly as the CPU's `Tables::decode_range`. A section's symbols
// turn into contributions through a table the host builds (the rANS decode
// table carries the contribution in its top 32 bits; raw sections look theirs
// up in `lut`). The host has already parsed and bounds-checked every section
// header (src/codec/plan.rs); the kernels still check every read and report a
// failure through `err` rather than read out of bounds.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define RANS_L 65536u

// Error bits written to `err`.
#define ERR_STATE 1u      // an initial state below 2^16
#define ERR_WORDS 2u      // the word stream ran out
#define ERR_LEFTOVER 4u   // words left unread at the end of a segment
#define ERR_FINAL 8u      // a final state differs from 2^16
#define ERR_RAW 16u       // a raw read past its section

// One rANS segment: where its output starts (in words, from the range's
// first value), how many symbols it holds, and where its states and words lie
// in the uploaded section bytes.
struct Segment {
    u32 out_start;
    u32 len;
    u32 states_off;
    u32 words_off;
    u32 words;
};

template <typename W>
__device__ __forceinline__ void emit(W* out, u32 i, u32 v, int assign) {
    out[i] = assign ? (W)v : (W)(out[i] + (W)v);
}

template <typename W>
__device__ void const_section(W* out, u32 n, u32 v, int assign) {
    u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) emit(out, i, v, assign);
}

// Values of `width` bits, least significant bit first, from `packed` (whose
// first byte holds the range's first value at bit 0).
template <typename W>
__device__ void raw_section(W* out, u32 n, const u8* packed, u32 packed_len,
                            u32 width, const u32* lut, int assign, u32* err) {
    u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    u64 bit = (u64)i * width;
    u32 byte = (u32)(bit >> 3);
    u32 shift = (u32)(bit & 7);
    u32 need = (shift + width + 7) >> 3;  // at most 3 bytes: width <= 12
    if (byte + need > packed_len) {
        atomicOr(err, ERR_RAW);
        return;
    }
    u32 v = 0;
    for (u32 k = 0; k < need; k++) v |= (u32)packed[byte + k] << (8 * k);
    v = (v >> shift) & ((1u << width) - 1u);
    emit(out, i, lut[v], assign);
}

// One warp per segment; lane j of the warp is rANS lane j (symbols j,
// j + lanes, ...). Each block of `lanes` symbols reads its renormalisation
// words in lane order, as the CPU does: a ballot gives each lane the number
// of lanes below it that read one.
template <typename W>
__device__ void rans_section(W* out, const u8* data, const u64* table,
                             const Segment* segs, u32 nsegs, u32 scale_bits,
                             u32 lanes, int assign, u32* err) {
    u32 warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    u32 lane = threadIdx.x & 31u;
    if (warp >= nsegs) return;  // the whole warp leaves together
    Segment s = segs[warp];
    const u8* st = data + s.states_off;
    const u8* words = data + s.words_off;
    u32 mask = (1u << scale_bits) - 1u;
    u32 x = 0;
    if (lane < lanes) {
        x = (u32)st[4 * lane] | (u32)st[4 * lane + 1] << 8 |
            (u32)st[4 * lane + 2] << 16 | (u32)st[4 * lane + 3] << 24;
        if (x < RANS_L) atomicOr(err, ERR_STATE);
    }
    u32 pos = 0;
    for (u32 base = 0; base < s.len; base += lanes) {
        u32 i = base + lane;
        bool active = lane < lanes && i < s.len;
        u32 y = x;
        if (active) {
            u64 e = table[x & mask];
            y = (u32)(e & 0xffffu) * (x >> scale_bits) + (u32)((e >> 16) & 0xffffu);
            emit(out, s.out_start + i, (u32)(e >> 32), assign);
        }
        bool need = active && y < RANS_L;
        u32 m = __ballot_sync(0xffffffffu, need);
        if (need) {
            u32 idx = pos + __popc(m & ((1u << lane) - 1u));
            if (idx < s.words) {
                y = (y << 16) | (u32)words[2 * idx] | (u32)words[2 * idx + 1] << 8;
            } else {
                atomicOr(err, ERR_WORDS);
            }
        }
        pos += __popc(m);
        if (active) x = y;
    }
    if (lane == 0 && pos != s.words) atomicOr(err, ERR_LEFTOVER);
    if (lane < lanes && x != RANS_L) atomicOr(err, ERR_FINAL);
}

#define INSTANTIATE(SUFFIX, W)                                                  \
    extern "C" __global__ void const_##SUFFIX(W* out, u32 n, u32 v, int assign) { \
        const_section<W>(out, n, v, assign);                                    \
    }                                                                           \
    extern "C" __global__ void raw_##SUFFIX(W* out, u32 n, const u8* packed,    \
                                            u32 packed_len, u32 width,          \
                                            const u32* lut, int assign,         \
                                            u32* err) {                         \
        raw_section<W>(out, n, packed, packed_len, width, lut, assign, err);    \
    }                                                                           \
    extern "C" __global__ void rans_##SUFFIX(W* out, const u8* data,            \
                                             const u64* table,                  \
                                             const Segment* segs, u32 nsegs,    \
                                             u32 scale_bits, u32 lanes,         \
                                             int assign, u32* err) {            \
        rans_section<W>(out, data, table, segs, nsegs, scale_bits, lanes,       \
                        assign, err);                                           \
    }

INSTANTIATE(u16, u16)
INSTANTIATE(u32, u32)
