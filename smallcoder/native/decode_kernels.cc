// XLA:CPU custom calls for one-token decoding steps (smallcoder.models.decode_kernels).
//
// Decoding reads every weight once per step for a handful of rows, so it is
// bound by memory bandwidth (one row) or by multiply-adds on rows kept in
// registers (16 rows). XLA:CPU's own dots run these shapes far below either
// limit, and read int8 kernels at well under 1 GB/s (docs/models.md). The
// targets, registered through XLA's typed FFI (its stable C ABI, vendored in
// xla_ffi_c_api.h), run on XLA's intra-op thread pool:
//
//   smallcoder_decoder_block  a whole decoder block for one new token per row:
//                             RMSNorm, q|k|v, RoPE, the cache writes, attention
//                             over each row's valid span, the output projection,
//                             RMSNorm, SwiGLU and the residual adds (float32 or
//                             int8 kernels, each on its own)
//   smallcoder_matmul         y (M, N) = x (M, K) @ W, W packed as (N/16, K, 16) float32,
//                             or int8 with y divided by scale (N) (Keras' int8 kernels:
//                             w = q / scale, per output channel)
//   smallcoder_matmul_norm    y = rms_norm(x) @ W (the final norm and output projection)
//
// The packed layout makes every tile of 16 output columns one contiguous
// stream. x86-64 with AVX2 and FMA only (16-lane AVX-512 products where the CPU
// has them); `smallcoder_decode_kernels_supported`
// says whether this CPU runs them (the Python side falls back to XLA if not).

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <atomic>
#include <cmath>
#include <thread>
#include <utility>
#include <vector>

#include "xla_ffi_c_api.h"

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {

// === FFI plumbing ===

XLA_FFI_Error* make_error(const XLA_FFI_Api* api, const char* message) {
  XLA_FFI_Error_Create_Args args;
  memset(&args, 0, sizeof(args));
  args.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
  args.message = message;
  args.errc = XLA_FFI_Error_Code_INVALID_ARGUMENT;
  return api->XLA_FFI_Error_Create(&args);
}

// XLA asks a handler for its metadata (the FFI version it was built with)
// when it is registered; returns true when this call was that question.
bool answered_metadata(XLA_FFI_CallFrame* frame) {
  XLA_FFI_Extension_Base* ext = frame->extension_start;
  if (ext == nullptr || ext->type != XLA_FFI_Extension_Metadata) return false;
  XLA_FFI_Metadata* metadata = reinterpret_cast<XLA_FFI_Metadata_Extension*>(ext)->metadata;
  metadata->api_version.struct_size = XLA_FFI_Api_Version_STRUCT_SIZE;
  metadata->api_version.extension_start = nullptr;
  metadata->api_version.major_version = XLA_FFI_API_MAJOR;
  metadata->api_version.minor_version = XLA_FFI_API_MINOR;
  metadata->traits = 0;
  return true;
}

XLA_FFI_Buffer* arg(XLA_FFI_CallFrame* frame, int i) {
  if (i >= frame->args.size || frame->args.types[i] != XLA_FFI_ArgType_BUFFER) return nullptr;
  return reinterpret_cast<XLA_FFI_Buffer*>(frame->args.args[i]);
}

XLA_FFI_Buffer* ret(XLA_FFI_CallFrame* frame, int i) {
  if (i >= frame->rets.size || frame->rets.types[i] != XLA_FFI_RetType_BUFFER) return nullptr;
  return reinterpret_cast<XLA_FFI_Buffer*>(frame->rets.rets[i]);
}

bool is(const XLA_FFI_Buffer* b, XLA_FFI_DataType dtype, int64_t rank) {
  return b != nullptr && b->dtype == dtype && b->rank == rank;
}

// === Work shared with XLA's intra-op thread pool ===
//
// A `Team` runs a program's phases on the calling thread and on helper tasks
// scheduled on XLA's pool; each phase's work units [0, count) are taken in
// chunks from an atomic counter, and every thread waits at the end of a phase
// until all its units are done (the next phase reads what it wrote). Chunks
// shrink as the work runs out (each takes 1 / (2 x threads) of what is left,
// guided scheduling), so the threads finish close together: with fixed
// eighths, one thread of two waited at the end of each call, 1.0-1.3 ms of a
// 33 ms batch-1 step (the output projection's last chunk alone was 19 MB of
// weights). A helper that starts late finds its phases done; the shared state
// lives until the last holder lets go of it. `parallel_for` is a one-phase
// program.

// Frees an error XLA returned to us that we handle by doing without (a thread pool).
void discard(const XLA_FFI_Api* api, XLA_FFI_Error* error) {
  XLA_FFI_Error_Destroy_Args destroy;
  memset(&destroy, 0, sizeof(destroy));
  destroy.struct_size = XLA_FFI_Error_Destroy_Args_STRUCT_SIZE;
  destroy.error = error;
  api->XLA_FFI_Error_Destroy(&destroy);
}

int64_t pool_threads(XLA_FFI_CallFrame* frame) {
  int64_t threads = 1;
  XLA_FFI_ThreadPool_NumThreads_Args args;
  memset(&args, 0, sizeof(args));
  args.struct_size = XLA_FFI_ThreadPool_NumThreads_Args_STRUCT_SIZE;
  args.ctx = frame->ctx;
  args.num_threads = &threads;
  if (XLA_FFI_Error* error = frame->api->XLA_FFI_ThreadPool_NumThreads(&args)) {
    discard(frame->api, error);
    return 1;
  }
  return threads < 1 ? 1 : threads;
}

// Program: kPhases, count(p) units in phase p, enter(p) (each thread, before
// its first unit of phase p), run(p, begin, end).
template <typename Program>
struct Team {
  Program program;
  int64_t share;
  std::atomic<int64_t> next[Program::kPhases], done[Program::kPhases];
  std::atomic<int> holders{1}, active{0};
  std::atomic<bool> closed{false};

  Team(const Program& p, int64_t threads) : program(p), share(2 * threads) {
    for (int i = 0; i < Program::kPhases; ++i) next[i] = 0, done[i] = 0;
  }

  void run() {
    for (int p = 0; p < Program::kPhases; ++p) {
      const int64_t count = program.count(p);
      int64_t begin = next[p].load(std::memory_order_relaxed), end;
      if (begin < count) {
        program.enter(p);
        for (;;) {
          do {
            if (begin >= count) break;
            int64_t chunk = (count - begin) / share;
            end = begin + (chunk > 1 ? chunk : 1);
          } while (!next[p].compare_exchange_weak(begin, end, std::memory_order_relaxed));
          if (begin >= count) break;
          program.run(p, begin, end);
          done[p].fetch_add(end - begin, std::memory_order_acq_rel);
          begin = next[p].load(std::memory_order_relaxed);
        }
      }
      for (int spins = 0; done[p].load(std::memory_order_acquire) < count; ++spins) {
        if (spins > 256) std::this_thread::yield();
      }
    }
  }
  void release() {
    if (holders.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  // A helper that starts after the caller closed the team leaves at once: the
  // caller's buffers may be gone. The caller waits for helpers still inside.
  static void helper(void* self) {
    auto* team = static_cast<Team*>(self);
    team->active.fetch_add(1, std::memory_order_seq_cst);
    if (!team->closed.load(std::memory_order_seq_cst)) team->run();
    team->active.fetch_sub(1, std::memory_order_release);
    team->release();
  }
};

template <typename Program>
void run_team(XLA_FFI_CallFrame* frame, const Program& program) {
  int64_t threads = pool_threads(frame), most = 0;
  for (int p = 0; p < Program::kPhases; ++p) most = program.count(p) > most ? program.count(p) : most;
  if (threads > most) threads = most;  // no helper without a unit to take
  if (threads <= 1) {
    for (int p = 0; p < Program::kPhases; ++p) {
      program.enter(p);
      program.run(p, 0, program.count(p));
    }
    return;
  }
  auto* team = new Team<Program>(program, threads);
  for (int64_t t = 1; t < threads; ++t) {
    team->holders.fetch_add(1, std::memory_order_relaxed);
    XLA_FFI_ThreadPool_Schedule_Args args;
    memset(&args, 0, sizeof(args));
    args.struct_size = XLA_FFI_ThreadPool_Schedule_Args_STRUCT_SIZE;
    args.ctx = frame->ctx;
    args.task = &Team<Program>::helper;
    args.data = team;
    if (XLA_FFI_Error* error = frame->api->XLA_FFI_ThreadPool_Schedule(&args)) {
      discard(frame->api, error);
      team->holders.fetch_sub(1, std::memory_order_relaxed);
      break;
    }
  }
  team->run();
  team->closed.store(true, std::memory_order_seq_cst);
  while (team->active.load(std::memory_order_seq_cst) > 0) std::this_thread::yield();
  team->release();
}

template <typename Body>
struct OnePhase {
  static constexpr int kPhases = 1;
  Body body;
  int64_t units;
  int64_t count(int) const { return units; }
  void enter(int) const {}
  void run(int, int64_t begin, int64_t end) const { body(begin, end); }
};

template <typename Body>
void parallel_for(XLA_FFI_CallFrame* frame, int64_t count, Body body) {
  run_team(frame, OnePhase<Body>{body, count});
}

}  // namespace

#if defined(__x86_64__)

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

namespace {

// === Vector helpers (8 float32 lanes) ===

typedef float v8f __attribute__((vector_size(32), aligned(4)));

inline v8f load(const float* p) { return *reinterpret_cast<const v8f*>(p); }
inline void store(float* p, v8f v) { *reinterpret_cast<v8f*>(p) = v; }
inline v8f broadcast(float a) { return v8f{a, a, a, a, a, a, a, a}; }
inline v8f load_weights(const float* p) { return load(p); }
inline v8f load_weights(const int8_t* p) {
  __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return reinterpret_cast<v8f>(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)));
}
inline float sum(v8f v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(reinterpret_cast<__m256>(v)),
                        _mm256_extractf128_ps(reinterpret_cast<__m256>(v), 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp of 8 lanes (Cephes expf: a degree-6 polynomial on [-ln2/2, ln2/2]
// times 2^n), relative error about 2e-7 (float32 round-off).
inline v8f exp8(v8f x) {
  __m256 v = reinterpret_cast<__m256>(x);
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), v);
  v = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), v);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, v, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(v, v), _mm256_add_ps(v, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return reinterpret_cast<v8f>(_mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// === What a product multiplies: x as given, RMS-normalised, or gated ===

enum class Input { kPlain, kNorm, kGated };  // gated: x is (M, 2K), gate | up

// The rows the tiles multiply, (M, K): `x` itself, or computed into `buffer`
// by each thread before its tiles run (a few microseconds per row).
// Normalised as keras.layers.RMSNormalization (x * rsqrt(mean(x^2) + eps) *
// gamma); gated as the decoder block's SwiGLU (silu(gate) * up).
const float* fused_input(Input input, const float* x, int64_t M, int64_t K, const float* gamma, float eps,
                         std::vector<float>& buffer) {
  if (input == Input::kPlain) return x;
  buffer.resize(M * K);
  const int64_t K8 = K - K % 8;
  for (int64_t m = 0; m < M; ++m) {
    float* out = buffer.data() + m * K;
    if (input == Input::kNorm) {
      const float* row = x + m * K;
      v8f squares = broadcast(0);
      for (int64_t k = 0; k < K8; k += 8) squares += load(row + k) * load(row + k);
      float total = sum(squares);
      for (int64_t k = K8; k < K; ++k) total += row[k] * row[k];
      const float inverse_rms = 1.0f / std::sqrt(total / static_cast<float>(K) + eps);
      for (int64_t k = 0; k < K; ++k) out[k] = row[k] * inverse_rms * gamma[k];
    } else {
      const float *gate = x + m * 2 * K, *up = gate + K;
      for (int64_t k = 0; k < K8; k += 8) {
        v8f g = load(gate + k);
        store(out + k, g / (broadcast(1.0f) + exp8(-g)) * load(up + k));
      }
      for (int64_t k = K8; k < K; ++k) out[k] = gate[k] / (1.0f + std::exp(-gate[k])) * up[k];
    }
  }
  return buffer.data();
}

// === Matmul over packed weight tiles ===
//
// A tile is 16 output columns of W for all K inputs, stored (K, 16) and
// contiguous. One row of x: a thread's tiles are read as four streams side
// by side, each running through a quarter of them (`four_tiles`); a chunk of
// fewer than four tiles reads each tile's quarters side by side
// (`one_row_tile`). Several rows: the tile is taken KB inputs at a time
// (int8 converted to float32 once per block into a small buffer) and a
// register block of up to 6 rows x 16 columns runs over it, so each weight
// is read from memory once and multiplied 12 times per load pair.

constexpr int64_t kTile = 16;
constexpr int64_t kBlock = 128;
constexpr int64_t kRows = 6;

// One tile for one row, read as four streams, its quarters side by side: a
// core keeps more memory reads in flight over four streams than over one.
// Used for the tiles of a chunk that `four_tiles` leaves (fewer than four).
template <typename W>
void one_row_tile(const float* x, const W* tile, int64_t K, float* out) {
  v8f a0 = broadcast(0), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
  const int64_t Q = K / 4;
  const W *wa = tile, *wb = tile + Q * kTile, *wc = tile + 2 * Q * kTile, *wd = tile + 3 * Q * kTile;
  for (int64_t k = 0; k < Q; ++k) {
    const int64_t i = k * kTile;
    v8f x0 = broadcast(x[k]), x1 = broadcast(x[Q + k]), x2 = broadcast(x[2 * Q + k]), x3 = broadcast(x[3 * Q + k]);
    a0 += x0 * load_weights(wa + i);
    a1 += x0 * load_weights(wa + i + 8);
    b0 += x1 * load_weights(wb + i);
    b1 += x1 * load_weights(wb + i + 8);
    c0 += x2 * load_weights(wc + i);
    c1 += x2 * load_weights(wc + i + 8);
    d0 += x3 * load_weights(wd + i);
    d1 += x3 * load_weights(wd + i + 8);
  }
  for (int64_t k = 4 * Q; k < K; ++k) {
    const W* w = tile + k * kTile;
    v8f xk = broadcast(x[k]);
    a0 += xk * load_weights(w);
    a1 += xk * load_weights(w + 8);
  }
  store(out, (a0 + b0) + (c0 + d0));
  store(out + 8, (a1 + b1) + (c1 + d1));
}

// Four tiles at once, `stride` weights apart: out (4, 16) = x (1, K) @ each. A
// thread's chunk of tiles is contiguous, so four streams, each running through
// a quarter of the chunk from one tile into the next, are four long sequential
// reads: in a two-thread read of the 303M step's packed weights 1.14-1.32x the
// plain one-stream read, against 1.09-1.16x for the quarters of one tile
// (whose streams restart every 12 KB); 2-core EPYC, paired rounds.
template <typename W>
void four_tiles(const float* x, const W* w, int64_t K, int64_t stride, float* out) {
  v8f a0 = broadcast(0), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
  const W *wa = w, *wb = w + stride, *wc = w + 2 * stride, *wd = w + 3 * stride;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t i = k * kTile;
    v8f xk = broadcast(x[k]);
    a0 += xk * load_weights(wa + i);
    a1 += xk * load_weights(wa + i + 8);
    b0 += xk * load_weights(wb + i);
    b1 += xk * load_weights(wb + i + 8);
    c0 += xk * load_weights(wc + i);
    c1 += xk * load_weights(wc + i + 8);
    d0 += xk * load_weights(wd + i);
    d1 += xk * load_weights(wd + i + 8);
  }
  store(out, a0);
  store(out + 8, a1);
  store(out + 16, b0);
  store(out + 24, b1);
  store(out + 32, c0);
  store(out + 40, c1);
  store(out + 48, d0);
  store(out + 56, d1);
}

// acc (R, 16) += x (R rows, stride ldx) [:, 0:kb] @ panel (kb, 16), prefetching
// `ahead_lines` cache lines from `ahead` on the way (one every other k).
template <int R>
inline void row_block(const float* x, int64_t ldx, const float* panel, int64_t kb, float* acc, const char* ahead,
                      int64_t ahead_lines) {
  v8f c[R][2];
  for (int r = 0; r < R; ++r) {
    c[r][0] = load(acc + r * kTile);
    c[r][1] = load(acc + r * kTile + 8);
  }
  auto step = [&](int64_t k) {
    v8f w0 = load(panel + k * kTile), w1 = load(panel + k * kTile + 8);
    for (int r = 0; r < R; ++r) {
      v8f xr = broadcast(x[r * ldx + k]);
      c[r][0] += xr * w0;
      c[r][1] += xr * w1;
    }
  };
  int64_t k = 0;
  for (int64_t line = 0; line < ahead_lines && k + 2 <= kb; ++line, k += 2) {
    __builtin_prefetch(ahead + 64 * line);
    step(k);
    step(k + 1);
  }
  for (; k < kb; ++k) step(k);
  for (int r = 0; r < R; ++r) {
    store(acc + r * kTile, c[r][0]);
    store(acc + r * kTile + 8, c[r][1]);
  }
}

inline void row_block_any(int rows, const float* x, int64_t ldx, const float* panel, int64_t kb, float* acc,
                          const char* ahead, int64_t ahead_lines) {
  switch (rows) {
    case 1: row_block<1>(x, ldx, panel, kb, acc, ahead, ahead_lines); break;
    case 2: row_block<2>(x, ldx, panel, kb, acc, ahead, ahead_lines); break;
    case 3: row_block<3>(x, ldx, panel, kb, acc, ahead, ahead_lines); break;
    case 4: row_block<4>(x, ldx, panel, kb, acc, ahead, ahead_lines); break;
    case 5: row_block<5>(x, ldx, panel, kb, acc, ahead, ahead_lines); break;
    default: row_block<6>(x, ldx, panel, kb, acc, ahead, ahead_lines); break;
  }
}

}  // namespace

// === The same register block, 16 lanes wide (AVX-512) ===
//
// On a CPU with AVX-512 a tile row's 16 columns are one register, and the FMA
// takes its row's x from memory as an embedded broadcast. A block runs two
// tiles side by side over up to 8 rows (`kWideTiles` x `kWideRows`: 16
// independent accumulators, enough to cover the FMA latency), each
// instruction doing twice the 8-lane block's work. Batched decoding is bound
// by these multiply-adds, not by the weight reads: the 303M step at batch 16
// ran 1.35-1.47x the 8-lane block's speed in float32 and 1.9x in int8
// (whose conversion to float32 also runs 16 wide), 2-core AMD EPYC (Zen 5),
// paired rounds in one process. One row (batch 1) keeps the 8-lane
// `four_tiles` for float32, which reads at the bandwidth either way; int8
// takes `wide_four_tiles` (1.04-1.09x).

#pragma GCC push_options
#pragma GCC target("avx512f")

namespace {

constexpr int kWideRows = 8;
constexpr int kWideTiles = 2;

// acc (P, R, 16) += x (R rows, stride ldx) [:, 0:kb] @ each of P panels (kb, 16), `stride` floats apart,
// prefetching `ahead_lines` cache lines from `ahead` and as many `ahead_stride` bytes further per panel.
template <int R, int P>
void wide_row_block(const float* x, int64_t ldx, const float* panel, int64_t stride, int64_t kb, float* acc,
                    int64_t acc_stride, const char* ahead, int64_t ahead_stride, int64_t ahead_lines) {
  __m512 c[P][R];
  for (int p = 0; p < P; ++p)
    for (int r = 0; r < R; ++r) c[p][r] = _mm512_loadu_ps(acc + p * acc_stride + r * kTile);
  auto step = [&](int64_t k) {
    __m512 w[P];
    for (int p = 0; p < P; ++p) w[p] = _mm512_loadu_ps(panel + p * stride + k * kTile);
    for (int r = 0; r < R; ++r) {
      const __m512 xr = _mm512_set1_ps(x[r * ldx + k]);
      for (int p = 0; p < P; ++p) c[p][r] = _mm512_fmadd_ps(xr, w[p], c[p][r]);
    }
  };
  int64_t k = 0;
  for (int64_t line = 0; line < ahead_lines && k + 2 <= kb; ++line, k += 2) {
    for (int p = 0; p < P; ++p) __builtin_prefetch(ahead + p * ahead_stride + 64 * line);
    step(k);
    step(k + 1);
  }
  for (; k < kb; ++k) step(k);
  for (int p = 0; p < P; ++p)
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(acc + p * acc_stride + r * kTile, c[p][r]);
}

template <int P, int... Rs>
void wide_row_block_of(int rows, const float* x, int64_t ldx, const float* panel, int64_t stride, int64_t kb,
                       float* acc, int64_t acc_stride, const char* ahead, int64_t ahead_stride, int64_t ahead_lines,
                       std::integer_sequence<int, Rs...>) {
  using Block = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, const char*,
                         int64_t, int64_t);
  static constexpr Block blocks[] = {wide_row_block<Rs + 1, P>...};
  blocks[rows - 1](x, ldx, panel, stride, kb, acc, acc_stride, ahead, ahead_stride, ahead_lines);
}

inline __m512 wide_load(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 wide_load(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// `four_tiles`, one register per tile: int8 weights take half the conversion instructions.
template <typename W>
void wide_four_tiles(const float* x, const W* w, int64_t K, int64_t stride, float* out) {
  __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
  const W *wa = w, *wb = w + stride, *wc = w + 2 * stride, *wd = w + 3 * stride;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t i = k * kTile;
    const __m512 xk = _mm512_set1_ps(x[k]);
    a = _mm512_fmadd_ps(xk, wide_load(wa + i), a);
    b = _mm512_fmadd_ps(xk, wide_load(wb + i), b);
    c = _mm512_fmadd_ps(xk, wide_load(wc + i), c);
    d = _mm512_fmadd_ps(xk, wide_load(wd + i), d);
  }
  _mm512_storeu_ps(out, a);
  _mm512_storeu_ps(out + 16, b);
  _mm512_storeu_ps(out + 32, c);
  _mm512_storeu_ps(out + 48, d);
}

// A panel of kb x 16 weights as float32: a float32 panel as it is, int8 converted into `buffer`.
inline const float* wide_panel(const float* w, int64_t, float*) { return w; }
inline const float* wide_panel(const int8_t* w, int64_t count, float* buffer) {
  for (int64_t i = 0; i < count; i += 16) _mm512_storeu_ps(buffer + i, wide_load(w + i));
  return buffer;
}

template <int P>
void wide_row_block_any(int rows, const float* x, int64_t ldx, const float* panel, int64_t stride, int64_t kb,
                        float* acc, int64_t acc_stride, const char* ahead, int64_t ahead_stride,
                        int64_t ahead_lines) {
  wide_row_block_of<P>(rows, x, ldx, panel, stride, kb, acc, acc_stride, ahead, ahead_stride, ahead_lines,
                       std::make_integer_sequence<int, kWideRows>());
}

}  // namespace

#pragma GCC pop_options

namespace {

// Whether the products run 16 lanes wide: where the CPU has AVX-512, unless
// `smallcoder_decode_kernels_vector_bits(256)` asked for 8 (tests, A/B).
std::atomic<int> g_vector_bits{0};  // 0: not decided yet

int vector_bits() {
  int bits = g_vector_bits.load(std::memory_order_relaxed);
  if (bits == 0) {
    __builtin_cpu_init();
    bits = __builtin_cpu_supports("avx512f") ? 512 : 256;
    g_vector_bits.store(bits, std::memory_order_relaxed);
  }
  return bits;
}

inline const float* as_panel(const float* w, int64_t, float*) { return w; }
inline const float* as_panel(const int8_t* w, int64_t count, float* buffer) {
  for (int64_t i = 0; i < count; i += 8) store(buffer + i, load_weights(w + i));
  return buffer;
}

// The register blocks as `rows_tiles` runs them: 8 lanes wide (AVX2) over one
// tile, or 16 wide (AVX-512) over P tiles side by side.
struct NarrowBlock {
  static constexpr int64_t kMostRows = kRows;
  template <typename W>
  static const float* panel(const W* w, int64_t count, float* buffer) { return as_panel(w, count, buffer); }
  template <int P>
  static void run(int rows, const float* x, int64_t ldx, const float* panel, int64_t, int64_t kb, float* acc, int64_t,
                  const char* ahead, int64_t, int64_t ahead_lines) {
    static_assert(P == 1, "the 8-lane block runs one tile");
    row_block_any(rows, x, ldx, panel, kb, acc, ahead, ahead_lines);
  }
};

struct WideBlock {
  static constexpr int64_t kMostRows = kWideRows;
  template <typename W>
  static const float* panel(const W* w, int64_t count, float* buffer) { return wide_panel(w, count, buffer); }
  template <int P>
  static void run(int rows, const float* x, int64_t ldx, const float* panel, int64_t stride, int64_t kb, float* acc,
                  int64_t acc_stride, const char* ahead, int64_t ahead_stride, int64_t ahead_lines) {
    wide_row_block_any<P>(rows, x, ldx, panel, stride, kb, acc, acc_stride, ahead, ahead_stride, ahead_lines);
  }
};

// acc (P, M, 16) = x (M, K) @ P consecutive tiles from `tile`, with `Block`'s
// register blocks: as few as its registers allow, their rows as even as can be
// (16 rows: 8 + 8 wide, 6 + 5 + 5 narrow). The weights stream from memory once
// per step, so while the register blocks run over one panel the next panel (of
// these tiles, or the next P tiles' first) is prefetched, spread over the row
// blocks: the hardware prefetcher alone leaves the cores waiting at 16 rows (it
// sees bursts, not a steady stream).
template <typename Block, int P, typename W>
void rows_tiles(const float* x, int64_t M, const W* tile, const W* tile_end, int64_t K, float* acc, float* buffer) {
  memset(acc, 0, sizeof(float) * P * M * kTile);
  const int64_t size = K * kTile;  // one tile
  const int64_t blocks = (M + Block::kMostRows - 1) / Block::kMostRows, block_rows = (M + blocks - 1) / blocks;
  for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
    int64_t kb = K - k0 < kBlock ? K - k0 : kBlock;
    const W* next = k0 + kb < K ? tile + (k0 + kb) * kTile : tile + P * size;
    int64_t rest = K - k0 - kb, next_rows = rest > 0 && rest < kBlock ? rest : (K < kBlock ? K : kBlock);
    int64_t lines = next + (P - 1) * size < tile_end ? next_rows * kTile * static_cast<int64_t>(sizeof(W)) / 64 : 0;
    int64_t per_block = (lines + blocks - 1) / blocks;
    const float* panel = Block::panel(tile + k0 * kTile, kb * kTile, buffer);
    for (int p = 1; p < P; ++p) Block::panel(tile + p * size + k0 * kTile, kb * kTile, buffer + p * kBlock * kTile);
    const int64_t stride = sizeof(W) == sizeof(float) ? size : kBlock * kTile;  // between the P panels
    for (int64_t m = 0, j = 0; m < M; m += block_rows, ++j) {
      int rows = static_cast<int>(M - m < block_rows ? M - m : block_rows);
      int64_t first = j * per_block, count = lines - first < per_block ? lines - first : per_block;
      Block::template run<P>(rows, x + m * K + k0, K, panel, stride, kb, acc + m * kTile, M * kTile,
                             reinterpret_cast<const char*>(next) + 64 * first, static_cast<int64_t>(size * sizeof(W)),
                             count > 0 ? count : 0);
    }
  }
}

// y[:, tile t] from its accumulators acc (M, 16): divided by scale if given, plus residual (M, N) if given.
inline void write_tile(const float* acc, const float* scale, const float* residual, float* y, int64_t M, int64_t N,
                       int64_t t) {
  int64_t n0 = t * kTile, width = N - n0 < kTile ? N - n0 : kTile;
  for (int64_t m = 0; m < M; ++m) {
    float* out = y + m * N + n0;
    const float* in = acc + m * kTile;
    if (scale) {
      for (int64_t j = 0; j < width; ++j) out[j] = in[j] / scale[n0 + j];
    } else {
      memcpy(out, in, sizeof(float) * width);
    }
    if (residual) {
      for (int64_t j = 0; j < width; ++j) out[j] += residual[m * N + n0 + j];
    }
  }
}

// y[:, tiles t0..t1) for several rows: P tiles at a time, then one at a time.
template <typename Block, int P, typename W>
void rows_matmul(const float* x, const W* w, const float* scale, const float* residual, float* y, int64_t M,
                 int64_t K, int64_t N, int64_t t0, int64_t t1, float* acc, float* buffer) {
  const int64_t size = K * kTile;
  int64_t t = t0;
  for (; t + P <= t1; t += P) {
    rows_tiles<Block, P>(x, M, w + t * size, w + t1 * size, K, acc, buffer);
    for (int p = 0; p < P; ++p) write_tile(acc + p * M * kTile, scale, residual, y, M, N, t + p);
  }
  for (; t < t1; ++t) {
    rows_tiles<Block, 1>(x, M, w + t * size, w + t1 * size, K, acc, buffer);
    write_tile(acc, scale, residual, y, M, N, t);
  }
}

// y[:, tiles t0..t1) of x @ W (divided by scale if given), plus residual (M, N) if given.
template <typename W>
void matmul_tiles(const float* x, const W* w, const float* scale, const float* residual, float* y, int64_t M,
                  int64_t K, int64_t N, int64_t t0, int64_t t1, float* acc, float* buffer) {
  const int64_t size = K * kTile;
  const bool wide = vector_bits() == 512;
  if (M == 1) {
    const int64_t quarter = (t1 - t0) / 4;
    for (int64_t t = t0; t < t0 + quarter; ++t) {
      if (wide && sizeof(W) == 1) {  // float32 reads at the bandwidth either way (0.97-1.0x wide)
        wide_four_tiles(x, w + t * size, K, quarter * size, acc);
      } else {
        four_tiles(x, w + t * size, K, quarter * size, acc);
      }
      for (int64_t s = 0; s < 4; ++s) write_tile(acc + s * kTile, scale, residual, y, 1, N, t + s * quarter);
    }
    for (int64_t t = t0 + 4 * quarter; t < t1; ++t) {
      one_row_tile(x, w + t * size, K, acc);
      write_tile(acc, scale, residual, y, 1, N, t);
    }
    return;
  }
  if (wide) {
    rows_matmul<WideBlock, kWideTiles>(x, w, scale, residual, y, M, K, N, t0, t1, acc, buffer);
  } else {
    rows_matmul<NarrowBlock, 1>(x, w, scale, residual, y, M, K, N, t0, t1, acc, buffer);
  }
}

// Per-thread scratch: accumulators of up to kMaxRows rows, one converted
// panel, and the thread's fused input (`fused_input`).
constexpr int64_t kMaxRows = 256;
thread_local float t_acc[kWideTiles * kMaxRows * kTile];
thread_local float t_buffer[kWideTiles * kBlock * kTile];
thread_local std::vector<float> t_input;

// A packed kernel (T, K, 16), float32 or int8 with its scale (T * 16).
struct Packed {
  const void* tiles;
  const float* scale;  // int8 only
  int64_t T, K, N;     // N: the columns y has
  bool int8;
};

void packed_tiles(const Packed& w, const float* x, const float* residual, float* y, int64_t M, int64_t t0,
                  int64_t t1) {
  if (w.int8) {
    matmul_tiles(x, static_cast<const int8_t*>(w.tiles), w.scale, residual, y, M, w.K, w.N, t0, t1, t_acc, t_buffer);
  } else {
    matmul_tiles(x, static_cast<const float*>(w.tiles), nullptr, residual, y, M, w.K, w.N, t0, t1, t_acc, t_buffer);
  }
}

// A packed kernel's two inputs at i, i + 1: tiles (T, K, 16) float32 or int8, and the scale: float32 (T * 16)
// for int8, (0,) for float32. False unless they make a (K, N) kernel.
bool packed_arg(XLA_FFI_CallFrame* frame, int i, int64_t K, int64_t N, Packed* w) {
  XLA_FFI_Buffer *tiles = arg(frame, i), *scale = arg(frame, i + 1);
  bool int8 = is(tiles, XLA_FFI_DataType_S8, 3);
  if (!(int8 || is(tiles, XLA_FFI_DataType_F32, 3)) || !is(scale, XLA_FFI_DataType_F32, 1)) return false;
  int64_t T = tiles->dims[0];
  if (tiles->dims[1] != K || tiles->dims[2] != kTile || N > T * kTile || N <= (T - 1) * kTile) return false;
  if (int8 && scale->dims[0] < N) return false;
  *w = {tiles->data, int8 ? static_cast<const float*>(scale->data) : nullptr, T, K, N, int8};
  return true;
}

// Inputs in order: x; gamma and eps (norm); the packed kernel's tiles and scale.
XLA_FFI_Error* matmul(XLA_FFI_CallFrame* frame, bool norm) {
  const XLA_FFI_Api* api = frame->api;
  int i = 0;
  XLA_FFI_Buffer* x = arg(frame, i++);
  XLA_FFI_Buffer* gamma = norm ? arg(frame, i++) : nullptr;
  XLA_FFI_Buffer* eps = norm ? arg(frame, i++) : nullptr;
  XLA_FFI_Buffer* y = ret(frame, 0);
  Packed w;
  if (!is(x, XLA_FFI_DataType_F32, 2) || !is(y, XLA_FFI_DataType_F32, 2) ||
      (norm && !is(gamma, XLA_FFI_DataType_F32, 1)) || (norm && !is(eps, XLA_FFI_DataType_F32, 0)))
    return make_error(api, "smallcoder matmul: expected x f32 (M, K), [gamma f32 (K), eps f32 scalar], "
                           "packed w (T, K, 16) with its scale, y f32 (M, N)");
  int64_t M = x->dims[0], K = x->dims[1], N = y->dims[1];
  if (y->dims[0] != M || (norm && gamma->dims[0] != K) || !packed_arg(frame, i, K, N, &w))
    return make_error(api, "smallcoder matmul: shapes of x, gamma, packed w, scale and y do not agree");
  if (M > kMaxRows) return make_error(api, "smallcoder matmul: more than 256 rows (use XLA's dot for prefill)");
  const float* xp = fused_input(norm ? Input::kNorm : Input::kPlain, static_cast<const float*>(x->data), M, K,
                                norm ? static_cast<const float*>(gamma->data) : nullptr,
                                norm ? *static_cast<const float*>(eps->data) : 0.0f, t_input);
  float* yp = static_cast<float*>(y->data);
  parallel_for(frame, w.T, [=](int64_t t0, int64_t t1) { packed_tiles(w, xp, nullptr, yp, M, t0, t1); });
  return nullptr;
}

// === Attention of one new query per row over the cache ===
//
// One KV head's G query heads (G x H, consecutive) over `length` cached keys
// and values (length x H each): out (G x H). Scores and softmax in float32.
// The decoder block calls it for cache row (b, k) with query heads k*G ..
// k*G+G-1 (as `cached_attention` groups them) over positions start[b] .. index.

void attend(const float* q, const float* keys, const float* values, int64_t length, int64_t G, int64_t H,
            float* scores, float* out) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(H));
  const int64_t H8 = H - H % 8;
  for (int64_t g = 0; g < G; ++g) {
    const float* qg = q + g * H;
    float* sg = scores + g * length;
    for (int64_t s = 0; s < length; ++s) {
      const float* k = keys + s * H;
      v8f acc = broadcast(0);
      for (int64_t h = 0; h < H8; h += 8) acc += load(qg + h) * load(k + h);
      float dot = sum(acc);
      for (int64_t h = H8; h < H; ++h) dot += qg[h] * k[h];
      sg[s] = dot * scale;
    }
    float high = sg[0];
    for (int64_t s = 1; s < length; ++s) high = sg[s] > high ? sg[s] : high;
    v8f total8 = broadcast(0);
    int64_t s = 0;
    for (; s + 8 <= length; s += 8) {
      v8f e = exp8(load(sg + s) - broadcast(high));
      store(sg + s, e);
      total8 += e;
    }
    float total = sum(total8);
    for (; s < length; ++s) {
      sg[s] = std::exp(sg[s] - high);
      total += sg[s];
    }
    float* og = out + g * H;
    for (int64_t h = 0; h < H; ++h) og[h] = 0.0f;
    for (int64_t s2 = 0; s2 < length; ++s2) {
      const float* v = values + s2 * H;
      v8f p = broadcast(sg[s2]);
      for (int64_t h = 0; h < H8; h += 8) store(og + h, load(og + h) + p * load(v + h));
      for (int64_t h = H8; h < H; ++h) og[h] += sg[s2] * v[h];
    }
    const float inverse = 1.0f / total;
    for (int64_t h = 0; h < H; ++h) og[h] *= inverse;
  }
}

thread_local float* t_scores = nullptr;
thread_local int64_t t_scores_size = 0;

float* scores_buffer(int64_t size) {
  if (size > t_scores_size) {
    delete[] t_scores;
    t_scores = new float[size];
    t_scores_size = size;
  }
  return t_scores;
}

// === A decoder block in one call ===
//
// Called op by op, a batch-1 block of the 303M model was five custom calls
// and XLA's RoPE and cache writes between them: the memory bus idled between
// the calls, 1.4-1.7 ms of a 42 ms step (a profile of the jitted step: gaps
// between one call's last weight read and the next call's first, the longest
// around the RoPE ops). `smallcoder_decoder_block` runs the whole block as
// phases on one team of threads (as ggml's graph compute runs a graph):
//
//   0  qkv (B, (N + 2Kv) H) = rms_norm(x) @ Wqkv                      (tiles)
//   1  per cache row (b, k): RoPE of its G query heads and its key, the key
//      and value written at `index`, attention over start[b] .. index    (rows)
//   2  x1 = x + attended @ Wo                                            (tiles)
//   3  gate_up (B, 2F) = rms_norm(x1) @ Wgu                              (tiles)
//   4  y = x1 + (silu(gate) * up) @ Wd                                   (tiles)
//
// The phases run as a `Team`; a phase's fused input (norm, gate) is computed
// by each thread for itself (a few microseconds) rather than behind one more
// barrier.

// keras-hub's RotaryEmbedding: x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1).
inline void rope(const float* x, const float* cos, const float* sin, int64_t H, float* out) {
  const int64_t half = H / 2;
  for (int64_t i = 0; i < half; ++i) out[i] = x[i] * cos[i] + (-x[i + half]) * sin[i];
  for (int64_t i = half; i < H; ++i) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
}

thread_local std::vector<float> t_query;

struct DecoderBlock {
  static constexpr int kPhases = 5;
  int64_t B, D, N, Kv, G, H, S, F;
  int32_t index;
  const int32_t* start;
  const float *x, *cos, *sin, *gamma1, *gamma2;
  float eps1, eps2;
  float *keys, *values;
  Packed qkv, out, gate_up, down;
  float *qkv_rows, *attended, *x1, *gate_up_rows, *y;  // (B, (N + 2Kv) H), (B, N H), (B, D), (B, 2F), (B, D)

  int64_t count(int p) const {
    switch (p) {
      case 0: return qkv.T;
      case 1: return B * Kv;
      case 2: return out.T;
      case 3: return gate_up.T;
      default: return down.T;
    }
  }
  // This thread's input rows for phase p (norm or gate computed into t_input).
  void enter(int p) const {
    if (p == 0) fused_input(Input::kNorm, x, B, D, gamma1, eps1, t_input);
    if (p == 3) fused_input(Input::kNorm, x1, B, D, gamma2, eps2, t_input);
    if (p == 4) fused_input(Input::kGated, gate_up_rows, B, F, nullptr, 0.0f, t_input);
  }
  void run(int p, int64_t begin, int64_t end) const {
    switch (p) {
      case 0: return packed_tiles(qkv, t_input.data(), nullptr, qkv_rows, B, begin, end);
      case 1: return attend_rows(begin, end);
      case 2: return packed_tiles(out, attended, x, x1, B, begin, end);
      case 3: return packed_tiles(gate_up, t_input.data(), nullptr, gate_up_rows, B, begin, end);
      default: return packed_tiles(down, t_input.data(), x1, y, B, begin, end);
    }
  }
  void attend_rows(int64_t r0, int64_t r1) const {
    const int64_t width = (N + 2 * Kv) * H;
    t_query.resize(G * H);
    float* scores = scores_buffer(G * (S + 8));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / Kv, k = r % Kv;
      const float *row = qkv_rows + b * width, *c = cos + b * H, *s = sin + b * H;
      for (int64_t g = 0; g < G; ++g) rope(row + (k * G + g) * H, c, s, H, t_query.data() + g * H);
      rope(row + (N + k) * H, c, s, H, keys + (r * S + index) * H);
      memcpy(values + (r * S + index) * H, row + (N + Kv + k) * H, sizeof(float) * H);
      const int64_t first = start[b] < 0 ? 0 : start[b], length = index - first + 1;
      float* o = attended + (b * N + k * G) * H;
      if (length <= 0) {
        memset(o, 0, sizeof(float) * G * H);
        continue;
      }
      attend(t_query.data(), keys + (r * S + first) * H, values + (r * S + first) * H, length, G, H, scores, o);
    }
  }
};

thread_local std::vector<float> t_block;  // the calling thread's shared rows: qkv, attended, x1, gate_up

// Inputs: x (B, D); cos, sin (B, H); key and value caches (B*Kv, S, H) (aliased to outputs 1 and 2); start
// int32 (B); index int32; gamma1 (D), eps1, gamma2 (D), eps2; then for qkv, output, gate_up, down: the packed
// tiles (float32 or int8) and the scale (float32 (T * 16) for int8, (0,) for float32). Outputs: y (B, D), caches.
XLA_FFI_Error* decoder_block(XLA_FFI_CallFrame* frame) {
  const XLA_FFI_Api* api = frame->api;
  XLA_FFI_Buffer *x = arg(frame, 0), *cos = arg(frame, 1), *sin = arg(frame, 2), *kc = arg(frame, 3),
                 *vc = arg(frame, 4), *st = arg(frame, 5), *ix = arg(frame, 6), *g1 = arg(frame, 7),
                 *e1 = arg(frame, 8), *g2 = arg(frame, 9), *e2 = arg(frame, 10);
  XLA_FFI_Buffer *y = ret(frame, 0), *ko = ret(frame, 1), *vo = ret(frame, 2);
  const char* layout = "smallcoder decoder_block: expected x f32 (B, D), cos and sin f32 (B, H), key and value "
                       "caches f32 (B*Kv, S, H), start int32 (B), index int32, gammas f32 (D) with eps f32 scalars, "
                       "packed qkv, output, gate_up and down kernels with their scales, y f32 (B, D)";
  if (!is(x, XLA_FFI_DataType_F32, 2) || !is(cos, XLA_FFI_DataType_F32, 2) || !is(sin, XLA_FFI_DataType_F32, 2) ||
      !is(kc, XLA_FFI_DataType_F32, 3) || !is(vc, XLA_FFI_DataType_F32, 3) || !is(st, XLA_FFI_DataType_S32, 1) ||
      !is(ix, XLA_FFI_DataType_S32, 0) || !is(g1, XLA_FFI_DataType_F32, 1) || !is(e1, XLA_FFI_DataType_F32, 0) ||
      !is(g2, XLA_FFI_DataType_F32, 1) || !is(e2, XLA_FFI_DataType_F32, 0) || !is(y, XLA_FFI_DataType_F32, 2) ||
      !is(ko, XLA_FFI_DataType_F32, 3) || !is(vo, XLA_FFI_DataType_F32, 3))
    return make_error(api, layout);
  DecoderBlock block;
  block.B = x->dims[0], block.D = x->dims[1], block.H = cos->dims[1], block.S = kc->dims[1];
  const int64_t B = block.B, D = block.D, H = block.H, rows = kc->dims[0];
  XLA_FFI_Buffer* out_tiles = arg(frame, 13);
  XLA_FFI_Buffer* down_tiles = arg(frame, 17);
  if (B == 0 || H % 2 || rows % B || out_tiles == nullptr || out_tiles->rank != 3 || down_tiles == nullptr ||
      down_tiles->rank != 3)
    return make_error(api, layout);
  block.Kv = rows / B, block.N = out_tiles->dims[1] / H, block.F = down_tiles->dims[1];
  const int64_t N = block.N, Kv = block.Kv, S = block.S;
  if (N * H != out_tiles->dims[1] || N % Kv || cos->dims[0] != B || sin->dims[0] != B || sin->dims[1] != H ||
      kc->dims[2] != H || vc->dims[0] != rows || vc->dims[1] != S || vc->dims[2] != H || st->dims[0] != B ||
      g1->dims[0] != D || g2->dims[0] != D || y->dims[0] != B || y->dims[1] != D ||
      !packed_arg(frame, 11, D, (N + 2 * Kv) * H, &block.qkv) || !packed_arg(frame, 13, N * H, D, &block.out) ||
      !packed_arg(frame, 15, D, 2 * block.F, &block.gate_up) || !packed_arg(frame, 17, block.F, D, &block.down))
    return make_error(api, "smallcoder decoder_block: shapes of x, cos, sin, caches, start, gammas, the packed "
                           "kernels (qkv (D, (N + 2Kv) H), output (N H, D), gate_up (D, 2F), down (F, D)) and y "
                           "do not agree");
  if (B > kMaxRows) return make_error(api, "smallcoder decoder_block: more than 256 rows");
  block.G = N / Kv;
  block.index = *static_cast<const int32_t*>(ix->data);
  if (block.index < 0 || block.index >= S) return make_error(api, "smallcoder decoder_block: index outside the cache");
  // The caches are aliased in and out; should XLA hand separate buffers, the call copies them first.
  const size_t cache_bytes = sizeof(float) * rows * S * H;
  if (ko->data != kc->data) memcpy(ko->data, kc->data, cache_bytes);
  if (vo->data != vc->data) memcpy(vo->data, vc->data, cache_bytes);
  block.keys = static_cast<float*>(ko->data), block.values = static_cast<float*>(vo->data);
  block.start = static_cast<const int32_t*>(st->data);
  block.x = static_cast<const float*>(x->data), block.cos = static_cast<const float*>(cos->data);
  block.sin = static_cast<const float*>(sin->data);
  block.gamma1 = static_cast<const float*>(g1->data), block.eps1 = *static_cast<const float*>(e1->data);
  block.gamma2 = static_cast<const float*>(g2->data), block.eps2 = *static_cast<const float*>(e2->data);
  const int64_t width = (N + 2 * Kv) * H;
  t_block.resize(B * (width + N * H + D + 2 * block.F));
  block.qkv_rows = t_block.data();
  block.attended = block.qkv_rows + B * width;
  block.x1 = block.attended + B * N * H;
  block.gate_up_rows = block.x1 + B * D;
  block.y = static_cast<float*>(y->data);
  run_team(frame, block);
  return nullptr;
}

bool cpu_supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

#pragma GCC pop_options

#define DISPATCH(call) (cpu_supported() ? (call) : make_error(frame->api, "smallcoder decode kernels need AVX2 and FMA"))

#else  // not x86-64

namespace {
bool cpu_supported() { return false; }
}  // namespace
#define DISPATCH(call) make_error(frame->api, "smallcoder decode kernels are built for x86-64 only")

#endif

EXPORT int smallcoder_decode_kernels_supported() { return cpu_supported() ? 1 : 0; }

// The register blocks' width in bits: 512 where the CPU has AVX-512, else 256. `bits` 256 makes them
// 8 lanes wide on any CPU, 512 asks for 16 lanes (granted only with AVX-512), 0 only asks.
EXPORT int smallcoder_decode_kernels_vector_bits(int bits) {
#if defined(__x86_64__)
  if (bits == 256) g_vector_bits.store(256);
  if (bits == 512) {
    g_vector_bits.store(0);
    vector_bits();
  }
  return cpu_supported() ? vector_bits() : 0;
#else
  return 0;
#endif
}

EXPORT XLA_FFI_Error* smallcoder_matmul(XLA_FFI_CallFrame* frame) {
  if (answered_metadata(frame) || frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return nullptr;
  return DISPATCH(matmul(frame, false));
}

EXPORT XLA_FFI_Error* smallcoder_matmul_norm(XLA_FFI_CallFrame* frame) {
  if (answered_metadata(frame) || frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return nullptr;
  return DISPATCH(matmul(frame, true));
}

EXPORT XLA_FFI_Error* smallcoder_decoder_block(XLA_FFI_CallFrame* frame) {
  if (answered_metadata(frame) || frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return nullptr;
  return DISPATCH(decoder_block(frame));
}

