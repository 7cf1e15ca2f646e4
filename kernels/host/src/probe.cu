// Kernels that exercise the host model itself (cuda_host.h), for this
// crate's tests: each thread's indices, a vote, and the warp rules the
// model must catch.

// Each thread writes its block and thread indices, packed, at its linear id.
extern "C" __global__ void probe_ids(unsigned* out) {
    unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    out[block * threads + t] = block << 16 | t;
}

// Every lane votes, twice, on two predicates.
extern "C" __global__ void probe_vote(unsigned* out) {
    unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned a = __ballot_sync(0xffffffffu, threadIdx.x % 3 == 0);
    unsigned b = __ballot_sync(0xffffffffu, t >= 40);
    out[2 * t] = a;
    out[2 * t + 1] = b;
}

// The odd lanes leave; the even lanes vote among themselves: allowed.
extern "C" __global__ void probe_even_lanes(unsigned* out) {
    if (threadIdx.x & 1u) return;
    out[threadIdx.x] = __ballot_sync(0x55555555u, threadIdx.x % 4 == 0);
}

// Each lane loops a different number of times around a full-warp vote: the
// lanes that finish first leave the others waiting for them. A GPU hangs or
// misbehaves; the model must refuse.
extern "C" __global__ void probe_diverged(unsigned* out) {
    unsigned v = 0;
    for (unsigned i = 0; i < threadIdx.x % 5; i++) v += __ballot_sync(0xffffffffu, 1);
    out[threadIdx.x] = v;
}

// Half the warp names a different mask.
extern "C" __global__ void probe_masks(unsigned* out) {
    out[threadIdx.x] = __ballot_sync(threadIdx.x < 16 ? 0xffffffffu : 0xffff0000u, 1);
}
