/* G.711 encoders without tables, see g711_encode.h.
 *
 * μ-law (G.191 ulaw_compress): absno = (x < 0 ? ~x : x) >> 2, plus 33, clipped to 0x1FFF,
 * so 33 <= absno <= 8191. With e = floor(log2(absno)) (5..12) the segment is e - 5 and the
 * mantissa is the 4 bits after the leading one. As a float, absno's bits >> 19 are
 * ((e + 127) << 4) | mantissa, so (bits >> 19) - (132 << 4) = (segment << 4) | mantissa,
 * and the code is that, inverted in its low 7 bits, with 0x80 for x >= 0.
 *
 * A-law (G.191 alaw_compress): ix = (x < 0 ? ~x : x) >> 4, 0..2047. For ix >= 16,
 * ((e - 3) << 4) | mantissa = (bits >> 19) - (130 << 4) is G.191's value; below 32 G.191's
 * value is ix itself. The float formula is <= ix for ix < 16 and >= 32 for ix >= 32, so
 * max(formula, min(ix, 31)) is right everywhere. Then 0x80 for x >= 0, and XOR 0x55.
 *
 * The int -> float conversions are exact (at most 13 bits), so rounding mode, FTZ/DAZ and
 * FP exception flags play no part. Vector kernels work in 16-bit lanes and widen to 32 bits
 * only for the conversion; the intermediate values fit int16 (at most 139 << 4 | 15).
 */
#include "g711_encode.h"

#include <string.h>

/* -DPBX_G711_PORTABLE_ONLY builds what a non-x86 host gets */
#if !defined(PBX_G711_PORTABLE_ONLY) && (defined(__x86_64__) || defined(__i386__) || defined(_M_X64))
#if defined(__SSE2__) || defined(_M_X64)
#define PBX_HAVE_SSE2 1
#include <emmintrin.h>
#endif
/* AVX2 is compiled as a function-level target clone and only called after a CPU check */
#if defined(PBX_HAVE_SSE2) && (defined(__GNUC__) || defined(__clang__))
#define PBX_HAVE_AVX2 1
#include <immintrin.h>
#define PBX_TARGET_AVX2 __attribute__((target("avx2")))
#endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PBX_LOAD(p) __atomic_load_n(&(p), __ATOMIC_RELAXED)
#define PBX_STORE(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELAXED)
#else
#define PBX_LOAD(p) (p)
#define PBX_STORE(p, v) ((p) = (v))
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define PBX_BIG_ENDIAN 1
#else
#define PBX_BIG_ENDIAN 0
#endif

/* ---- portable: one sample at a time, branch-free; in 16-bit arithmetic where it can be,
 * so that compilers vectorize it with 16-bit lanes (GCC -O3: about as fast as SSE2) ---- */

static inline uint8_t ulaw_one(uint16_t u) {
    int16_t neg = (int16_t)(0 - (u >> 15));    /* -1 for x < 0, else 0 */
    int16_t mag = (int16_t)((int16_t)u ^ neg); /* x < 0 ? ~x : x, 0..32767 */
    int16_t absno = (int16_t)((mag >> 2) + 33); /* 33..8224 */
    absno = absno < 0x1FFF ? absno : 0x1FFF;
    float f = (float)absno;
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint16_t seg_mant = (uint16_t)((bits >> 19) - (132u << 4));
    return (uint8_t)((seg_mant ^ 0x7Fu) | (~neg & 0x80));
}

static inline uint8_t alaw_one(uint16_t u) {
    int16_t neg = (int16_t)(0 - (u >> 15));
    int16_t mag = (int16_t)((int16_t)u ^ neg);
    int16_t ix = (int16_t)(mag >> 4); /* 0..2047 */
    float f = (float)ix;
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    int16_t seg_mant = (int16_t)((int32_t)(bits >> 19) - (130 << 4));
    int16_t low = ix < 31 ? ix : 31;
    int16_t code = seg_mant > low ? seg_mant : low;
    return (uint8_t)(((uint16_t)code | (~neg & 0x80)) ^ 0x55u);
}

static inline uint16_t load_le16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
#if PBX_BIG_ENDIAN
    v = (uint16_t)((v >> 8) | (v << 8));
#endif
    return v;
}

static void ulaw_portable(const uint8_t *src, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++)
        dst[i] = ulaw_one(load_le16(src + 2 * i));
}

static void alaw_portable(const uint8_t *src, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++)
        dst[i] = alaw_one(load_le16(src + 2 * i));
}

/* ---- SSE2: 16 samples per step ---- */

#ifdef PBX_HAVE_SSE2
/* float bits >> 19 of the 8 non-negative int16 lanes of v, as int16 lanes */
static inline __m128i exp_mant_sse2(__m128i v) {
    const __m128i zero = _mm_setzero_si128();
    __m128i lo = _mm_castps_si128(_mm_cvtepi32_ps(_mm_unpacklo_epi16(v, zero)));
    __m128i hi = _mm_castps_si128(_mm_cvtepi32_ps(_mm_unpackhi_epi16(v, zero)));
    return _mm_packs_epi32(_mm_srli_epi32(lo, 19), _mm_srli_epi32(hi, 19));
}

static inline __m128i ulaw8_sse2(__m128i x) {
    __m128i neg = _mm_srai_epi16(x, 15);
    __m128i absno = _mm_add_epi16(_mm_srli_epi16(_mm_xor_si128(x, neg), 2), _mm_set1_epi16(33));
    absno = _mm_min_epi16(absno, _mm_set1_epi16(0x1FFF));
    __m128i code = _mm_sub_epi16(exp_mant_sse2(absno), _mm_set1_epi16(132 << 4));
    code = _mm_xor_si128(code, _mm_set1_epi16(0x7F));
    return _mm_or_si128(code, _mm_andnot_si128(neg, _mm_set1_epi16(0x80)));
}

static inline __m128i alaw8_sse2(__m128i x) {
    __m128i neg = _mm_srai_epi16(x, 15);
    __m128i ix = _mm_srai_epi16(_mm_xor_si128(x, neg), 4);
    __m128i code = _mm_sub_epi16(exp_mant_sse2(ix), _mm_set1_epi16(130 << 4));
    code = _mm_max_epi16(code, _mm_min_epi16(ix, _mm_set1_epi16(31)));
    code = _mm_or_si128(code, _mm_andnot_si128(neg, _mm_set1_epi16(0x80)));
    return _mm_xor_si128(code, _mm_set1_epi16(0x55));
}

#define PBX_SSE2_KERNEL(name, one8)                                                   \
    static inline void name##_step(const uint8_t *src, uint8_t *dst) {                \
        __m128i a = one8(_mm_loadu_si128((const __m128i *)src));                      \
        __m128i b = one8(_mm_loadu_si128((const __m128i *)(src + 16)));               \
        _mm_storeu_si128((__m128i *)dst, _mm_packus_epi16(a, b));                     \
    }                                                                                 \
    static void name(const uint8_t *src, size_t n, uint8_t *dst) {                    \
        size_t i = 0;                                                                 \
        for (; i + 16 <= n; i += 16)                                                  \
            name##_step(src + 2 * i, dst + i);                                        \
        if (i < n) { /* the tail goes through the same vector code */                 \
            uint8_t in[32] = {0}, out[16];                                            \
            memcpy(in, src + 2 * i, 2 * (n - i));                                     \
            name##_step(in, out);                                                     \
            memcpy(dst + i, out, n - i);                                              \
        }                                                                             \
    }

PBX_SSE2_KERNEL(ulaw_sse2, ulaw8_sse2)
PBX_SSE2_KERNEL(alaw_sse2, alaw8_sse2)
#endif

/* ---- AVX2: 32 samples per step ---- */

#ifdef PBX_HAVE_AVX2
PBX_TARGET_AVX2 static inline __m256i exp_mant_avx2(__m256i v) {
    /* unpack and pack both work within 128-bit lanes, so the order comes back */
    const __m256i zero = _mm256_setzero_si256();
    __m256i lo = _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_unpacklo_epi16(v, zero)));
    __m256i hi = _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_unpackhi_epi16(v, zero)));
    return _mm256_packs_epi32(_mm256_srli_epi32(lo, 19), _mm256_srli_epi32(hi, 19));
}

PBX_TARGET_AVX2 static inline __m256i ulaw16_avx2(__m256i x) {
    __m256i neg = _mm256_srai_epi16(x, 15);
    __m256i absno =
        _mm256_add_epi16(_mm256_srli_epi16(_mm256_xor_si256(x, neg), 2), _mm256_set1_epi16(33));
    absno = _mm256_min_epi16(absno, _mm256_set1_epi16(0x1FFF));
    __m256i code = _mm256_sub_epi16(exp_mant_avx2(absno), _mm256_set1_epi16(132 << 4));
    code = _mm256_xor_si256(code, _mm256_set1_epi16(0x7F));
    return _mm256_or_si256(code, _mm256_andnot_si256(neg, _mm256_set1_epi16(0x80)));
}

PBX_TARGET_AVX2 static inline __m256i alaw16_avx2(__m256i x) {
    __m256i neg = _mm256_srai_epi16(x, 15);
    __m256i ix = _mm256_srai_epi16(_mm256_xor_si256(x, neg), 4);
    __m256i code = _mm256_sub_epi16(exp_mant_avx2(ix), _mm256_set1_epi16(130 << 4));
    code = _mm256_max_epi16(code, _mm256_min_epi16(ix, _mm256_set1_epi16(31)));
    code = _mm256_or_si256(code, _mm256_andnot_si256(neg, _mm256_set1_epi16(0x80)));
    return _mm256_xor_si256(code, _mm256_set1_epi16(0x55));
}

#define PBX_AVX2_KERNEL(name, one16)                                                  \
    PBX_TARGET_AVX2 static inline void name##_step(const uint8_t *src, uint8_t *dst) { \
        __m256i a = one16(_mm256_loadu_si256((const __m256i *)src));                  \
        __m256i b = one16(_mm256_loadu_si256((const __m256i *)(src + 32)));           \
        /* packus interleaves the 128-bit lanes of a and b: put them back in order */ \
        __m256i codes = _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xD8);    \
        _mm256_storeu_si256((__m256i *)dst, codes);                                   \
    }                                                                                 \
    PBX_TARGET_AVX2 static void name(const uint8_t *src, size_t n, uint8_t *dst) {    \
        size_t i = 0;                                                                 \
        for (; i + 32 <= n; i += 32)                                                  \
            name##_step(src + 2 * i, dst + i);                                        \
        if (i < n) {                                                                  \
            uint8_t in[64] = {0}, out[32];                                            \
            memcpy(in, src + 2 * i, 2 * (n - i));                                     \
            name##_step(in, out);                                                     \
            memcpy(dst + i, out, n - i);                                              \
        }                                                                             \
    }

PBX_AVX2_KERNEL(ulaw_avx2, ulaw16_avx2)
PBX_AVX2_KERNEL(alaw_avx2, alaw16_avx2)
#endif

/* ---- dispatch ---- */

typedef struct {
    const char *name;
    pbx_g711_encode_fn ulaw, alaw;
} variant_t;

static const variant_t VARIANTS[PBX_G711_NVARIANTS] = {
    {"portable", ulaw_portable, alaw_portable},
#ifdef PBX_HAVE_SSE2
    {"sse2", ulaw_sse2, alaw_sse2},
#else
    {"sse2", NULL, NULL},
#endif
#ifdef PBX_HAVE_AVX2
    {"avx2", ulaw_avx2, alaw_avx2},
#else
    {"avx2", NULL, NULL},
#endif
};

static pbx_g711_encode_fn cur_ulaw = ulaw_portable;
static pbx_g711_encode_fn cur_alaw = alaw_portable;
static int cur_variant = PBX_G711_PORTABLE;

const char *pbx_g711_variant_name(int variant) {
    if (variant < 0 || variant >= PBX_G711_NVARIANTS)
        return NULL;
    return VARIANTS[variant].name;
}

int pbx_g711_variant_supported(int variant) {
    if (variant < 0 || variant >= PBX_G711_NVARIANTS || VARIANTS[variant].ulaw == NULL)
        return 0;
#ifdef PBX_HAVE_AVX2
    if (variant == PBX_G711_AVX2) {
        /* libgcc/compiler-rt check the CPUID bit and that the OS saves YMM state (XGETBV) */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }
#endif
    return 1;
}

int pbx_g711_select(int variant) {
    if (!pbx_g711_variant_supported(variant))
        return -1;
    PBX_STORE(cur_ulaw, VARIANTS[variant].ulaw);
    PBX_STORE(cur_alaw, VARIANTS[variant].alaw);
    PBX_STORE(cur_variant, variant);
    return 0;
}

int pbx_g711_selected(void) { return PBX_LOAD(cur_variant); }

void pbx_g711_init(void) {
    for (int v = PBX_G711_NVARIANTS - 1; v >= 0; v--)
        if (pbx_g711_select(v) == 0)
            return;
}

void pbx_g711_lin2ulaw_le(const uint8_t *src, size_t n, uint8_t *dst) {
    pbx_g711_encode_fn fn = PBX_LOAD(cur_ulaw);
    fn(src, n, dst);
}

void pbx_g711_lin2alaw_le(const uint8_t *src, size_t n, uint8_t *dst) {
    pbx_g711_encode_fn fn = PBX_LOAD(cur_alaw);
    fn(src, n, dst);
}

#if PBX_BIG_ENDIAN
void pbx_g711_lin2ulaw_native(const int16_t *src, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++)
        dst[i] = ulaw_one((uint16_t)src[i]);
}

void pbx_g711_lin2alaw_native(const int16_t *src, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++)
        dst[i] = alaw_one((uint16_t)src[i]);
}
#else
void pbx_g711_lin2ulaw_native(const int16_t *src, size_t n, uint8_t *dst) {
    pbx_g711_lin2ulaw_le((const uint8_t *)src, n, dst);
}

void pbx_g711_lin2alaw_native(const int16_t *src, size_t n, uint8_t *dst) {
    pbx_g711_lin2alaw_le((const uint8_t *)src, n, dst);
}
#endif
