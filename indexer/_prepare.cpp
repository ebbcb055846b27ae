// The per-query preparation of the 4-bit fast scan (indexer.fastscan_search._prepare, SPEC 2
// steps 1-2): the nprobe nearest centroids, the nlines nearest of their lines with each
// line's (list, probe, b, c, alpha, b + bias), and the probes' uint8 tables. The same
// float32 operations as the numba reference in its order, and the same selections (ties
// by position), so the same bits; only how the selections are found differs (a sorted
// insertion for a few probes, a bucketed k-th smallest otherwise: any exact way gives the
// same sets). Quantized tables by AVX-512 (16 entries at a time) or portable C++.
#include "_native.h"

#include <cmath>

namespace snapline_native {
namespace {

constexpr int kBuckets = 256;
constexpr Py_ssize_t kSmall = 24;

// numba's builtin max(a, b) / min(a, b) on floats (a NaN in b is dropped, in a kept)
inline float nb_max(float a, float b) { return b > a ? b : a; }
inline float nb_min(float a, float b) { return b < a ? b : a; }

struct PrepareArgs {
    const float* dist;       // (nq, K): squared distances (l2) or -<q, c> (ip)
    const int32_t* edges;    // (K, nedge)
    const float* len2;       // (K, nedge)
    float rule[3];           // (ip?, lambda min, lambda max)
    const float* lutq;       // (nq, M, 16)
    const float* tables;     // (K, M, 16)
    const float* t_min;      // (K, M)
    const float* t_span;     // (K, M)
    int64_t* line_list;      // (nq, nlines) outputs
    int32_t* line_probe;
    float *line_b, *line_c, *line_alpha, *line_const;
    uint8_t* lut8;           // (nq, nprobe, M, 16)
    float* scale;            // (nq,)
    Py_ssize_t ncent, nedge, nprobe, nlines, m;
    int level;
};

struct Probe {
    float d;
    int64_t c;
};

struct Scratch {
    std::vector<float> keys, values, probe_d, line_d, bias, l_min, l_span, low;
    std::vector<int64_t> probe_c, pick;
    std::vector<Probe> probes;
    std::vector<uint8_t> ids;
};

// The kth smallest (0-based) of v[0..n) (no NaN), reordering v: histograms of 256 buckets
// over [min, max] narrow it to one bucket until a few values are left (as the numba
// reference's selection; the value is exact either way).
float kth_smallest(float* v, Py_ssize_t n, Py_ssize_t kth, std::vector<uint8_t>& ids) {
    int32_t counts[4 * kBuckets];   // four histograms: equal buckets in a row do not wait on each other
    while (n > kSmall) {
        float lo[4] = {v[0], v[0], v[0], v[0]}, hi[4] = {v[0], v[0], v[0], v[0]};
        Py_ssize_t i = 0;
        for (; i + 4 <= n; i += 4) {   // four independent chains
            for (int t = 0; t < 4; ++t) {
                lo[t] = std::min(lo[t], v[i + t]);
                hi[t] = std::max(hi[t], v[i + t]);
            }
        }
        for (; i < n; ++i) {
            lo[0] = std::min(lo[0], v[i]);
            hi[0] = std::max(hi[0], v[i]);
        }
        const float low = std::min(std::min(lo[0], lo[1]), std::min(lo[2], lo[3]));
        const float high = std::max(std::max(hi[0], hi[1]), std::max(hi[2], hi[3]));
        if (low == high) return low;
        const float width = high - low;
        const float scale = static_cast<float>(kBuckets) / width;
        if (!std::isfinite(width) || !std::isfinite(scale)) break;
        std::fill(counts, counts + 4 * kBuckets, 0);
        for (i = 0; i < n; ++i) {
            const int b = std::min(static_cast<int>((v[i] - low) * scale), kBuckets - 1);
            ids[i] = static_cast<uint8_t>(b);
            ++counts[(i & 3) * kBuckets + b];
        }
        Py_ssize_t below = 0;
        int pick = 0;
        for (;; ++pick) {
            const Py_ssize_t here = counts[pick] + counts[kBuckets + pick] + counts[2 * kBuckets + pick] +
                                    counts[3 * kBuckets + pick];
            if (below + here > kth) break;
            below += here;
        }
        Py_ssize_t kept = 0;
        for (i = 0; i < n; ++i) {
            v[kept] = v[i];
            kept += ids[i] == pick;
        }
        n = kept;
        kth -= below;
    }
    std::nth_element(v, v + kth, v + n);
    return v[kth];
}

// Positions of the n smallest of v[0..total) (no NaN) into out, as `_select_smallest`
// writes them: those below the nth value in position order, then its equals in position
// order until n are out.
void select_smallest(const float* v, Py_ssize_t total, Py_ssize_t n, int64_t* out, Scratch& w) {
    if (n >= total) {
        for (Py_ssize_t i = 0; i < total; ++i) out[i] = i;
        return;
    }
    std::copy_n(v, total, w.values.data());
    const float thr = kth_smallest(w.values.data(), total, n - 1, w.ids);
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < total; ++i) {
        out[count] = i;
        count += v[i] < thr;
    }
    for (Py_ssize_t i = 0; i < total && count < n; ++i)
        if (v[i] == thr) out[count++] = i;
}

// The nprobe nearest centroids (ties by position; a NaN distance as +inf), nearest first
// (ties by centroid id): `_top_probes` then `_sort_probes`. A few probes: one pass keeping
// them sorted (a value not below the worst kept is dropped at once, so ties keep the first
// position); many: a selection, then a sort.
constexpr Py_ssize_t kInsertProbes = 32;

void top_probes(const float* row, const PrepareArgs& a, Scratch& w) {
    const Py_ssize_t n = a.ncent, np = a.nprobe;
    if (np <= kInsertProbes) {
        Py_ssize_t filled = 0;
        for (Py_ssize_t i = 0; i < n; ++i) {
            const float v = row[i] == row[i] ? row[i] : kInf;
            if (filled == np && !(v < w.probes[np - 1].d)) continue;
            Py_ssize_t j = filled < np ? filled++ : np - 1;
            for (; j > 0 && v < w.probes[j - 1].d; --j) w.probes[j] = w.probes[j - 1];
            w.probes[j] = {v, i};
        }
    } else {
        for (Py_ssize_t i = 0; i < n; ++i) w.keys[i] = row[i] == row[i] ? row[i] : kInf;
        select_smallest(w.keys.data(), n, np, w.probe_c.data(), w);
        for (Py_ssize_t i = 0; i < np; ++i) w.probes[i] = {w.keys[w.probe_c[i]], w.probe_c[i]};
        std::sort(w.probes.begin(), w.probes.end(), [](const Probe& x, const Probe& y) {
            return x.d < y.d || (x.d == y.d && x.c < y.c);
        });
    }
    for (Py_ssize_t i = 0; i < np; ++i) {
        w.probe_d[i] = w.probes[i].d;
        w.probe_c[i] = w.probes[i].c;
    }
}

inline void line_c_alpha(const float* row, float b, int64_t cen, Py_ssize_t e, const PrepareArgs& a, float& c,
                         float& alpha) {
    const float far = row[a.edges[cen * a.nedge + e]];
    if (a.rule[0] == 0.0f) {
        c = nb_max(a.len2[cen * a.nedge + e], 1e-12f);
        alpha = far - b - c;
    } else {
        c = 0.0f;
        alpha = far - b;
    }
}

// The line distances of all probes' lines (NaN as +inf), probe-major.
void line_distances(const float* row, const PrepareArgs& a, Scratch& w) {
    for (Py_ssize_t pi = 0; pi < a.nprobe; ++pi) {
        const int64_t cen = w.probe_c[pi];
        const float b = w.probe_d[pi];
        float* out = w.line_d.data() + pi * a.nedge;
        for (Py_ssize_t e = 0; e < a.nedge; ++e) {
            float c, alpha, dl;
            line_c_alpha(row, b, cen, e, a, c, alpha);
            if (a.rule[0] == 0.0f) dl = b - alpha * alpha / (4.0f * c);
            else dl = b + nb_min(a.rule[1] * alpha, a.rule[2] * alpha);
            out[e] = dl == dl ? dl : kInf;
        }
    }
}

// lut8 of one probe: round((lut + t - low) * inv) clamped to [0, 255], 16 entries at a time.
void quantize_portable(const float* lut, const float* t, const float* low, float inv, Py_ssize_t m, uint8_t* out) {
    for (Py_ssize_t s = 0; s < m; ++s) {
        for (int j = 0; j < 16; ++j) {
            const float v = (lut[s * 16 + j] + t[s * 16 + j] - low[s]) * inv + 0.5f;
            out[s * 16 + j] = static_cast<uint8_t>(nb_min(255.0f, nb_max(0.0f, v)));
        }
    }
}

#if FS_X86
__attribute__((target("avx512f,avx512bw"))) void quantize_avx512(const float* lut, const float* t, const float* low,
                                                                 float inv, Py_ssize_t m, uint8_t* out) {
    const __m512 vinv = _mm512_set1_ps(inv), half = _mm512_set1_ps(0.5f);
    const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f);
    for (Py_ssize_t s = 0; s < m; ++s) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(lut + s * 16), _mm512_loadu_ps(t + s * 16));
        v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, _mm512_set1_ps(low[s])), vinv), half);
        v = _mm512_min_ps(_mm512_max_ps(v, zero), top);   // (v > 0 ? v : 0), then (< 255 ? : 255)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + s * 16), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
    }
}
#endif

// `_quantize`: one scale per query over all its probes; bias[pi] = sum_m low[pi, m].
float quantize(const float* lut, const PrepareArgs& a, Scratch& w, uint8_t* lut8) {
    const Py_ssize_t m = a.m;
    float span = 0.0f;
    for (Py_ssize_t s = 0; s < m; ++s) {
        float lo = lut[s * 16], hi = lut[s * 16];
        for (int j = 1; j < 16; ++j) {
            lo = nb_min(lo, lut[s * 16 + j]);
            hi = nb_max(hi, lut[s * 16 + j]);
        }
        w.l_min[s] = lo;
        w.l_span[s] = hi - lo;
    }
    // The widest range: max is exact in any order (a NaN is never taken), so eight chains
    // instead of one; each probe's bias is its own chain (in the reference's order).
    float spans[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (Py_ssize_t pi = 0; pi < a.nprobe; ++pi) {
        const float* t_span = a.t_span + w.probe_c[pi] * m;
        for (Py_ssize_t s = 0; s < m; ++s) spans[s & 7] = nb_max(spans[s & 7], w.l_span[s] + t_span[s]);
    }
    for (float x : spans) span = nb_max(span, x);
    for (Py_ssize_t pi = 0; pi < a.nprobe; ++pi) {
        const float* t_min = a.t_min + w.probe_c[pi] * m;
        float total = 0.0f;
        for (Py_ssize_t s = 0; s < m; ++s) total += w.l_min[s] + t_min[s];
        w.bias[pi] = total;
    }
    const float scale = span > 0 ? span / 255.0f : 1.0f;
    const float inv = 1.0f / scale;
    std::vector<float>& low = w.low;
    for (Py_ssize_t pi = 0; pi < a.nprobe; ++pi) {
        const int64_t cen = w.probe_c[pi];
        for (Py_ssize_t s = 0; s < m; ++s) low[s] = w.l_min[s] + a.t_min[cen * m + s];
        const float* t = a.tables + cen * m * 16;
        uint8_t* out = lut8 + pi * m * 16;
#if FS_X86
        if (a.level == LEVEL_AVX512) {
            quantize_avx512(lut, t, low.data(), inv, m, out);
            continue;
        }
#endif
        quantize_portable(lut, t, low.data(), inv, m, out);
    }
    return scale;
}

void prepare_query(const PrepareArgs& a, Py_ssize_t qi, Scratch& w) {
    const float* row = a.dist + qi * a.ncent;
    top_probes(row, a, w);
    line_distances(row, a, w);
    const Py_ssize_t total = a.nprobe * a.nedge;
    select_smallest(w.line_d.data(), total, a.nlines, w.pick.data(), w);
    const size_t o = static_cast<size_t>(qi * a.nlines);
    a.scale[qi] = quantize(a.lutq + qi * a.m * 16, a, w, a.lut8 + qi * a.nprobe * a.m * 16);
    const uint32_t nedge = static_cast<uint32_t>(a.nedge);   // positions < 2^32 (checked)
    for (Py_ssize_t li = 0; li < a.nlines; ++li) {
        const uint32_t pos = static_cast<uint32_t>(w.pick[li]);
        const Py_ssize_t pi = pos / nedge, e = pos % nedge;
        const int64_t cen = w.probe_c[pi];
        float c, alpha;
        line_c_alpha(row, w.probe_d[pi], cen, e, a, c, alpha);
        a.line_list[o + li] = cen * a.nedge + e;
        a.line_probe[o + li] = static_cast<int32_t>(pi);
        a.line_b[o + li] = w.probe_d[pi];
        a.line_c[o + li] = c;
        a.line_alpha[o + li] = alpha;
        a.line_const[o + li] = w.probe_d[pi] + w.bias[pi];
    }
}

}  // namespace

PyObject* py_prepare(PyObject*, PyObject* args) {
    Buffers bufs;
    Py_buffer* v = bufs.b;
    Py_ssize_t nq, ncent, nedge, nprobe, nlines, m;
    int threads, level;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*w*w*w*w*w*w*w*w*nnnnnnii", &v[0], &v[1], &v[2], &v[3], &v[4],
                          &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13], &v[14], &v[15], &nq,
                          &ncent, &nedge, &nprobe, &nlines, &m, &threads, &level))
        return nullptr;
    bufs.count = 16;
    if (nq < 0 || ncent < 1 || nedge < 1 || nprobe < 1 || nprobe > ncent || nlines < 1 || nlines > nprobe * nedge ||
        m < 1 || nprobe * nedge >= (Py_ssize_t{1} << 32) || level < 0 || level > cpu_level()) {
        PyErr_SetString(PyExc_ValueError, "_fastscan.prepare: bad nq, ncent, nedge, nprobe, nlines, M or level");
        return nullptr;
    }
    const Py_ssize_t nl = nq * nlines;
    const Py_ssize_t expect[16] = {nq * ncent * 4, ncent * nedge * 4, ncent * nedge * 4, 3 * 4,
                                   nq * m * 16 * 4, ncent * m * 16 * 4, ncent * m * 4, ncent * m * 4,
                                   nl * 8, nl * 4, nl * 4, nl * 4, nl * 4, nl * 4, nq * nprobe * m * 16, nq * 4};
    if (!sizes_match("_fastscan.prepare", v, expect, 16, -1)) return nullptr;
    PrepareArgs a;
    a.dist = static_cast<const float*>(v[0].buf);
    a.edges = static_cast<const int32_t*>(v[1].buf);
    a.len2 = static_cast<const float*>(v[2].buf);
    std::copy_n(static_cast<const float*>(v[3].buf), 3, a.rule);
    a.lutq = static_cast<const float*>(v[4].buf);
    a.tables = static_cast<const float*>(v[5].buf);
    a.t_min = static_cast<const float*>(v[6].buf);
    a.t_span = static_cast<const float*>(v[7].buf);
    a.line_list = static_cast<int64_t*>(v[8].buf);
    a.line_probe = static_cast<int32_t*>(v[9].buf);
    a.line_b = static_cast<float*>(v[10].buf);
    a.line_c = static_cast<float*>(v[11].buf);
    a.line_alpha = static_cast<float*>(v[12].buf);
    a.line_const = static_cast<float*>(v[13].buf);
    a.lut8 = static_cast<uint8_t*>(v[14].buf);
    a.scale = static_cast<float*>(v[15].buf);
    a.ncent = ncent; a.nedge = nedge; a.nprobe = nprobe; a.nlines = nlines; a.m = m; a.level = level;
    for (Py_ssize_t i = 0; i < ncent * nedge; ++i) {
        if (a.edges[i] < 0 || a.edges[i] >= ncent) {
            PyErr_SetString(PyExc_ValueError, "_fastscan.prepare: an edge's far end is out of range");
            return nullptr;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    over_queries(nq, threads, [&]() {
        Scratch w;
        w.keys.resize(static_cast<size_t>(ncent));
        w.values.resize(static_cast<size_t>(std::max(ncent, nprobe * nedge)));
        w.ids.resize(static_cast<size_t>(std::max(ncent, nprobe * nedge)));
        w.probes.resize(static_cast<size_t>(nprobe));
        w.low.resize(static_cast<size_t>(m));
        w.probe_d.resize(static_cast<size_t>(nprobe));
        w.probe_c.resize(static_cast<size_t>(nprobe));
        w.line_d.resize(static_cast<size_t>(nprobe * nedge));
        w.pick.resize(static_cast<size_t>(nprobe * nedge));
        w.bias.resize(static_cast<size_t>(nprobe));
        w.l_min.resize(static_cast<size_t>(m));
        w.l_span.resize(static_cast<size_t>(m));
        return [&a, w = std::move(w)](Py_ssize_t q) mutable { prepare_query(a, q, w); };
    });
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

}  // namespace snapline_native
