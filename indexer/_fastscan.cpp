// indexer._fastscan: the native 4-bit fast-scan kernel of indexer.fastscan (issue 13).
//
// A plain CPython extension: arrays come in through the buffer protocol ("y*" read-only,
// "w*" for the outputs, which Python allocates), no numpy headers, no pybind11. Python
// (indexer/fastscan.py) validates every shape, dtype and index range before calling.
//
// Per query q, selected line l, row j of list line_list[q, l]:
//   S = sum_m lut8[q, line_probe[q, l], m, code[j, m]]            (exact, uint16)
//   lam = lam_values[lam_idx[j]]; t = lam * c; t = t + alpha; t = lam * t
//   u = scale[q] * float(S); approx = (const + t) + u            (no FMA: -ffp-contract=off)
// and the r smallest (approx, pos, line) keys (lexicographic; a NaN approx counts as +inf)
// ascending, padded with (inf, -1, -1). The key is a total order, so every SIMD level, the
// portable path and the numba reference keep exactly the same rows.
//
// Packed layout: packed[b, p, t] = code[32b+t, 2p] | code[32b+t, 2p+1] << 4, blocks of 32
// consecutive rows ignoring list boundaries. Three scanners of one block, chosen at run
// time: AVX-512 (avx512f+avx512bw, two sub-code pairs per 64-byte shuffle), AVX2 (one pair
// per 32-byte shuffle), portable scalar C++ (any architecture).
// Consecutive selected lines of one probe with adjacent row ranges are scanned as one run:
// each block summed once, the epilogue (approx, threshold) per line (scan_run).
#include "_native.h"

#include <cmath>
#include <cstring>

namespace {

using namespace snapline_native;

struct Args {
    const uint8_t* lut8;      // (nq, nprobe, M, 16)
    const float* scale;       // (nq,)
    const int64_t* line_list; // (nq, nlines)
    const int32_t* line_probe;
    const float* line_const;
    const float* line_c;
    const float* line_alpha;
    const int64_t* offsets;   // (nlists + 1,)
    const uint8_t* packed;    // (nblocks, M/2, 32)
    const uint8_t* lam_idx;   // (n,)
    const float* lam_values;  // (nlambda,)
    const uint32_t* allowed;  // (ceil(n/32),) bitset of the rows that may be returned, or null: all
    float* out_d;             // (nq, r)
    int64_t* out_p;
    int32_t* out_l;
    Py_ssize_t nq, nprobe, m, nlines, r;
    int level;
};

// ---- the r smallest keys (approx, pos, line): a buffer with a threshold ----
// Rows whose approx is <= the threshold are appended (no branch per row beyond the SIMD
// filter); when the buffer is full, nth_element keeps its r smallest keys and the threshold
// drops to the r-th approx. A row above the threshold has a key above r kept keys, so the
// result is the r smallest keys of all rows, as with the numba reference's heap. Cheaper
// than a heap when many rows enter (k-select, issue 13 point 3).
struct Entry {
    float d;
    int32_t l;
    int64_t p;
};

struct EntryLess {  // a functor, so that nth_element and sort inline it
    bool operator()(const Entry& a, const Entry& b) const {
        if (a.d != b.d) return a.d < b.d;
        if (a.p != b.p) return a.p < b.p;
        return a.l < b.l;
    }
};

// A float's bits as a uint32 that sorts as the float does (-0 is made +0 first, so that the
// two zeros, equal as floats, get one key; NaN never enters: approx maps it to +inf).
inline uint32_t order_key(float d) {
    d = d + 0.0f;
    uint32_t bits;
    std::memcpy(&bits, &d, 4);
    return bits ^ (static_cast<uint32_t>(static_cast<int32_t>(bits) >> 31) | 0x80000000u);
}

// The float whose order_key is k (k is the key of a float between two finite or infinite keys)
inline float key_float(uint32_t k) {
    const uint32_t bits = (k & 0x80000000u) ? (k ^ 0x80000000u) : ~k;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// The rank-th smallest (0-based) of keys[0..n), by most-significant-byte radix passes: a
// histogram of one byte, the bucket holding the rank, the keys of that bucket kept (in place,
// after the first pass into tmp). No data-dependent branch per key, unlike nth_element's
// partitions on random floats (measured: compaction was a quarter of the 4-bit scan at r=100).
inline uint32_t radix_select(const uint32_t* keys, Py_ssize_t n, Py_ssize_t rank, uint32_t* tmp) {
    const uint32_t* cur = keys;
    uint32_t prefix = 0;
    for (int shift = 24;; shift -= 8) {
        uint32_t hist[256] = {0};
        for (Py_ssize_t i = 0; i < n; ++i) hist[(cur[i] >> shift) & 255u]++;
        uint32_t b = 0;
        while (rank >= static_cast<Py_ssize_t>(hist[b])) rank -= hist[b++];
        prefix |= b << shift;
        if (shift == 0) return prefix;
        if (static_cast<Py_ssize_t>(hist[b]) == n) continue;  // one bucket: the next byte decides
        Py_ssize_t kept = 0;
        for (Py_ssize_t i = 0; i < n; ++i) {
            tmp[kept] = cur[i];
            kept += ((cur[i] >> shift) & 255u) == b;
        }
        if (kept == 1) return tmp[0];
        cur = tmp;
        n = kept;
    }
}

struct TopR {
    // the buffer, as columns (so that a SIMD level appends a block's passing rows with
    // compress stores, without a branch per row); 16 spare slots past the capacity
    std::vector<float> d;
    std::vector<int64_t> p;
    std::vector<int32_t> l;
    std::vector<Entry> ties;
    std::vector<uint32_t> keys, tmp;
    std::vector<uint64_t> sorted, scratch;
    Py_ssize_t r = 0, size = 0, cap = 0;
    float thr = kInf;

    void reset(Py_ssize_t r_) {
        r = r_;
        size = 0;
        thr = kInf;
        cap = 2 * r_ + 64;
        const size_t room = static_cast<size_t>(cap + 16);
        d.resize(room);
        p.resize(room);
        l.resize(room);
        ties.resize(room);
        keys.resize(room);
        tmp.resize(room);
        sorted.resize(room);
        scratch.resize(room);
    }
    float threshold() const { return thr; }

    // Keep at least the r smallest keys of the buffer and lower the threshold, cheaply: one
    // histogram of the order keys over [min, max] in at most 256 buckets gives the bucket of
    // the r-th smallest; every entry up to that bucket's upper edge is kept (r or a few more)
    // and the threshold drops to the edge. When that keeps too many (a crowded bucket), the
    // exact compaction. The final top-r is exact (drain).
    void compact() {
        uint32_t kmin = 0xffffffffu, kmax = 0;
        for (Py_ssize_t i = 0; i < size; ++i) {
            const uint32_t k = order_key(d[i]);
            keys[i] = k;
            kmin = std::min(kmin, k);
            kmax = std::max(kmax, k);
        }
        const uint32_t span = kmax - kmin;
        const int shift = span < 256u ? 0 : 24 - __builtin_clz(span);  // (span >> shift) < 256
        uint32_t hist[256] = {0};
        for (Py_ssize_t i = 0; i < size; ++i) hist[(keys[i] - kmin) >> shift]++;
        Py_ssize_t seen = 0;
        uint32_t b = 0;
        while (seen + hist[b] < r) seen += hist[b++];
        const Py_ssize_t kept = seen + hist[b];
        if (shift == 0 || kept > (r + cap) / 2) {
            compact_exact();
            return;
        }
        // the bucket's last key, at most kmax (so a key of a float, never of a NaN)
        const uint32_t edge = static_cast<uint32_t>(std::min<uint64_t>(
            kmax, static_cast<uint64_t>(kmin) + ((static_cast<uint64_t>(b) + 1) << shift) - 1));
        Py_ssize_t at = 0;
        for (Py_ssize_t i = 0; i < size; ++i) {
            d[at] = d[i];
            p[at] = p[i];
            l[at] = l[i];
            at += keys[i] <= edge;
        }
        size = at;
        thr = key_float(edge);
    }

    // Keep exactly the r smallest keys: the r-th approx t (radix_select on the order keys),
    // every entry below t, and among the entries equal to t the smallest keys.
    void compact_exact() {
        for (Py_ssize_t i = 0; i < size; ++i) keys[i] = order_key(d[i]);
        const uint32_t kt = radix_select(keys.data(), size, r - 1, tmp.data());
        Py_ssize_t below = 0, tied = 0;
        for (Py_ssize_t i = 0; i < size; ++i) {
            const float di = d[i];
            const int64_t pi = p[i];
            const int32_t li = l[i];
            d[below] = di;
            p[below] = pi;
            l[below] = li;
            below += keys[i] < kt;
            if (keys[i] == kt) ties[tied++] = Entry{di, li, pi};
        }
        const Py_ssize_t need = r - below;  // 1 <= need <= tied: t is the r-th smallest
        if (need < tied) std::nth_element(ties.begin(), ties.begin() + need, ties.begin() + tied, EntryLess());
        for (Py_ssize_t i = 0; i < need; ++i) {
            d[below + i] = ties[i].d;
            p[below + i] = ties[i].p;
            l[below + i] = ties[i].l;
        }
        size = r;
        thr = ties[0].d + 0.0f;  // every kept approx is <= t (all tied entries have approx t)
    }

    // room for the 32 rows of one block (call before appending them)
    void make_room() {
        if (size + 32 > cap) compact();
    }

    // d is not NaN and d <= threshold()
    void push(float dv, int64_t pv, int32_t lv) {
        d[size] = dv;
        p[size] = pv;
        l[size] = lv;
        ++size;
    }

    // The kept entries in key order into ties[0..size): an LSD radix sort of ((order key -
    // smallest key) << 32 | slot) over the bytes that span needs (a byte every key shares is
    // skipped), then runs of equal approx ordered by (pos, line). No comparison sort's
    // mispredicted branches.
    void sort_kept() {
        uint32_t kmin = 0xffffffffu, kmax = 0;
        for (Py_ssize_t i = 0; i < size; ++i) {
            keys[i] = order_key(d[i]);
            kmin = std::min(kmin, keys[i]);
            kmax = std::max(kmax, keys[i]);
        }
        for (Py_ssize_t i = 0; i < size; ++i)  // keys above the smallest: fewer bytes to sort
            sorted[i] = (static_cast<uint64_t>(keys[i] - kmin) << 32) | static_cast<uint64_t>(i);
        uint64_t* from = sorted.data();
        uint64_t* to = scratch.data();
        const uint64_t span = kmax - kmin;
        for (int shift = 32; shift < 64 && (span >> (shift - 32)) != 0; shift += 8) {
            uint32_t count[256] = {0};
            for (Py_ssize_t i = 0; i < size; ++i) count[(from[i] >> shift) & 255u]++;
            if (static_cast<Py_ssize_t>(count[(from[0] >> shift) & 255u]) == size) continue;
            uint32_t start = 0;
            for (int v = 0; v < 256; ++v) {
                const uint32_t c = count[v];
                count[v] = start;
                start += c;
            }
            for (Py_ssize_t i = 0; i < size; ++i) to[count[(from[i] >> shift) & 255u]++] = from[i];
            std::swap(from, to);
        }
        for (Py_ssize_t i = 0; i < size; ++i) {
            const Py_ssize_t slot = static_cast<Py_ssize_t>(from[i] & 0xffffffffu);
            ties[i] = Entry{d[slot], l[slot], p[slot]};
        }
        for (Py_ssize_t i = 0, j; i < size; i = j) {  // equal approx: by (pos, line)
            for (j = i + 1; j < size && (from[j] >> 32) == (from[i] >> 32); ++j) {
            }
            if (j - i > 1) std::sort(ties.begin() + i, ties.begin() + j, EntryLess());
        }
    }

    // The r smallest keys, sorted: a compaction (at least the r smallest kept), then all kept
    // sorted and the first r written.
    void drain(float* out_d, int64_t* out_p, int32_t* out_l) {
        if (size > r) compact();
        if (size > 0) sort_kept();
        for (Py_ssize_t i = 0; i < r; ++i) {
            if (i < size) {
                out_d[i] = ties[i].d;
                out_p[i] = ties[i].p;
                out_l[i] = ties[i].l;
            } else {
                out_d[i] = kInf;
                out_p[i] = -1;
                out_l[i] = -1;
            }
        }
    }
};

// The rows of block `block` that lie in [lo, hi), as a 32-bit mask (bit t = row 32b+t).
inline uint32_t row_mask(int64_t block, int64_t lo, int64_t hi) {
    int64_t first = block * 32;
    int64_t start = std::max<int64_t>(lo - first, 0);
    int64_t end = std::min<int64_t>(hi - first, 32);
    uint32_t upto = end >= 32 ? 0xffffffffu : ((1u << end) - 1u);
    return upto & ~((1u << start) - 1u);
}

struct LineParams {
    float c, alpha, cst, scale;
    int32_t line;
};

// approx of one row, scalar: the order of operations of the contract (u = scale * float(S))
inline float approx_scalar(float lam, float u, const LineParams& lp) {
    float t = lam * lp.c;
    t = t + lp.alpha;
    t = lam * t;
    return (lp.cst + t) + u;
}

// lam_idx of the 32 rows of a block, zero where the row is outside the array
inline void block_lam_idx(const Args& a, int64_t first, int64_t n, uint8_t* buf) {
    std::memset(buf, 0, 32);
    int64_t count = std::min<int64_t>(32, n - first);
    if (count > 0) std::memcpy(buf, a.lam_idx + first, static_cast<size_t>(count));
}

// ---------------------------------------------------------------- portable path
void block_sums_portable(const uint8_t* block, const uint8_t* lut, const uint8_t*, Py_ssize_t m, uint16_t* sums) {
    uint32_t acc[32] = {0};
    for (Py_ssize_t p = 0; p < m / 2; ++p) {
        const uint8_t* row_bytes = block + p * 32;
        const uint8_t* lut_even = lut + (2 * p) * 16;
        const uint8_t* lut_odd = lut_even + 16;
        for (int t = 0; t < 32; ++t) {
            uint8_t x = row_bytes[t];
            acc[t] += static_cast<uint32_t>(lut_even[x & 15]) + lut_odd[x >> 4];
        }
    }
    for (int t = 0; t < 32; ++t) sums[t] = static_cast<uint16_t>(acc[t]);
}

// The per-row parts of approx shared by every line of a block: lam and u = scale * float(S)
void block_terms_portable(const Args& a, const uint16_t* sums, const uint8_t* lam_rows, float scale, float* lam,
                          float* u) {
    for (int t = 0; t < 32; ++t) {
        lam[t] = a.lam_values[lam_rows[t]];
        u[t] = scale * static_cast<float>(sums[t]);
    }
}

void finish_block_portable(const float* lam, const float* u, uint32_t mask, int64_t first, const LineParams& lp,
                           TopR& top) {
    while (mask) {
        int t = __builtin_ctz(mask);
        mask &= mask - 1;
        float d = approx_scalar(lam[t], u[t], lp);
        if (d != d) d = kInf;
        if (d <= top.threshold()) top.push(d, first + t, lp.line);
    }
}

// The LUTs of one probe rearranged for 64-byte shuffles: for the pair group g (sub-code
// pairs 2g, 2g+1) 64 bytes of low-nibble tables [m=4g, 4g, 4g+2, 4g+2] then 64 bytes of
// high-nibble tables [4g+1, 4g+1, 4g+3, 4g+3] (each table repeated on two 128-bit lanes).
#if FS_X86
// ---------------------------------------------------------------- AVX2 path
__attribute__((target("avx2"))) inline void store_sums_avx2(__m256i acc_even, __m256i acc_odd,
                                                             uint16_t* sums) {
    // 16-bit lane k of acc_even holds row 2k, of acc_odd row 2k+1: re-interleave
    __m256i lo = _mm256_unpacklo_epi16(acc_even, acc_odd);  // rows 0-7 | 16-23
    __m256i hi = _mm256_unpackhi_epi16(acc_even, acc_odd);  // rows 8-15 | 24-31
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums), _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
}

__attribute__((target("avx2"))) inline void block_sums_avx2(const uint8_t* block, const uint8_t* lut,
                                                             const uint8_t*, Py_ssize_t m, uint16_t* sums) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i acc = _mm256_setzero_si256();  // lanes whole, modulo 2^16 (as block_sums_avx512)
    __m256i acc_odd = _mm256_setzero_si256();
    for (Py_ssize_t p = 0; p < m / 2; ++p) {
        __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + p * 32));
        __m256i lut_even = _mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(lut + (2 * p) * 16)));
        __m256i lut_odd = _mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(lut + (2 * p + 1) * 16)));
        __m256i v0 = _mm256_shuffle_epi8(lut_even, _mm256_and_si256(x, low4));
        __m256i v1 = _mm256_shuffle_epi8(lut_odd, _mm256_and_si256(_mm256_srli_epi16(x, 4), low4));
        acc = _mm256_add_epi16(acc, _mm256_add_epi16(v0, v1));
        acc_odd = _mm256_add_epi16(acc_odd, _mm256_add_epi16(_mm256_srli_epi16(v0, 8), _mm256_srli_epi16(v1, 8)));
    }
    store_sums_avx2(_mm256_sub_epi16(acc, _mm256_slli_epi16(acc_odd, 8)), acc_odd, sums);
}

__attribute__((target("avx2"))) inline void block_terms_avx2(const Args& a, const uint16_t* sums,
                                                             const uint8_t* lam_rows, float scale, float* lam,
                                                             float* u) {
    const __m256 sc = _mm256_set1_ps(scale);
    for (int k = 0; k < 4; ++k) {
        __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(lam_rows + 8 * k)));
        _mm256_store_ps(lam + 8 * k, _mm256_i32gather_ps(a.lam_values, idx, 4));
        __m256 sv = _mm256_cvtepi32_ps(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sums + 8 * k))));
        _mm256_store_ps(u + 8 * k, _mm256_mul_ps(sc, sv));
    }
}

__attribute__((target("avx2"))) inline void finish_block_avx2(const float* lam_f, const float* u_f, uint32_t mask,
                                                              int64_t first, const LineParams& lp, TopR& top) {
    const __m256 c = _mm256_set1_ps(lp.c), alpha = _mm256_set1_ps(lp.alpha);
    const __m256 cst = _mm256_set1_ps(lp.cst);
    const __m256 inf = _mm256_set1_ps(kInf);
    alignas(32) float approx[32];
    uint32_t pass = 0;
    const __m256 thr = _mm256_set1_ps(top.threshold());
    for (int k = 0; k < 4; ++k) {
        if (!((mask >> (8 * k)) & 0xffu)) continue;  // no row of the line in these 8
        __m256 lam = _mm256_load_ps(lam_f + 8 * k);
        __m256 t = _mm256_mul_ps(lam, c);
        t = _mm256_add_ps(t, alpha);
        t = _mm256_mul_ps(lam, t);
        __m256 d = _mm256_add_ps(_mm256_add_ps(cst, t), _mm256_load_ps(u_f + 8 * k));
        d = _mm256_blendv_ps(d, inf, _mm256_cmp_ps(d, d, _CMP_UNORD_Q));
        _mm256_store_ps(approx + 8 * k, d);
        pass |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(d, thr, _CMP_LE_OQ))) << (8 * k);
    }
    pass &= mask;
    while (pass) {
        int t = __builtin_ctz(pass);
        pass &= pass - 1;
        top.push(approx[t], first + t, lp.line);
    }
}

// ---------------------------------------------------------------- AVX-512 path
// The LUTs of one probe rearranged for 64-byte shuffles: for the pair group g (sub-code
// pairs 2g, 2g+1) 64 bytes of low-nibble tables [m=4g, 4g, 4g+2, 4g+2] then 64 bytes of
// high-nibble tables [4g+1, 4g+1, 4g+3, 4g+3] (each table repeated on two 128-bit lanes):
// two 128-bit lane shuffles of the group's 64 table bytes.
__attribute__((target("avx512f,avx512bw"))) void prepare_lut_avx512(const uint8_t* lut, Py_ssize_t m,
                                                                     uint8_t* out) {
    for (Py_ssize_t g = 0; g < m / 4; ++g) {
        const __m512i t = _mm512_loadu_si512(lut + g * 64);  // tables 4g .. 4g+3
        _mm512_storeu_si512(out + g * 128, _mm512_shuffle_i64x2(t, t, _MM_SHUFFLE(2, 2, 0, 0)));
        _mm512_storeu_si512(out + g * 128 + 64, _mm512_shuffle_i64x2(t, t, _MM_SHUFFLE(3, 3, 1, 1)));
    }
}

__attribute__((target("avx512f,avx512bw"))) inline void block_sums_avx512(const uint8_t* block, const uint8_t* lut,
                                                                    const uint8_t* lut512, Py_ssize_t m,
                                                                    uint16_t* sums) {
    // Each 16-bit lane holds two rows' byte lookups (even row low byte, odd row high byte).
    // acc gathers the lanes whole (low + 256 * high, modulo 2^16) and acc_odd the high bytes;
    // even = acc - (acc_odd << 8) at the end is exact (every sum is at most M * 255 < 2^16).
    // One mask less per shuffle than separating the bytes each time (as faiss does).
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512i acc = _mm512_setzero_si512();
    __m512i acc_odd = _mm512_setzero_si512();
    Py_ssize_t groups = m / 4;
    for (Py_ssize_t g = 0; g < groups; ++g) {  // two sub-code pairs per 64 bytes
        __m512i x = _mm512_loadu_si512(block + g * 64);
        __m512i lut_lo = _mm512_loadu_si512(lut512 + g * 128);
        __m512i lut_hi = _mm512_loadu_si512(lut512 + g * 128 + 64);
        __m512i v0 = _mm512_shuffle_epi8(lut_lo, _mm512_and_si512(x, low4));
        __m512i v1 = _mm512_shuffle_epi8(lut_hi, _mm512_and_si512(_mm512_srli_epi16(x, 4), low4));
        acc = _mm512_add_epi16(acc, _mm512_add_epi16(v0, v1));
        acc_odd = _mm512_add_epi16(acc_odd, _mm512_add_epi16(_mm512_srli_epi16(v0, 8), _mm512_srli_epi16(v1, 8)));
    }
    __m256i all = _mm256_add_epi16(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    __m256i odd = _mm256_add_epi16(_mm512_castsi512_si256(acc_odd), _mm512_extracti64x4_epi64(acc_odd, 1));
    if (m % 4) {  // an odd number of pairs: the last one on 32 bytes
        Py_ssize_t p = m / 2 - 1;
        const __m256i low4y = _mm256_set1_epi8(0x0f);
        __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + p * 32));
        __m256i le = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lut + 2 * p * 16)));
        __m256i lo = _mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(lut + (2 * p + 1) * 16)));
        __m256i v0 = _mm256_shuffle_epi8(le, _mm256_and_si256(x, low4y));
        __m256i v1 = _mm256_shuffle_epi8(lo, _mm256_and_si256(_mm256_srli_epi16(x, 4), low4y));
        all = _mm256_add_epi16(all, _mm256_add_epi16(v0, v1));
        odd = _mm256_add_epi16(odd, _mm256_add_epi16(_mm256_srli_epi16(v0, 8), _mm256_srli_epi16(v1, 8)));
    }
    __m256i even = _mm256_sub_epi16(all, _mm256_slli_epi16(odd, 8));
    store_sums_avx2(even, odd, sums);
}

__attribute__((target("avx512f,avx512bw"))) inline void block_terms_avx512(const Args& a, const uint16_t* sums,
                                                                     const uint8_t* lam_rows, float scale,
                                                                     float* lam, float* u) {
    const __m512 sc = _mm512_set1_ps(scale);
    for (int k = 0; k < 2; ++k) {
        __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lam_rows + 16 * k)));
        _mm512_store_ps(lam + 16 * k, _mm512_i32gather_ps(idx, a.lam_values, 4));
        __m512 sv = _mm512_cvtepi32_ps(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + 16 * k))));
        _mm512_store_ps(u + 16 * k, _mm512_mul_ps(sc, sv));
    }
}

__attribute__((target("avx512f,avx512bw"))) inline void finish_block_avx512(const float* lam_f, const float* u_f,
                                                                      uint32_t mask, int64_t first,
                                                                      const LineParams& lp, TopR& top) {
    const __m512 c = _mm512_set1_ps(lp.c), alpha = _mm512_set1_ps(lp.alpha);
    const __m512 cst = _mm512_set1_ps(lp.cst);
    const __m512 inf = _mm512_set1_ps(kInf);
    const float thr_s = top.threshold();
    const __m512 thr = _mm512_set1_ps(thr_s);
    // a NaN approx counts as +inf: it can pass only while the threshold is +inf
    const bool nan_can_pass = !(thr_s < kInf);
    for (int k = 0; k < 2; ++k) {
        __mmask16 valid = static_cast<__mmask16>(mask >> (16 * k));
        if (!valid) continue;
        __m512 lam = _mm512_load_ps(lam_f + 16 * k);
        __m512 t = _mm512_mul_ps(lam, c);
        t = _mm512_add_ps(t, alpha);
        t = _mm512_mul_ps(lam, t);
        __m512 d = _mm512_add_ps(_mm512_add_ps(cst, t), _mm512_load_ps(u_f + 16 * k));
        if (nan_can_pass) d = _mm512_mask_mov_ps(d, _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q), inf);
        const __mmask16 pass = _mm512_mask_cmp_ps_mask(valid, d, thr, _CMP_LE_OQ);
        // append the passing rows: compress into registers, full-width stores into the
        // buffer's spare slots, size advanced by their count (no branch per row)
        const Py_ssize_t at = top.size;
        _mm512_storeu_ps(top.d.data() + at, _mm512_maskz_compress_ps(pass, d));
        const __m512i pos_lo = _mm512_add_epi64(_mm512_set1_epi64(first + 16 * k), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
        const __m512i pos_hi = _mm512_add_epi64(pos_lo, _mm512_set1_epi64(8));
        const __mmask8 pass_lo = static_cast<__mmask8>(pass), pass_hi = static_cast<__mmask8>(pass >> 8);
        _mm512_storeu_si512(top.p.data() + at, _mm512_maskz_compress_epi64(pass_lo, pos_lo));
        _mm512_storeu_si512(top.p.data() + at + __builtin_popcount(pass_lo), _mm512_maskz_compress_epi64(pass_hi, pos_hi));
        _mm512_storeu_si512(top.l.data() + at, _mm512_set1_epi32(lp.line));
        top.size = at + __builtin_popcount(pass);
    }
}
#endif  // FS_X86

// ---------------------------------------------------------------- runs of lines, one query
// A selected line with a non-empty list. Lines are scanned in runs: maximal sequences of
// lines with the same probe whose row ranges follow each other (hi of one == lo of the
// next), so that a block of 32 rows shared by two short lists is summed once for the run
// and only the epilogue (approx, threshold) runs per line. The result is a set of the r
// smallest keys, so the order in which lines are scanned does not change it.
struct Seg {
    int64_t lo, hi;            // the list's rows
    int32_t probe;
    LineParams lp;
};

using SumsFn = void (*)(const uint8_t*, const uint8_t*, const uint8_t*, Py_ssize_t, uint16_t*);
using TermsFn = void (*)(const Args&, const uint16_t*, const uint8_t*, float, float*, float*);
using FinishFn = void (*)(const float*, const float*, uint32_t, int64_t, const LineParams&, TopR&);
using RunFn = void (*)(const Args&, const Seg*, size_t, const uint8_t*, const uint8_t*, int64_t, TopR&);

// The blocks of one run segs[0..count) (same probe, segs[i].hi == segs[i+1].lo): each block
// summed once, then finished for every line with rows in it. Inlined into a function of
// each SIMD level, so that the level's block functions inline into its loop.
template <SumsFn Sums, TermsFn Terms, FinishFn Finish>
__attribute__((always_inline)) inline void scan_run(const Args& a, const Seg* segs, size_t count, const uint8_t* lut,
                                                    const uint8_t* lut_wide, int64_t n, TopR& top) {
    const size_t block_bytes = static_cast<size_t>(a.m / 2) * 32;
    alignas(64) uint16_t sums[32];
    alignas(64) uint8_t lam_buf[32];
    alignas(64) float lam[32];
    alignas(64) float u[32];
    const float scale = segs[0].lp.scale;
    const int64_t lo = segs[0].lo, hi = segs[count - 1].hi;
    size_t s = 0;
    for (int64_t b = lo / 32; b <= (hi - 1) / 32; ++b) {
        const int64_t first = b * 32, end = first + 32;
        const uint8_t* lam_rows = lam_buf;  // the block's lambda indices, 32 readable bytes
        if (end <= n)
            lam_rows = a.lam_idx + first;
        else
            block_lam_idx(a, first, n, lam_buf);
        Sums(a.packed + static_cast<size_t>(b) * block_bytes, lut, lut_wide, a.m, sums);
        Terms(a, sums, lam_rows, scale, lam, u);  // once per block, shared by its lines
        for (;;) {  // the lines of the run with rows in this block, in row order
            const Seg& g = segs[s];
            top.make_room();
            uint32_t rows = row_mask(b, g.lo, g.hi);
            if (a.allowed) rows &= a.allowed[b];
            if (rows) Finish(lam, u, rows, first, g.lp, top);
            if (g.hi > end) break;                    // it goes on in the next block
            if (++s == count || g.hi == end) break;   // the next line starts in the next block
        }
    }
}

void scan_run_portable(const Args& a, const Seg* segs, size_t count, const uint8_t* lut, const uint8_t* lut_wide,
                       int64_t n, TopR& top) {
    scan_run<block_sums_portable, block_terms_portable, finish_block_portable>(a, segs, count, lut, lut_wide, n, top);
}

#if FS_X86
__attribute__((target("avx2"))) void scan_run_avx2(const Args& a, const Seg* segs, size_t count, const uint8_t* lut,
                                                   const uint8_t* lut_wide, int64_t n, TopR& top) {
    scan_run<block_sums_avx2, block_terms_avx2, finish_block_avx2>(a, segs, count, lut, lut_wide, n, top);
}

__attribute__((target("avx512f,avx512bw"))) void scan_run_avx512(const Args& a, const Seg* segs, size_t count,
                                                                 const uint8_t* lut, const uint8_t* lut_wide,
                                                                 int64_t n, TopR& top) {
    scan_run<block_sums_avx512, block_terms_avx512, finish_block_avx512>(a, segs, count, lut, lut_wide, n, top);
}
#endif

// The query's non-empty lines, in the order of line_list.
void collect_segs(const Args& a, Py_ssize_t q, std::vector<Seg>& segs) {
    segs.clear();
    for (Py_ssize_t l = 0; l < a.nlines; ++l) {
        const size_t ql = static_cast<size_t>(q) * a.nlines + l;
        const int64_t list = a.line_list[ql];
        const int64_t lo = a.offsets[list], hi = a.offsets[list + 1];
        if (hi <= lo) continue;
        segs.push_back(Seg{lo, hi, a.line_probe[ql],
                           LineParams{a.line_c[ql], a.line_alpha[ql], a.line_const[ql], a.scale[q],
                                      static_cast<int32_t>(l)}});
    }
}

void scan_query(const Args& a, Py_ssize_t q, int64_t n, TopR& top, std::vector<uint8_t>& lut512,
                std::vector<char>& prepared, std::vector<Seg>& segs) {
    const Py_ssize_t m = a.m;
    const uint8_t* lut_q = a.lut8 + static_cast<size_t>(q) * a.nprobe * m * 16;
    RunFn run_fn = scan_run_portable;
#if FS_X86
    if (a.level == LEVEL_AVX512) run_fn = scan_run_avx512;
    if (a.level == LEVEL_AVX2) run_fn = scan_run_avx2;
#endif
    top.reset(a.r);
    std::fill(prepared.begin(), prepared.end(), 0);
    collect_segs(a, q, segs);
    for (size_t i = 0, j; i < segs.size(); i = j) {
        const int32_t probe = segs[i].probe;
        for (j = i + 1; j < segs.size() && segs[j].probe == probe && segs[j].lo == segs[j - 1].hi; ++j) {
        }
        const uint8_t* lut = lut_q + static_cast<size_t>(probe) * m * 16;
        const uint8_t* wide = nullptr;
#if FS_X86
        if (a.level == LEVEL_AVX512) {
            uint8_t* dst = lut512.data() + static_cast<size_t>(probe) * (m / 4) * 128;
            if (!prepared[probe]) {
                prepare_lut_avx512(lut, m, dst);
                prepared[probe] = 1;
            }
            wide = dst;
        }
#endif
        run_fn(a, segs.data() + i, j - i, lut, wide, n, top);
    }
    top.drain(a.out_d + static_cast<size_t>(q) * a.r, a.out_p + static_cast<size_t>(q) * a.r,
              a.out_l + static_cast<size_t>(q) * a.r);
}

void run_scan(const Args& a, int64_t n, int threads) {
    over_queries(a.nq, threads, [&]() {
        TopR top;
        std::vector<uint8_t> lut512(a.level == LEVEL_AVX512 ? static_cast<size_t>(a.nprobe) * (a.m / 4) * 128 : 0);
        std::vector<char> prepared(static_cast<size_t>(a.nprobe));
        std::vector<Seg> segs;
        segs.reserve(static_cast<size_t>(a.nlines));
        return [&a, n, top = std::move(top), lut512 = std::move(lut512), prepared = std::move(prepared),
                segs = std::move(segs)](Py_ssize_t q) mutable { scan_query(a, q, n, top, lut512, prepared, segs); };
    });
}

// ---------------------------------------------------------------- exact re-rank
// rerank4: per query, the exact ADC distance of each candidate (cand_pos[q, i] >= 0; the
// scan pads with -1 at the end) of line l = cand_line[q, i], list = line_list[q, l] (anchor
// centroid A = list / nedge, far end s = edges[A, list % nedge]):
//   sa = sum over pairs p of ((lut[lo] + TA[lo]) + lut[hi]) + TA[hi]        (in p order)
//   sd = sum over pairs p of (TS[lo] - TA[lo]) + (TS[hi] - TA[hi])
//   d = ((b + lam * ((lam * c) + alpha)) + sa) + lam * sd
// with lo = 32p + (byte & 15), hi = 32p + 16 + (byte >> 4), lut the query's float tables,
// TA/TS the float tables of A and s (indexer.fastscan_search._rerank's float32 operations,
// in its order: both give the same bits). Then the k smallest, ascending, ties in candidate
// order, NaN last, padded with (inf, -1).
struct RerankArgs {
    const int64_t* cand_pos;   // (nq, r)
    const int32_t* cand_line;  // (nq, r)
    const int64_t* line_list;  // (nq, nlines)
    const float* line_b;
    const float* line_c;
    const float* line_alpha;
    const float* lutq;         // (nq, M, 16)
    const float* tables;       // (ncent, M, 16)
    const int32_t* edges;      // (ncent, nedge)
    const uint8_t* packed;
    const uint8_t* lam_idx;
    const float* lam_values;
    float* out_d;              // (nq, k)
    int64_t* out_p;
    Py_ssize_t nq, r, nlines, m, ncent, nedge, nlambda, k, n;
    int level;
    std::atomic<int> bad{0};   // a candidate out of range (a caller's bug): raise, never read
};

struct RerankScratch {
    std::vector<uint8_t> codes;   // (M/2, rpad): codes of the candidates, pair-major
    std::vector<int32_t> ta, ts;  // table offsets of the anchor and far end
    std::vector<float> b, c, alpha, lam, dist;
    Py_ssize_t rpad = 0;
    void reset(Py_ssize_t r, Py_ssize_t m) {
        rpad = (r + 15) / 16 * 16;
        codes.assign(static_cast<size_t>(m / 2) * rpad, 0);
        for (auto* v : {&ta, &ts}) v->assign(rpad, 0);
        for (auto* v : {&b, &c, &alpha, &lam, &dist}) v->assign(rpad, 0.0f);
    }
};

// Gather the candidates of query q into the scratch; returns how many (or -1: out of range).
Py_ssize_t rerank_gather(const RerankArgs& a, Py_ssize_t q, RerankScratch& w) {
    const Py_ssize_t half = a.m / 2, row = a.m * 16;
    const int64_t* pos = a.cand_pos + q * a.r;
    const int32_t* line = a.cand_line + q * a.r;
    Py_ssize_t n = 0;
    while (n < a.r && pos[n] >= 0) ++n;
    for (Py_ssize_t i = 0; i < n; ++i) {
        const int64_t j = pos[i];
        const int32_t li = line[i];
        if (j >= a.n || li < 0 || li >= a.nlines) return -1;
        const int64_t lst = a.line_list[q * a.nlines + li];
        if (lst < 0 || lst >= a.ncent * a.nedge) return -1;
        const int64_t cen = lst / a.nedge, far = a.edges[lst];
        if (far < 0 || far >= a.ncent || a.lam_idx[j] >= a.nlambda) return -1;
        w.ta[i] = static_cast<int32_t>(cen * row);
        w.ts[i] = static_cast<int32_t>(far * row);
        w.b[i] = a.line_b[q * a.nlines + li];
        w.c[i] = a.line_c[q * a.nlines + li];
        w.alpha[i] = a.line_alpha[q * a.nlines + li];
        w.lam[i] = a.lam_values[a.lam_idx[j]];
        const uint8_t* blk = a.packed + static_cast<size_t>(j >> 5) * half * 32 + (j & 31);
        for (Py_ssize_t p = 0; p < half; ++p) w.codes[p * w.rpad + i] = blk[p * 32];
    }
    for (Py_ssize_t i = n; i < w.rpad; ++i) {  // padding: valid offsets, ignored
        w.ta[i] = w.ts[i] = 0;
        for (Py_ssize_t p = 0; p < half; ++p) w.codes[p * w.rpad + i] = 0;
    }
    return n;
}

inline float rerank_finish(float b, float c, float alpha, float lam, float sa, float sd) {
    float t = lam * c;
    t = t + alpha;
    t = lam * t;
    float d = b + t;
    d = d + sa;
    return d + lam * sd;
}

void rerank_dist_portable(const RerankArgs& a, const float* lut, Py_ssize_t n, RerankScratch& w) {
    const Py_ssize_t half = a.m / 2;
    for (Py_ssize_t i = 0; i < n; ++i) {
        const float* ta = a.tables + w.ta[i];
        const float* ts = a.tables + w.ts[i];
        float sa = 0.0f, sd = 0.0f;
        for (Py_ssize_t p = 0; p < half; ++p) {
            const uint32_t byte = w.codes[p * w.rpad + i];
            const Py_ssize_t lo = 32 * p + (byte & 15u), hi = 32 * p + 16 + (byte >> 4);
            const float x = ta[lo], y = ta[hi];
            sa = sa + (((lut[lo] + x) + lut[hi]) + y);
            sd = sd + ((ts[lo] - x) + (ts[hi] - y));
        }
        w.dist[i] = rerank_finish(w.b[i], w.c[i], w.alpha[i], w.lam[i], sa, sd);
    }
}

#if FS_X86
// 16 candidates at a time: six gathers per sub-code pair, the scalar path's operations lane
// by lane (so the same bits)
__attribute__((target("avx512f,avx512bw"))) void rerank_dist_avx512(const RerankArgs& a, const float* lut,
                                                                    Py_ssize_t n, RerankScratch& w) {
    const Py_ssize_t half = a.m / 2;
    const __m512i low4 = _mm512_set1_epi32(15);
    for (Py_ssize_t i0 = 0; i0 < n; i0 += 16) {
        const __m512i ta = _mm512_loadu_si512(w.ta.data() + i0);
        const __m512i ts = _mm512_loadu_si512(w.ts.data() + i0);
        __m512 sa = _mm512_setzero_ps(), sd = _mm512_setzero_ps();
        for (Py_ssize_t p = 0; p < half; ++p) {
            const __m512i byte = _mm512_cvtepu8_epi32(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.codes.data() + p * w.rpad + i0)));
            const __m512i lo = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(32 * p)),
                                                _mm512_and_si512(byte, low4));
            const __m512i hi = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(32 * p + 16)),
                                                _mm512_srli_epi32(byte, 4));
            const __m512 lut_lo = _mm512_i32gather_ps(lo, lut, 4);
            const __m512 lut_hi = _mm512_i32gather_ps(hi, lut, 4);
            const __m512 x = _mm512_i32gather_ps(_mm512_add_epi32(ta, lo), a.tables, 4);
            const __m512 y = _mm512_i32gather_ps(_mm512_add_epi32(ta, hi), a.tables, 4);
            const __m512 s_lo = _mm512_i32gather_ps(_mm512_add_epi32(ts, lo), a.tables, 4);
            const __m512 s_hi = _mm512_i32gather_ps(_mm512_add_epi32(ts, hi), a.tables, 4);
            sa = _mm512_add_ps(sa, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(lut_lo, x), lut_hi), y));
            sd = _mm512_add_ps(sd, _mm512_add_ps(_mm512_sub_ps(s_lo, x), _mm512_sub_ps(s_hi, y)));
        }
        const __m512 lam = _mm512_loadu_ps(w.lam.data() + i0);
        __m512 t = _mm512_mul_ps(lam, _mm512_loadu_ps(w.c.data() + i0));
        t = _mm512_add_ps(t, _mm512_loadu_ps(w.alpha.data() + i0));
        t = _mm512_mul_ps(lam, t);
        __m512 d = _mm512_add_ps(_mm512_loadu_ps(w.b.data() + i0), t);
        d = _mm512_add_ps(d, sa);
        d = _mm512_add_ps(d, _mm512_mul_ps(lam, sd));
        _mm512_storeu_ps(w.dist.data() + i0, d);
    }
}
#endif

// (d, p) into the ascending best[:filled] of k places after its equals, NaN last
inline Py_ssize_t insert_best(float* best_d, int64_t* best_p, Py_ssize_t filled, Py_ssize_t k, float d,
                              int64_t p) {
    auto before = [](float x, float y) { return x < y || (y != y && x == x); };
    if (filled == k) {
        if (!before(d, best_d[k - 1])) return filled;
        --filled;
    }
    Py_ssize_t j = filled - 1;
    while (j >= 0 && before(d, best_d[j])) {
        best_d[j + 1] = best_d[j];
        best_p[j + 1] = best_p[j];
        --j;
    }
    best_d[j + 1] = d;
    best_p[j + 1] = p;
    return filled + 1;
}

void rerank_query(RerankArgs& a, Py_ssize_t q, RerankScratch& w) {
    const Py_ssize_t n = rerank_gather(a, q, w);
    float* best_d = a.out_d + q * a.k;
    int64_t* best_p = a.out_p + q * a.k;
    Py_ssize_t filled = 0;
    if (n < 0) {
        a.bad = 1;
    } else {
        const float* lut = a.lutq + q * a.m * 16;
#if FS_X86
        if (a.level == LEVEL_AVX512)
            rerank_dist_avx512(a, lut, n, w);
        else
#endif
            rerank_dist_portable(a, lut, n, w);
        const int64_t* pos = a.cand_pos + q * a.r;
        for (Py_ssize_t i = 0; i < n; ++i) filled = insert_best(best_d, best_p, filled, a.k, w.dist[i], pos[i]);
    }
    for (Py_ssize_t i = filled; i < a.k; ++i) {
        best_d[i] = kInf;
        best_p[i] = -1;
    }
}

void run_rerank(RerankArgs& a, int threads) {
    over_queries(a.nq, threads, [&]() {
        RerankScratch w;
        w.reset(a.r, a.m);
        return [&a, w = std::move(w)](Py_ssize_t q) mutable { rerank_query(a, q, w); };
    });
}

// ---------------------------------------------------------------- Python glue
PyObject* py_scan4(PyObject*, PyObject* args) {
    Buffers bufs;
    Py_buffer* v = bufs.b;
    Py_ssize_t nq, nprobe, m, nlines, nlists, nlambda, r;
    int threads, level;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*y*y*w*w*w*nnnnnnnii", &v[0], &v[1], &v[2], &v[3], &v[4],
                          &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[14], &v[11], &v[12], &v[13], &nq, &nprobe,
                          &m, &nlines, &nlists, &nlambda, &r, &threads, &level))
        return nullptr;
    bufs.count = 15;  // ParseTuple releases what it filled on failure only
    if (m < 2 || m > 64 || m % 2 || r < 1 || nlambda < 1 || level < 0 || level > cpu_level()) {
        PyErr_SetString(PyExc_ValueError, "_fastscan.scan4: bad M, r, nlambda or level");
        return nullptr;
    }
    const int64_t n = v[9].len;
    // the sizes Python promised: a mismatch is a bug in indexer.fastscan, never a crash
    const Py_ssize_t expect[14] = {nq * nprobe * m * 16, nq * 4, nq * nlines * 8, nq * nlines * 4,
                                   nq * nlines * 4, nq * nlines * 4, nq * nlines * 4, (nlists + 1) * 8,
                                   ((n + 31) / 32) * (m / 2) * 32, n, nlambda * 4, nq * r * 4, nq * r * 8,
                                   nq * r * 4};
    if (v[14].len != 0 && v[14].len != ((n + 31) / 32) * 4) {
        PyErr_Format(PyExc_ValueError, "_fastscan.scan4: allowed has %zd bytes, expected 0 or %zd", v[14].len,
                     static_cast<Py_ssize_t>(((n + 31) / 32) * 4));
        return nullptr;
    }
    if (!sizes_match("_fastscan.scan4", v, expect, 14, 8)) return nullptr;
    Args a{static_cast<const uint8_t*>(v[0].buf), static_cast<const float*>(v[1].buf),
           static_cast<const int64_t*>(v[2].buf), static_cast<const int32_t*>(v[3].buf),
           static_cast<const float*>(v[4].buf), static_cast<const float*>(v[5].buf),
           static_cast<const float*>(v[6].buf), static_cast<const int64_t*>(v[7].buf),
           static_cast<const uint8_t*>(v[8].buf), static_cast<const uint8_t*>(v[9].buf),
           static_cast<const float*>(v[10].buf),
           v[14].len ? static_cast<const uint32_t*>(v[14].buf) : nullptr, static_cast<float*>(v[11].buf), static_cast<int64_t*>(v[12].buf),
           static_cast<int32_t*>(v[13].buf), nq, nprobe, m, nlines, r, level};
    Py_BEGIN_ALLOW_THREADS
    run_scan(a, n, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject* py_rerank4(PyObject*, PyObject* args) {
    Buffers bufs;
    Py_buffer* v = bufs.b;
    Py_ssize_t nq, r, nlines, m, ncent, nedge, nlambda, k;
    int threads, level;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*y*y*w*w*nnnnnnnnii", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                          &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13], &nq, &r, &nlines, &m, &ncent,
                          &nedge, &nlambda, &k, &threads, &level))
        return nullptr;
    bufs.count = 14;
    if (m < 2 || m > 64 || m % 2 || r < 1 || k < 1 || nlambda < 1 || nedge < 1 || ncent < 1 || level < 0 ||
        level > cpu_level() || ncent * m * 16 >= (int64_t{1} << 31)) {
        PyErr_SetString(PyExc_ValueError, "_fastscan.rerank4: bad M, r, k, nlambda, nedge, tables or level");
        return nullptr;
    }
    const int64_t n = v[10].len;
    const Py_ssize_t expect[14] = {nq * r * 8, nq * r * 4, nq * nlines * 8, nq * nlines * 4, nq * nlines * 4,
                                   nq * nlines * 4, nq * m * 16 * 4, ncent * m * 16 * 4, ncent * nedge * 4,
                                   ((n + 31) / 32) * (m / 2) * 32, n, nlambda * 4, nq * k * 4, nq * k * 8};
    if (!sizes_match("_fastscan.rerank4", v, expect, 14, 9)) return nullptr;
    RerankArgs a;
    a.cand_pos = static_cast<const int64_t*>(v[0].buf);
    a.cand_line = static_cast<const int32_t*>(v[1].buf);
    a.line_list = static_cast<const int64_t*>(v[2].buf);
    a.line_b = static_cast<const float*>(v[3].buf);
    a.line_c = static_cast<const float*>(v[4].buf);
    a.line_alpha = static_cast<const float*>(v[5].buf);
    a.lutq = static_cast<const float*>(v[6].buf);
    a.tables = static_cast<const float*>(v[7].buf);
    a.edges = static_cast<const int32_t*>(v[8].buf);
    a.packed = static_cast<const uint8_t*>(v[9].buf);
    a.lam_idx = static_cast<const uint8_t*>(v[10].buf);
    a.lam_values = static_cast<const float*>(v[11].buf);
    a.out_d = static_cast<float*>(v[12].buf);
    a.out_p = static_cast<int64_t*>(v[13].buf);
    a.nq = nq; a.r = r; a.nlines = nlines; a.m = m; a.ncent = ncent; a.nedge = nedge; a.nlambda = nlambda;
    a.k = k; a.n = n; a.level = level;
    Py_BEGIN_ALLOW_THREADS
    run_rerank(a, threads);
    Py_END_ALLOW_THREADS
    if (a.bad) {
        PyErr_SetString(PyExc_ValueError, "_fastscan.rerank4: a candidate's row, line, list or far end is out of range");
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* py_cpu_level(PyObject*, PyObject*) { return PyLong_FromLong(cpu_level()); }

PyMethodDef methods[] = {
    {"scan4", py_scan4, METH_VARARGS,
     "scan4(lut8, scale, line_list, line_probe, line_const, line_c, line_alpha, offsets, packed, lam_idx, "
     "lam_values, allowed, out_d, out_p, out_l, nq, nprobe, M, nlines, nlists, nlambda, r, threads, level): "
     "the 4-bit fast scan; use indexer.fastscan.scan4, which checks the arguments"},
    {"rerank4", py_rerank4, METH_VARARGS,
     "rerank4(cand_pos, cand_line, line_list, line_b, line_c, line_alpha, lutq, tables, edges, packed, lam_idx, "
     "lam_values, out_d, out_p, nq, r, nlines, M, ncent, nedge, nlambda, k, threads, level): the exact ADC "
     "re-rank of the fast scan's candidates; use indexer.fastscan_search, which checks the arguments"},
    {"refine", py_refine, METH_VARARGS,
     "refine(queries, pos, rows, f16, out_d, out_p, nq, d, r, n, width, k, kind, mode, empty, threads, level): "
     "distances to the candidates' stored rows and the k best; use indexer.refine_kernel.refine_rows, "
     "which checks the arguments"},
    {"prepare", py_prepare, METH_VARARGS,
     "prepare(dist_qc, edges, edge_len2, rule, lutq, tables, t_min, t_span, line_list, line_probe, line_b, line_c, "
     "line_alpha, line_const, lut8, scale, nq, ncent, nedge, nprobe, nlines, M, threads, level): probes, lines "
     "and quantized tables of the fast scan; use indexer.fastscan_search, which checks the arguments"},
    {"cpu_level", py_cpu_level, METH_NOARGS, "best SIMD level of this CPU: 0 portable, 1 avx2, 2 avx512"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "indexer._fastscan", "native kernels: the 4-bit fast scan, its exact re-rank, refinement", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__fastscan(void) { return PyModule_Create(&module); }
