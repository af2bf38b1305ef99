/* SHA-256 for the verification kernel, by the fastest correct route this process has:
 *
 *   shani     the x86 SHA extensions, chosen by cpuid at run time;
 *   libcrypto the OpenSSL that Python's _hashlib already loaded, bound with dlsym (no
 *             OpenSSL headers or link-time dependency: when it is not loaded, the route is
 *             simply absent);
 *   portable  plain C, always available.
 *
 * All routes give the same digest; the tests compare each available one with hashlib.
 */
#ifndef PARITY_SHA256_H
#define PARITY_SHA256_H

#include <stddef.h>
#include <stdint.h>

enum { SHA_PORTABLE = 0, SHA_SHANI = 1, SHA_LIBCRYPTO = 2, SHA_ROUTES = 3 };

/* Probe the routes once (module init). */
void sha256_probe(void);
/* 1 when the route can run in this process. */
int sha256_route_available(int route);
/* Select a route; returns 0, or -1 (and keeps the current one) when it is not available. */
int sha256_select(int route);
/* The route in use. */
int sha256_route(void);
const char *sha256_route_name(int route);
void sha256_digest(const uint8_t *data, size_t len, uint8_t out[32]);

#endif
