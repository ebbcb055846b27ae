// What the translation units of indexer._fastscan share: the SIMD level of this CPU, the
// query thread pool, and the buffer glue (arrays come in through the buffer protocol;
// Python validates shapes, dtypes and ranges first, the sizes are checked again here).
#pragma once
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

// SNAPLINE_NO_X86 compiles the portable path alone, as on other architectures (a build check)
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(SNAPLINE_NO_X86)
#define FS_X86 1
// GCC 12's AVX-512 headers trip its own -Wmaybe-uninitialized (_mm512_undefined_*)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#else
#define FS_X86 0
#endif

namespace snapline_native {

enum Level { LEVEL_PORTABLE = 0, LEVEL_AVX2 = 1, LEVEL_AVX512 = 2 };

const float kInf = std::numeric_limits<float>::infinity();

inline int cpu_level() {
#if FS_X86 && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return LEVEL_AVX512;
    if (__builtin_cpu_supports("avx2")) return LEVEL_AVX2;
#endif
    return LEVEL_PORTABLE;
}

// Queries 0..nq-1 handed out one at a time to min(threads, nq) threads (this one included);
// make_worker() gives each thread its function of a query (with its own scratch).
template <class MakeWorker>
void over_queries(Py_ssize_t nq, int threads, MakeWorker make_worker) {
    std::atomic<Py_ssize_t> next{0};
    auto run = [&]() {
        auto work = make_worker();
        for (Py_ssize_t q = next++; q < nq; q = next++) work(q);
    };
    int nthreads = static_cast<int>(std::max<Py_ssize_t>(1, std::min<Py_ssize_t>(threads, nq)));
    std::vector<std::thread> pool;
    for (int i = 1; i < nthreads; ++i) pool.emplace_back(run);
    run();
    for (auto& t : pool) t.join();
}

struct Buffers {
    Py_buffer b[16];
    int count = 0;
    ~Buffers() {
        for (int i = 0; i < count; ++i) PyBuffer_Release(&b[i]);
    }
};

// The sizes Python promised (a mismatch is a bug in the caller, never a crash): buffer i
// holds expect[i] bytes, the buffer at_least (-1: none) at least that many. Sets the error.
inline bool sizes_match(const char* fn, const Py_buffer* v, const Py_ssize_t* expect, int count, int at_least) {
    for (int i = 0; i < count; ++i) {
        if (i == at_least ? v[i].len >= expect[i] : v[i].len == expect[i]) continue;
        PyErr_Format(PyExc_ValueError, "%s: argument %d has %zd bytes, expected %zd", fn, i, v[i].len, expect[i]);
        return false;
    }
    return true;
}

// _refine.cpp
PyObject* py_refine(PyObject*, PyObject* args);
// _prepare.cpp
PyObject* py_prepare(PyObject*, PyObject* args);

}  // namespace snapline_native
