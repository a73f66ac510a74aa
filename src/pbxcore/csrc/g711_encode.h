/* G.711 encoders (PCM16 -> μ-law / A-law), bit-exact with ITU-T G.191, without tables.
 *
 * A table lookup per sample is a gather, which compilers do not vectorize on x86 before
 * AVX-512, so it runs at about one sample per cycle. These kernels compute the segment and
 * mantissa instead: the magnitude is converted to float, whose exponent field is the
 * segment and whose top mantissa bits are the G.711 mantissa, so a whole vector of samples
 * is encoded with shifts, adds, min/max and packs (see g711_encode.c).
 *
 * Variants: portable C (any host), SSE2 (every x86-64), AVX2 (picked at run time when the
 * CPU and OS support it). pbx_g711_init() selects the best one; tests force each one with
 * pbx_g711_select() to check it bit-exact.
 */
#ifndef PBX_G711_ENCODE_H
#define PBX_G711_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* internal to the extension module: no export, no PLT indirection on each call */
#if defined(__GNUC__) || defined(__clang__)
#define PBX_G711_API __attribute__((visibility("hidden")))
#else
#define PBX_G711_API
#endif

/* src: n little-endian int16 samples at any alignment; dst: n codes. */
typedef void (*pbx_g711_encode_fn)(const uint8_t *src, size_t n, uint8_t *dst);

enum {
    PBX_G711_PORTABLE = 0,
    PBX_G711_SSE2 = 1,
    PBX_G711_AVX2 = 2,
    PBX_G711_NVARIANTS = 3
};

/* Encode with the selected variant (portable until pbx_g711_init() has run). */
PBX_G711_API void pbx_g711_lin2ulaw_le(const uint8_t *src, size_t n, uint8_t *dst);
PBX_G711_API void pbx_g711_lin2alaw_le(const uint8_t *src, size_t n, uint8_t *dst);

/* Select the best variant for this CPU; idempotent. */
PBX_G711_API void pbx_g711_init(void);
/* "portable", "sse2", "avx2"; NULL for an unknown number */
PBX_G711_API const char *pbx_g711_variant_name(int variant);
/* 1 if this build has the variant and this CPU can run it */
PBX_G711_API int pbx_g711_variant_supported(int variant);
/* 0 on success, -1 if the variant is not supported here. For tests: calls running
 * concurrently finish with either kernel, both correct. */
PBX_G711_API int pbx_g711_select(int variant);
PBX_G711_API int pbx_g711_selected(void);

/* Native byte order int16 (the C-level API of pbxcore._g711). */
PBX_G711_API void pbx_g711_lin2ulaw_native(const int16_t *src, size_t n, uint8_t *dst);
PBX_G711_API void pbx_g711_lin2alaw_native(const int16_t *src, size_t n, uint8_t *dst);

#ifdef __cplusplus
}
#endif

#endif
