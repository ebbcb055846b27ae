// indexer._fastscan.refine: the refinement kernel (indexer.refine_kernel's numba `_refine`
// in C++; issue 15). Per query q and candidate j (pos[q, j], -1 = none):
//   x = the stored row: uint8, float16, float32 values, or sq8 ((code - base) * step: the
//       row's float16 step after its dim codes, its sign bit for base 0, else base 128;
//       shards.vector_store)
//   l2: s = sum (x - q)^2; ip: s = sum x q; cosine: s = (sum x q) / (|q| |x|)
// then the k best by s (l2 ascending, ip / cosine descending), ties in candidate order, a
// NaN last, empty slots (inf key, `empty` score) last. The sums run in SIMD lanes (FMA), so
// they differ from the numba reference in the last bits; the order rule is the same.
//
// AVX-512 (16 values at a time, a scalar tail for any dim), or portable C++. Rows are random
// accesses into the store; a software prefetch of the next candidates' rows measured no gain
// (the out-of-order core already overlaps the independent loads), so there is none.
#include "_native.h"

#include <cmath>
#include <cstring>

namespace snapline_native {
namespace {

enum Kind { KIND_UINT8 = 0, KIND_FLOAT16 = 1, KIND_FLOAT32 = 2, KIND_SQ8 = 3 };
enum Mode { MODE_L2 = 0, MODE_IP = 1, MODE_COSINE = 2 };

struct RefineArgs {
    const float* queries;  // (nq, d)
    const int64_t* pos;    // (nq, r)
    const uint8_t* rows;   // (n, width) values of the kind's size
    const float* f16;      // 65536 float32: the value of each float16 bit pattern
    float* out_d;          // (nq, k)
    int64_t* out_p;
    Py_ssize_t nq, d, r, n, k, row_bytes;
    int kind, mode, level;
    float empty;
    std::atomic<int> bad{0};
};

struct Sums {
    float a = 0.0f;  // l2: squared distance; ip, cosine: dot product
    float xx = 0.0f; // cosine: |x|^2
};

inline float value(const RefineArgs& a, const uint8_t* row, Py_ssize_t t, float base, float step) {
    switch (a.kind) {
        case KIND_UINT8: return static_cast<float>(row[t]);
        case KIND_FLOAT16: {
            uint16_t bits;
            std::memcpy(&bits, row + 2 * t, 2);
            return a.f16[bits];
        }
        case KIND_FLOAT32: {
            float x;
            std::memcpy(&x, row + 4 * t, 4);
            return x;
        }
        default: return (static_cast<float>(row[t]) - base) * step;
    }
}

inline void sq8_params(const RefineArgs& a, const uint8_t* row, float& base, float& step) {
    uint16_t bits;
    std::memcpy(&bits, row + a.d, 2);
    step = a.f16[bits & 0x7fffu];
    base = (bits & 0x8000u) ? 0.0f : 128.0f;
}

// values [t0, d) one at a time
inline void sums_scalar(const RefineArgs& a, const uint8_t* row, const float* q, Py_ssize_t t0, float base,
                        float step, Sums& s) {
    for (Py_ssize_t t = t0; t < a.d; ++t) {
        const float x = value(a, row, t, base, step);
        if (a.mode == MODE_L2) {
            const float diff = x - q[t];
            s.a += diff * diff;
        } else {
            s.a += x * q[t];
            s.xx += x * x;
        }
    }
}

#if FS_X86
__attribute__((target("avx512f,avx512bw"))) inline __m512 load16(const RefineArgs& a, const uint8_t* row,
                                                                 Py_ssize_t t, __m512 base, __m512 step) {
    switch (a.kind) {
        case KIND_UINT8:
            return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + t))));
        case KIND_FLOAT16:
            return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * t)));
        case KIND_FLOAT32: return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + t);
        default:
            return _mm512_mul_ps(
                _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + t)))),
                              base),
                step);
    }
}

__attribute__((target("avx512f,avx512bw"))) Sums sums_avx512(const RefineArgs& a, const uint8_t* row, const float* q) {
    float base = 0.0f, step = 0.0f;
    if (a.kind == KIND_SQ8) sq8_params(a, row, base, step);
    const __m512 vb = _mm512_set1_ps(base), vs = _mm512_set1_ps(step);
    __m512 acc = _mm512_setzero_ps(), xx = _mm512_setzero_ps();
    const Py_ssize_t full = a.d / 16 * 16;
    for (Py_ssize_t t = 0; t < full; t += 16) {
        const __m512 x = load16(a, row, t, vb, vs);
        const __m512 qv = _mm512_loadu_ps(q + t);
        if (a.mode == MODE_L2) {
            const __m512 diff = _mm512_sub_ps(x, qv);
            acc = _mm512_fmadd_ps(diff, diff, acc);
        } else {
            acc = _mm512_fmadd_ps(x, qv, acc);
            xx = _mm512_fmadd_ps(x, x, xx);
        }
    }
    Sums s;
    s.a = _mm512_reduce_add_ps(acc);
    s.xx = _mm512_reduce_add_ps(xx);
    sums_scalar(a, row, q, full, base, step, s);
    return s;
}
#endif

Sums sums_portable(const RefineArgs& a, const uint8_t* row, const float* q) {
    float base = 0.0f, step = 0.0f;
    if (a.kind == KIND_SQ8) sq8_params(a, row, base, step);
    Sums s;
    sums_scalar(a, row, q, 0, base, step, s);
    return s;
}

// A total order of float keys as unsigned integers: -0 as +0, every NaN after +inf.
inline uint32_t order_key(float x) {
    if (x != x) return 0xffc00000u;
    if (x == 0.0f) x = 0.0f;
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

struct Scratch {
    std::vector<uint64_t> keys;  // order key << 32 | candidate
    std::vector<float> score;
};

void refine_query(RefineArgs& a, Py_ssize_t qi, Scratch& w) {
    const float* q = a.queries + qi * a.d;
    const int64_t* pos = a.pos + qi * a.r;
    float q_norm = 0.0f;
    if (a.mode == MODE_COSINE) {
        for (Py_ssize_t t = 0; t < a.d; ++t) q_norm += q[t] * q[t];
        q_norm = std::max(std::sqrt(q_norm), 1e-30f);
    }
    for (Py_ssize_t j = 0; j < a.r; ++j) {
        const int64_t p = pos[j];
        float key = kInf, s = a.empty;
        if (p >= a.n) {
            a.bad = 1;
        } else if (p >= 0) {
            const uint8_t* row = a.rows + p * a.row_bytes;
#if FS_X86
            const Sums sums = a.level == LEVEL_AVX512 ? sums_avx512(a, row, q) : sums_portable(a, row, q);
#else
            const Sums sums = sums_portable(a, row, q);
#endif
            s = a.mode == MODE_COSINE ? sums.a / (q_norm * std::max(std::sqrt(sums.xx), 1e-30f)) : sums.a;
            key = a.mode == MODE_L2 ? s : -s;
        }
        w.score[j] = s;
        w.keys[j] = (static_cast<uint64_t>(order_key(key)) << 32) | static_cast<uint64_t>(j);
    }
    auto* first = w.keys.data();
    if (a.k < a.r) std::nth_element(first, first + a.k, first + a.r);
    std::sort(first, first + a.k);
    for (Py_ssize_t i = 0; i < a.k; ++i) {
        const Py_ssize_t j = static_cast<Py_ssize_t>(w.keys[i] & 0xffffffffu);
        a.out_p[qi * a.k + i] = pos[j];
        a.out_d[qi * a.k + i] = pos[j] >= 0 ? w.score[j] : a.empty;
    }
}

}  // namespace

PyObject* py_refine(PyObject*, PyObject* args) {
    Buffers bufs;
    Py_buffer* v = bufs.b;
    Py_ssize_t nq, d, r, n, width, k;
    int kind, mode, threads, level;
    float empty;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*nnnnnniifii", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &nq, &d,
                          &r, &n, &width, &k, &kind, &mode, &empty, &threads, &level))
        return nullptr;
    bufs.count = 6;
    static const Py_ssize_t item[4] = {1, 2, 4, 1};
    if (d < 1 || r < 1 || k < 1 || k > r || r >= (Py_ssize_t{1} << 32) || kind < KIND_UINT8 || kind > KIND_SQ8 ||
        mode < MODE_L2 || mode > MODE_COSINE || width != d + (kind == KIND_SQ8 ? 2 : 0) || level < 0 ||
        level > cpu_level()) {
        PyErr_SetString(PyExc_ValueError, "_fastscan.refine: bad d, r, k, width, kind, mode or level");
        return nullptr;
    }
    const Py_ssize_t row_bytes = width * item[kind];
    const Py_ssize_t expect[6] = {nq * d * 4, nq * r * 8, n * row_bytes, 65536 * 4, nq * k * 4, nq * k * 8};
    if (!sizes_match("_fastscan.refine", v, expect, 6, -1)) return nullptr;
    RefineArgs a;
    a.queries = static_cast<const float*>(v[0].buf);
    a.pos = static_cast<const int64_t*>(v[1].buf);
    a.rows = static_cast<const uint8_t*>(v[2].buf);
    a.f16 = static_cast<const float*>(v[3].buf);
    a.out_d = static_cast<float*>(v[4].buf);
    a.out_p = static_cast<int64_t*>(v[5].buf);
    a.nq = nq; a.d = d; a.r = r; a.n = n; a.k = k; a.row_bytes = row_bytes;
    a.kind = kind; a.mode = mode; a.level = level; a.empty = empty;
    Py_BEGIN_ALLOW_THREADS
    over_queries(nq, threads, [&]() {
        Scratch w;
        w.keys.resize(static_cast<size_t>(r));
        w.score.resize(static_cast<size_t>(r));
        return [&a, w = std::move(w)](Py_ssize_t q) mutable { refine_query(a, q, w); };
    });
    Py_END_ALLOW_THREADS
    if (a.bad) {
        PyErr_SetString(PyExc_ValueError, "_fastscan.refine: a candidate's row is out of range");
        return nullptr;
    }
    Py_RETURN_NONE;
}

}  // namespace snapline_native
