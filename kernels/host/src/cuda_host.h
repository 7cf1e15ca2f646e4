// CUDA's execution model on the host, enough of it to run kernels/decode.cu
// as written: its grid of blocks, each block's threads in warps of 32, and
// __ballot_sync, the one warp-synchronous call the kernels make.
//
// Each thread of a warp runs on its own stack (a fiber); the
// scheduler runs every live lane of a warp until it exits or reaches
// __ballot_sync, and when no lane can go on, it checks the call as the
// hardware requires (every lane named in the mask has reached it, with the
// same mask) and hands each lane the vote. A lane that exits while others
// wait for it, or mismatched masks, is an error the launch reports: on a GPU
// that is undefined behaviour.
//
// Blocks and warps run one after another on the calling thread; the
// kernels share nothing between warps (no shared memory, no
// __syncthreads), so any order is one the GPU may choose. All state is
// thread-local: tests run launches on several threads at once.
#pragma once

#include <cstdint>

#define __global__
#define __device__
#define __forceinline__ inline

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

namespace host {
// The lane now running calls this; the scheduler returns the vote.
unsigned ballot(unsigned mask, int pred);
// Runs `body` once per thread of the grid; 0, or a message (static storage,
// thread-local) describing what the kernel did that a GPU would not allow.
const char* launch(const unsigned grid[3], const unsigned block[3], void (*body)(void*), void* arg);
}  // namespace host

inline unsigned __ballot_sync(unsigned mask, int pred) { return host::ballot(mask, pred); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
// One OS thread runs every lane, so a plain read-modify-write is atomic.
inline unsigned atomicOr(unsigned* p, unsigned v) {
    unsigned old = *p;
    *p = old | v;
    return old;
}
