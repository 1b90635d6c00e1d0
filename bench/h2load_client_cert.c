/* LD_PRELOAD library that gives h2load a TLS client certificate.
 *
 * h2load (nghttp2-client 1.52, Debian 12) has no option for one, and the servers benchmarked
 * here require one. OpenSSL's configuration file cannot add it either: its system_default
 * section refuses Certificate/PrivateKey commands. So this wraps SSL_CTX_new, which h2load
 * calls once at start-up, and loads $H2LOAD_CLIENT_CERT (PEM chain) and $H2LOAD_CLIENT_KEY into
 * the new context. Every connection h2load makes then presents that certificate when asked; the
 * TLS work stays in h2load, as it would with a built-in option. Without both variables it
 * changes nothing. Built by bench/h2.sh:
 *
 *   cc -shared -fPIC -O2 -o h2load_client_cert.so h2load_client_cert.c -ldl -lssl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>

SSL_CTX* SSL_CTX_new(const SSL_METHOD* method) {
  typedef SSL_CTX* (*ctx_new_fn)(const SSL_METHOD*);
  static ctx_new_fn real_ctx_new;
  if (real_ctx_new == NULL) real_ctx_new = (ctx_new_fn)dlsym(RTLD_NEXT, "SSL_CTX_new");
  if (real_ctx_new == NULL) {
    fprintf(stderr, "h2load_client_cert: SSL_CTX_new not found: %s\n", dlerror());
    abort();
  }
  SSL_CTX* ctx = real_ctx_new(method);
  const char* cert = getenv("H2LOAD_CLIENT_CERT");
  const char* key = getenv("H2LOAD_CLIENT_KEY");
  if (ctx != NULL && cert != NULL && key != NULL) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      /* A benchmark that silently ran without its certificate would measure refusals. */
      fprintf(stderr, "h2load_client_cert: cannot load %s with %s\n", cert, key);
      abort();
    }
  }
  return ctx;
}
