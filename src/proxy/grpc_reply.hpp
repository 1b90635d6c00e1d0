#pragma once
// Private to h2_*.cpp: mtlsd's own answer to a gRPC call, as Envoy's local replies give it. A
// request whose content-type names gRPC gets, in place of the HTTP answer (a 403 refusal, a 502
// of an upstream that failed before its head, a 431...), a Trailers-Only response (gRPC's
// PROTOCOL-HTTP2.md, "Responses"): one HEADERS frame with END_STREAM carrying `:status 200`,
// `content-type: application/grpc`, `grpc-status` (the status gRPC reads from the HTTP status
// mtlsd meant) and `grpc-message` (mtlsd's reason). Without it a gRPC client saw only the HTTP
// status, as "Received http2 header with status: 403", and mtlsd's reason was lost.
#include <string>
#include <string_view>

#include "mtlsd/proxy/http_forwarding.hpp"

namespace mtlsd::proxy::h2 {

// Whether a request's content-type names gRPC: "application/grpc", alone or followed by "+" (a
// codec: +proto, +json) or ";" (parameters), in any case. Not application/grpc-web, whose
// clients read the status from the body (Envoy's Grpc::Common::hasGrpcContentType).
bool is_grpc_content_type(std::string_view value);

// The gRPC status a client reads from an HTTP status (gRPC's http-grpc-status-mapping.md, Envoy's
// Grpc::Utility::httpToGrpcStatus): 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
// 404 UNIMPLEMENTED, 429, 502, 503 and 504 UNAVAILABLE, any other UNKNOWN.
int grpc_status_of_http(int http_status);

// `text` as grpc-message carries it: every byte outside 0x20-0x7E, and '%', as %XX (upper-case
// hex digits).
std::string grpc_percent_encode(std::string_view text);

// The fields of a Trailers-Only answer after its `:status 200`: content-type, grpc-status and
// grpc-message (`message`, percent-encoded).
header_list grpc_reply_fields(int grpc_status, std::string_view message);

// What a gRPC client is told of an upstream that failed before its response head (the stream's
// 502 and `detail`): the detail (a read's error, a reset, a closed connection), or "upstream
// unavailable" for a connect that failed, whose detail names the upstream's address or host. The
// address stays in mtlsd's log, as for the refusal of a session whose first connect failed.
std::string upstream_failure_message(std::string_view detail);

}  // namespace mtlsd::proxy::h2
