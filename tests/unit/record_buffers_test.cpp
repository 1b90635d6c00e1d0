// tls::record_buffers: the free list on its own, and, in this executable whose main installs it
// before OpenSSL allocates anything (as mtlsd's main does), OpenSSL's record buffers of a real
// TLS 1.3 exchange served from it. The second part is what an OpenSSL whose buffers changed
// size would break.
#include "mtlsd/tls/record_buffers.hpp"

#include <gtest/gtest.h>
#include <malloc.h>
#include <openssl/ssl.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "mtlsd/tls/openssl.hpp"
#include "test_pki.hpp"

namespace {

namespace rb = mtlsd::tls::record_buffers;
bool installed = false;

TEST(RecordBuffers, ARecordSizedBlockComesBackToTheNextRequest) {
  void* first = rb::allocate(rb::smallest + 300);
  ASSERT_NE(first, nullptr);
  EXPECT_GE(malloc_usable_size(first), rb::block_size);
  const std::size_t before = rb::cached();
  rb::release(first);
  EXPECT_EQ(rb::cached(), before + 1);
  void* second = rb::allocate(rb::block_size);
  EXPECT_EQ(second, first);
  EXPECT_EQ(rb::cached(), before);
  rb::release(second);
}

TEST(RecordBuffers, OtherSizesGoStraightToMalloc) {
  const std::size_t before = rb::cached();
  // Not block_size + 1: malloc rounds that up to the very block block_size gets, which the
  // list then takes (and rightly: it serves any request up to block_size).
  for (std::size_t size : {std::size_t{64}, rb::smallest - 1, rb::block_size + 4096, 64 * 1024ul}) {
    void* block = rb::allocate(size);
    ASSERT_NE(block, nullptr);
    rb::release(block);
    EXPECT_EQ(rb::cached(), before) << size;
  }
  rb::release(nullptr);
  EXPECT_EQ(rb::cached(), before);
}

TEST(RecordBuffers, TheListIsCapped) {
  std::vector<void*> blocks;
  for (std::size_t i = 0; i < rb::max_cached + 4; ++i)
    blocks.push_back(rb::allocate(rb::smallest));
  for (void* b : blocks)
    rb::release(b);
  EXPECT_EQ(rb::cached(), rb::max_cached);
}

// Two SSL objects joined by a BIO pair, with the modes mtlsd's contexts set (tls/context.cpp).
struct tls_pair {
  mtlsd::tls::ssl_ctx_ptr server_ctx{SSL_CTX_new(TLS_server_method())};
  mtlsd::tls::ssl_ctx_ptr client_ctx{SSL_CTX_new(TLS_client_method())};
  mtlsd::tls::ssl_ptr server;
  mtlsd::tls::ssl_ptr client;

  tls_pair() {
    const auto root = mtlsd::test::make_root_ca({.cn = "Buffers Root"});
    const auto leaf = mtlsd::test::make_leaf(
        root, {.cn = "server", .dns_sans = {"server"}, .usage = mtlsd::test::key_usage::server});
    SSL_CTX_use_certificate(server_ctx.get(), leaf.cert());
    SSL_CTX_use_PrivateKey(server_ctx.get(), leaf.key());
    for (SSL_CTX* ctx : {server_ctx.get(), client_ctx.get()}) {
      SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
      SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
      SSL_CTX_set_read_ahead(ctx, 1);
    }
    server.reset(SSL_new(server_ctx.get()));
    client.reset(SSL_new(client_ctx.get()));
    BIO* server_end = nullptr;
    BIO* client_end = nullptr;
    BIO_new_bio_pair(&server_end, 0, &client_end, 0);
    SSL_set_bio(server.get(), server_end, server_end);
    SSL_set_bio(client.get(), client_end, client_end);
    SSL_set_accept_state(server.get());
    SSL_set_connect_state(client.get());
  }

  bool handshake() {
    for (int i = 0; i < 20; ++i) {
      const int c = SSL_do_handshake(client.get());
      const int s = SSL_do_handshake(server.get());
      if (c == 1 && s == 1) return true;
    }
    return false;
  }

  // The client sends `text`; the server reads it and answers with it.
  std::string round_trip(const std::string& text) {
    std::size_t n = 0;
    if (SSL_write_ex(client.get(), text.data(), text.size(), &n) != 1) return "client write";
    std::string got(text.size(), '\0');
    if (SSL_read_ex(server.get(), got.data(), got.size(), &n) != 1) return "server read";
    if (SSL_write_ex(server.get(), got.data(), n, &n) != 1) return "server write";
    std::string back(text.size(), '\0');
    if (SSL_read_ex(client.get(), back.data(), back.size(), &n) != 1) return "client read";
    back.resize(n);
    return back;
  }
};

TEST(RecordBuffers, InstalledBeforeOpenSSLAllocated) {
  EXPECT_TRUE(installed);
}

TEST(RecordBuffers, OpenSSLRecordBuffersAreServedFromTheList) {
  ASSERT_TRUE(installed);
  tls_pair pair;
  ASSERT_TRUE(pair.handshake());
  ASSERT_EQ(pair.round_trip("warm up"), "warm up");
  // Each round trip, both sides take a write buffer and a read buffer and give them back
  // (SSL_MODE_RELEASE_BUFFERS): four requests, each served by a block released before (bar
  // one or two while the list fills).
  const std::size_t before = rb::reused();
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(pair.round_trip("request " + std::to_string(i)), "request " + std::to_string(i));
  EXPECT_GE(rb::reused() - before, 36u);
  EXPECT_GT(rb::cached(), 0u);
}

}  // namespace

int main(int argc, char** argv) {
  installed = rb::install();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
