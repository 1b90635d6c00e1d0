#pragma once
// Socket types used on the connection path: those of net/socket.hpp, named in this namespace so
// the connection path's code reads `stream_socket` without a prefix.
#include <boost/asio/awaitable.hpp>
#include <optional>

#include "mtlsd/config/cidr.hpp"
#include "mtlsd/net/socket.hpp"

namespace mtlsd::proxy {

namespace asio = boost::asio;
using net::error_code;
using net::stream_acceptor;
using net::stream_endpoint;
using net::stream_socket;

using net::format_endpoint;
using net::literal_endpoint;
using net::open_acceptor;
using net::set_nodelay;

}  // namespace mtlsd::proxy
