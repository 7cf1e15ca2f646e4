// kernels/decode.cu, compiled for the host over cuda_host.h, and the
// scheduler that runs its threads (see cuda_host.h).

#include "cuda_host.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <pthread.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstring>

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace host {
namespace {

// The kernels' frames are small; the headroom is for the compiler's.
constexpr size_t kStack = 64 * 1024;

// A fiber's saved context, and the switch between two. On x86-64 the switch
// saves the callee-saved registers and the stack pointer and nothing else
// (glibc's swapcontext also makes a system call for the signal mask, which
// made the kernel tests several times slower); elsewhere, ucontext.
#if defined(__x86_64__)
struct Context {
    void* sp;
};
extern "C" void padic_host_switch(void** from, void* to);
asm(R"(
    .text
    .p2align 4
    .type padic_host_switch,@function
padic_host_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size padic_host_switch, .-padic_host_switch
)");
void switch_to(Context& from, Context& to) { padic_host_switch(&from.sp, to.sp); }
// Readies `c` to run `entry` from its start on `stack`: the first switch
// pops six zero registers and returns into `entry`, with the stack aligned
// as after a call.
void prepare(Context& c, char* stack, size_t size, void (*entry)()) {
    auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t{15};
    auto* ret = reinterpret_cast<void**>(top - 16);
    ret[0] = reinterpret_cast<void*>(entry);
    ret[1] = nullptr;  // `entry`'s own return address: it never returns
    void** regs = ret - 6;
    for (int i = 0; i < 6; i++) regs[i] = nullptr;
    c.sp = regs;
}
#else
struct Context {
    ucontext_t uc;
};
void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
// Kept out of line: getcontext returns twice, and no caller's loop may be
// compiled as if it could not.
__attribute__((noinline)) void prepare(Context& c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

enum class State { Running, Waiting, Done, Absent };

struct Lane {
    Context ctx;
    State state;
    unsigned mask;
    int pred;
    unsigned vote;
    uint3 tid;
};

struct Warp {
    Context sched;
    Lane lanes[32];
    int current;
    char* stacks;  // 32 of kStack, each above an inaccessible page
    void (*body)(void*);
    void* arg;
};

thread_local Warp* running = nullptr;

// The lanes' stacks, mapped once a thread and unmapped when it ends (a
// pthread key: nothing here needs the C++ runtime library). A lane that
// overflows its stack faults on the page below it instead of writing over
// its neighbour's.
constexpr size_t kGuard = 4096;
constexpr size_t kStacksLen = 32 * (kStack + kGuard);
thread_local char* stacks = nullptr;
pthread_key_t stacks_key;
pthread_once_t stacks_once = PTHREAD_ONCE_INIT;

void unmap_stacks(void* p) { munmap(p, kStacksLen); }
void make_stacks_key() { pthread_key_create(&stacks_key, unmap_stacks); }

char* lane_stacks() {
    if (stacks == nullptr) {
        void* p = mmap(nullptr, kStacksLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED) return nullptr;
        char* base = static_cast<char*>(p);
        for (size_t j = 0; j < 32; j++) {
            if (mprotect(base + j * (kStack + kGuard), kGuard, PROT_NONE) != 0) {
                munmap(p, kStacksLen);
                return nullptr;
            }
        }
        pthread_once(&stacks_once, make_stacks_key);
        pthread_setspecific(stacks_key, p);
        stacks = base;
    }
    return stacks;
}
thread_local char message[512];

// A lane's first frame: runs the kernel, then hands control back to the
// scheduler for good (the scheduler never resumes a finished lane).
void entry() {
    Warp* w = running;
    w->body(w->arg);
    Lane& l = w->lanes[w->current];
    l.state = State::Done;
    switch_to(l.ctx, w->sched);
    __builtin_unreachable();
}

// Runs the 32 lanes from thread `first` of the current block to the end.
const char* run_warp(Warp& w, unsigned first, unsigned threads) {
    for (unsigned j = 0; j < 32; j++) {
        Lane& l = w.lanes[j];
        unsigned t = first + j;
        if (t >= threads) {
            l.state = State::Absent;
            continue;
        }
        l.tid = {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
        prepare(l.ctx, w.stacks + j * (kStack + kGuard) + kGuard, kStack, entry);
        l.state = State::Running;
    }
    for (;;) {
        for (unsigned j = 0; j < 32; j++) {
            Lane& l = w.lanes[j];
            if (l.state != State::Running) continue;
            threadIdx = l.tid;
            w.current = static_cast<int>(j);
            switch_to(w.sched, l.ctx);
        }
        // Every lane has now exited or waits in __ballot_sync.
        unsigned waiting = 0, live = 0, mask = 0;
        bool masks_agree = true;
        for (unsigned j = 0; j < 32; j++) {
            const Lane& l = w.lanes[j];
            if (l.state == State::Waiting) {
                if (waiting != 0 && l.mask != mask) masks_agree = false;
                mask = l.mask;
                waiting |= 1u << j;
            }
            if (l.state != State::Absent) live |= 1u << j;
        }
        if (waiting == 0) return nullptr;
        const char* wrong = nullptr;
        if (!masks_agree) {
            wrong = "lanes reached __ballot_sync with different masks";
        } else if ((waiting & ~mask) != 0) {
            wrong = "a lane called __ballot_sync with a mask that leaves it out";
        } else if ((mask & ~waiting) != 0) {
            wrong = (mask & ~live) != 0 ? "__ballot_sync names a lane the warp does not have"
                                        : "lanes named in __ballot_sync's mask exited while others waited for them";
        }
        if (wrong != nullptr) {
            std::snprintf(message, sizeof message,
                          "block (%u, %u, %u), threads %u..%u: %s (mask %08x, waiting %08x)",
                          blockIdx.x, blockIdx.y, blockIdx.z, first, first + 31, wrong, mask,
                          waiting);
            return message;
        }
        unsigned vote = 0;
        for (unsigned j = 0; j < 32; j++) {
            if ((waiting >> j) & 1u && w.lanes[j].pred) vote |= 1u << j;
        }
        for (unsigned j = 0; j < 32; j++) {
            if ((waiting >> j) & 1u) {
                w.lanes[j].vote = vote;
                w.lanes[j].state = State::Running;
            }
        }
    }
}

}  // namespace

unsigned ballot(unsigned mask, int pred) {
    Warp* w = running;
    Lane& l = w->lanes[w->current];
    l.state = State::Waiting;
    l.mask = mask;
    l.pred = pred != 0;
    switch_to(l.ctx, w->sched);
    return l.vote;
}

const char* launch(const unsigned grid[3], const unsigned block[3], void (*body)(void*),
                   void* arg) {
    // The hardware's limits (compute capability 7.0 and later).
    unsigned threads = block[0] * block[1] * block[2];
    if (block[0] == 0 || block[1] == 0 || block[2] == 0 || block[0] > 1024 || block[1] > 1024 ||
        block[2] > 64 || threads > 1024 || grid[0] == 0 || grid[1] == 0 || grid[2] == 0 ||
        grid[0] > 0x7fffffffu || grid[1] > 65535 || grid[2] > 65535) {
        std::snprintf(message, sizeof message,
                      "invalid launch: grid (%u, %u, %u), block (%u, %u, %u)", grid[0], grid[1],
                      grid[2], block[0], block[1], block[2]);
        return message;
    }
    // One warp at a time a thread: its state lives here, not on the heap.
    static thread_local Warp warp;
    Warp* w = &warp;
    if (running != nullptr) {
        std::snprintf(message, sizeof message, "a launch inside a launch");
        return message;
    }
    w->stacks = lane_stacks();
    if (w->stacks == nullptr) {
        std::snprintf(message, sizeof message, "could not map the lanes' stacks");
        return message;
    }
    w->body = body;
    w->arg = arg;
    running = w;
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    const char* err = nullptr;
    for (unsigned z = 0; z < grid[2] && err == nullptr; z++) {
        for (unsigned y = 0; y < grid[1] && err == nullptr; y++) {
            for (unsigned x = 0; x < grid[0] && err == nullptr; x++) {
                blockIdx = {x, y, z};
                for (unsigned first = 0; first < threads && err == nullptr; first += 32) {
                    err = run_warp(*w, first, threads);
                }
            }
        }
    }
    running = nullptr;
    return err;
}

}  // namespace host

#include "decode.cu"
#include "probe.cu"

namespace {
struct PiecesArgs {
    void* out;
    const u8* data;
    const u32* luts;
    const Piece* pieces;
    int assign;
    u32* err;
};
struct RansArgs {
    void* out;
    const u8* data;
    const u64* tables;
    const Segment* segs;
    u32 nsegs;
    int assign;
    u32* err;
};
}  // namespace

// The launches, by word size (2 or 4). The pointers are the kernels'
// arguments, as the CUDA engine passes them; null, or a message.
extern "C" const char* padic_host_pieces(unsigned word, const unsigned grid[3],
                                         const unsigned block[3], void* out, const u8* data,
                                         const u32* luts, const u32* pieces, int assign,
                                         u32* err) {
    PiecesArgs a{out, data, luts, reinterpret_cast<const Piece*>(pieces), assign, err};
    if (word == 2) {
        return host::launch(grid, block, [](void* p) {
            auto* a = static_cast<PiecesArgs*>(p);
            pieces_u16(static_cast<u16*>(a->out), a->data, a->luts, a->pieces, a->assign, a->err);
        }, &a);
    }
    return host::launch(grid, block, [](void* p) {
        auto* a = static_cast<PiecesArgs*>(p);
        pieces_u32(static_cast<u32*>(a->out), a->data, a->luts, a->pieces, a->assign, a->err);
    }, &a);
}

extern "C" const char* padic_host_rans(unsigned word, const unsigned grid[3],
                                       const unsigned block[3], void* out, const u8* data,
                                       const u64* tables, const u32* segs, u32 nsegs,
                                       int assign, u32* err) {
    RansArgs a{out, data, tables, reinterpret_cast<const Segment*>(segs), nsegs, assign, err};
    if (word == 2) {
        return host::launch(grid, block, [](void* p) {
            auto* a = static_cast<RansArgs*>(p);
            rans_u16(static_cast<u16*>(a->out), a->data, a->tables, a->segs, a->nsegs, a->assign,
                     a->err);
        }, &a);
    }
    return host::launch(grid, block, [](void* p) {
        auto* a = static_cast<RansArgs*>(p);
        rans_u32(static_cast<u32*>(a->out), a->data, a->tables, a->segs, a->nsegs, a->assign,
                 a->err);
    }, &a);
}

// The model's own probes (src/probe.cu), by name.
extern "C" const char* padic_host_probe(const char* name, const unsigned grid[3],
                                        const unsigned block[3], unsigned* out) {
    struct Probe {
        const char* name;
        void (*kernel)(unsigned*);
    };
    static const Probe probes[] = {{"ids", probe_ids},
                                   {"vote", probe_vote},
                                   {"even_lanes", probe_even_lanes},
                                   {"diverged", probe_diverged},
                                   {"masks", probe_masks}};
    for (const Probe& p : probes) {
        if (std::strcmp(p.name, name) == 0) {
            struct A {
                void (*kernel)(unsigned*);
                unsigned* out;
            } a{p.kernel, out};
            return host::launch(grid, block, [](void* x) {
                auto* a = static_cast<A*>(x);
                a->kernel(a->out);
            }, &a);
        }
    }
    return "no such probe";
}
