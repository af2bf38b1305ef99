/* SHA-256 routes (see _sha256.h). */
#define _GNU_SOURCE
#include "_sha256.h"

#include <dlfcn.h>
#include <link.h>
#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

typedef void (*blocks_fn)(uint32_t state[8], const uint8_t *p, size_t nblocks);

static inline uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void blocks_portable(uint32_t state[8], const uint8_t *p, size_t nblocks) {
    for (; nblocks; nblocks--, p += 64) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
                   (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
            uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHANI_CODE 1

/* The state is kept as (ABEF, CDGH), the order sha256rnds2 works in. Each group of four
 * rounds: two sha256rnds2; the message schedule by sha256msg1/sha256msg2. */
__attribute__((target("sha,sse4.1,ssse3"))) static void
blocks_shani(uint32_t state[8], const uint8_t *p, size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i abcd = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i efgh = _mm_loadu_si128((const __m128i *)&state[4]);
    __m128i cdab = _mm_shuffle_epi32(abcd, 0xB1);
    __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, hgfe, 8);
    __m128i cdgh = _mm_blend_epi16(hgfe, cdab, 0xF0);
    for (; nblocks; nblocks--, p += 64) {
        __m128i save_abef = abef, save_cdgh = cdgh, w[4];
        for (int i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
        for (int g = 0; g < 16; g++) {
            /* w[g % 4] holds words 4(g-4).. of the schedule until replaced by 4g.. */
            if (g >= 4) {
                __m128i x = _mm_sha256msg1_epu32(w[g & 3], w[(g + 1) & 3]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(w[(g + 3) & 3], w[(g + 2) & 3], 4));
                w[g & 3] = _mm_sha256msg2_epu32(x, w[(g + 3) & 3]);
            }
            __m128i m = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i *)&K[4 * g]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(m, 0x0E));
        }
        abef = _mm_add_epi32(abef, save_abef);
        cdgh = _mm_add_epi32(cdgh, save_cdgh);
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
}

static int cpu_has_shani(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1)) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & bit_SHA) != 0;
}
#endif

/* OpenSSL's low-level SHA256_*: no algorithm fetch or lock per call, unlike its one-shot
 * SHA256() or EVP. The context is opaque here (112 bytes in every OpenSSL release). */
typedef union {
    unsigned char bytes[256];
    long double align;
} ossl_ctx;
typedef int (*ossl_init)(ossl_ctx *);
typedef int (*ossl_update)(ossl_ctx *, const void *, size_t);
typedef int (*ossl_final)(unsigned char *, ossl_ctx *);
static ossl_init ossl_sha256_init;
static ossl_update ossl_sha256_update;
static ossl_final ossl_sha256_final;

static int find_libcrypto(struct dl_phdr_info *info, size_t size, void *found) {
    (void)size;
    const char *name = info->dlpi_name;
    if (!name || !strstr(name, "/libcrypto.so")) return 0;
    void *lib = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
    if (!lib) return 0;
    ossl_init i = (ossl_init)dlsym(lib, "SHA256_Init");
    ossl_update u = (ossl_update)dlsym(lib, "SHA256_Update");
    ossl_final f = (ossl_final)dlsym(lib, "SHA256_Final");
    if (!i || !u || !f) {
        dlclose(lib);
        return 0;
    }
    /* the handle is kept open: the library stays loaded while the kernel uses it */
    ossl_sha256_init = i;
    ossl_sha256_update = u;
    ossl_sha256_final = f;
    *(int *)found = 1;
    return 1;
}

static int available[SHA_ROUTES] = {1, 0, 0};
static int route = SHA_PORTABLE;
static blocks_fn blocks = blocks_portable;

void sha256_probe(void) {
#ifdef HAVE_SHANI_CODE
    available[SHA_SHANI] = cpu_has_shani();
#endif
    int found = 0;
    dl_iterate_phdr(find_libcrypto, &found);
    available[SHA_LIBCRYPTO] = found;
    if (sha256_select(SHA_SHANI) != 0 && sha256_select(SHA_LIBCRYPTO) != 0)
        sha256_select(SHA_PORTABLE);
}

int sha256_route_available(int r) { return r >= 0 && r < SHA_ROUTES && available[r]; }

int sha256_select(int r) {
    if (!sha256_route_available(r)) return -1;
    route = r;
#ifdef HAVE_SHANI_CODE
    blocks = r == SHA_SHANI ? blocks_shani : blocks_portable;
#else
    blocks = blocks_portable;
#endif
    return 0;
}

int sha256_route(void) { return route; }

const char *sha256_route_name(int r) {
    static const char *names[SHA_ROUTES] = {"portable", "shani", "libcrypto"};
    return r >= 0 && r < SHA_ROUTES ? names[r] : "?";
}

void sha256_digest(const uint8_t *data, size_t len, uint8_t out[32]) {
    if (route == SHA_LIBCRYPTO) {
        ossl_ctx ctx;
        ossl_sha256_init(&ctx);
        ossl_sha256_update(&ctx, data, len);
        ossl_sha256_final(out, &ctx);
        return;
    }
    uint32_t s[8];
    memcpy(s, H0, sizeof s);
    size_t full = len / 64, rest = len % 64;
    blocks(s, data, full);
    uint8_t tail[128];
    if (rest) memcpy(tail, data + full * 64, rest);
    tail[rest] = 0x80;
    size_t tlen = rest + 9 <= 64 ? 64 : 128;
    memset(tail + rest + 1, 0, tlen - rest - 1);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[tlen - 1 - i] = (uint8_t)(bits >> (8 * i));
    blocks(s, tail, tlen / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s[i] >> 8);
        out[4 * i + 3] = (uint8_t)s[i];
    }
}
