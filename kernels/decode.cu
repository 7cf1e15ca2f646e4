// padic-burst decode kernels, compiled at run time by NVRTC (the `cuda`
// feature; see src/engine/cuda/nvrtc.rs, which includes this file with
// include_str!). Two kernels per output word size: const and raw sections
// (`pieces_*`), and rANS sections (`rans_*`).
//
// A chunk decodes section by section, in order, on one stream: section 0
// assigns each output word, the later ones add to it (wrapping in the word's
// width), exactly as the CPU's `Tables::decode_range`. A section's symbols
// turn into contributions through a table the host builds (the rANS decode
// table carries the contribution in its top 32 bits; raw sections look theirs
// up in `luts`). The host has already parsed and bounds-checked every section
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
#define ERR_RAW 16u       // a raw read past its section, or a value past its table

// Kernels work on a batch of chunk ranges at once (src/codec/plan.rs,
// `BatchPlan`): one launch per section index and kind covers every range of
// the batch, so the GPU sees thousands of segments rather than one chunk's
// four. `data` holds every range's sections back to back, `tables` the rANS
// decode tables, `luts` the raw sections' lookup tables.

// A const or raw section of one range (eight u32, as `plan::Piece`).
#define PIECE_CONST 0u
#define PIECE_RAW 1u
struct Piece {
    u32 out_start;  // first output word in the batch
    u32 count;      // values
    u32 kind;       // PIECE_CONST or PIECE_RAW
    u32 value;      // const: the contribution; raw: the lookup table's length
    u32 data_off;   // raw: the packed bytes, `len` of them, in `data`
    u32 len;
    u32 width;      // raw: bits a value (at most 12)
    u32 lut_off;    // raw: the lookup table in `luts`
};

// One rANS segment of one range (eight u32, as `plan::BatchSegment`).
struct Segment {
    u32 out_start;   // first output word in the batch
    u32 len;         // symbols
    u32 states_off;  // `lanes` u32 initial states in `data`
    u32 words_off;   // `words` u16 renormalisation words in `data`
    u32 words;
    u32 table_off;   // its decode table in `tables`, 2^scale_bits entries
    u32 scale_bits;
    u32 lanes;
};

template <typename W>
__device__ __forceinline__ void emit(W* out, u32 i, u32 v, int assign) {
    out[i] = assign ? (W)v : (W)(out[i] + (W)v);
}

// blockIdx.y picks the piece (of `pieces + first`); the x dimension strides
// over its values. Raw values are `width` bits, least significant bit first,
// the first value at bit 0 of the piece's first byte.
template <typename W>
__device__ void pieces_pass(W* out, const u8* data, const u32* luts,
                            const Piece* pieces, int assign, u32* err) {
    Piece p = pieces[blockIdx.y];
    u32 stride = gridDim.x * blockDim.x;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < p.count; i += stride) {
        u32 v = p.value;
        if (p.kind != PIECE_CONST) {
            u64 bit = (u64)i * p.width;
            u32 byte = (u32)(bit >> 3);
            u32 shift = (u32)(bit & 7);
            u32 need = (shift + p.width + 7) >> 3;  // at most 3 bytes: width <= 12
            if (byte + need > p.len) {
                atomicOr(err, ERR_RAW);
                continue;
            }
            const u8* b = data + p.data_off + byte;
            u32 w = 0;
            for (u32 k = 0; k < need; k++) w |= (u32)b[k] << (8 * k);
            u32 sym = (w >> shift) & ((1u << p.width) - 1u);
            if (sym >= p.value) {
                atomicOr(err, ERR_RAW);
                continue;
            }
            v = luts[p.lut_off + sym];
        }
        emit(out, p.out_start + i, v, assign);
    }
}

// One warp per segment; lane j of the warp is rANS lane j (symbols j,
// j + lanes, ...). Each block of `lanes` symbols reads its renormalisation
// words in lane order, as the CPU does: a ballot gives each lane the number
// of lanes below it that read one.
template <typename W>
__device__ void rans_pass(W* out, const u8* data, const u64* tables,
                          const Segment* segs, u32 nsegs, int assign, u32* err) {
    u32 warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    u32 lane = threadIdx.x & 31u;
    if (warp >= nsegs) return;  // the whole warp leaves together
    Segment s = segs[warp];
    const u64* table = tables + s.table_off;
    const u8* st = data + s.states_off;
    const u8* words = data + s.words_off;
    u32 scale_bits = s.scale_bits;
    u32 lanes = s.lanes;
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

#define INSTANTIATE(SUFFIX, W)                                                 \
    extern "C" __global__ void pieces_##SUFFIX(W* out, const u8* data,         \
                                               const u32* luts,                \
                                               const Piece* pieces,            \
                                               int assign, u32* err) {         \
        pieces_pass<W>(out, data, luts, pieces, assign, err);                  \
    }                                                                          \
    extern "C" __global__ void rans_##SUFFIX(W* out, const u8* data,           \
                                             const u64* tables,                \
                                             const Segment* segs, u32 nsegs,   \
                                             int assign, u32* err) {           \
        rans_pass<W>(out, data, tables, segs, nsegs, assign, err);             \
    }

INSTANTIATE(u16, u16)
INSTANTIATE(u32, u32)
