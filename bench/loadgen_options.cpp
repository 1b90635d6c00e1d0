// mtlsd_loadgen's command line (see loadgen_options.hpp).
#include "loadgen_options.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string_view>

namespace loadgen {
namespace {

[[noreturn]] void usage(int code) {
  std::fputs(
      "usage: mtlsd_loadgen --port N --cert PEM --key PEM --ca PEM [options]\n"
      "  --mode handshakes|resumed|requests|latency|bulk|idle|pending|flood\n"
      "                         (default handshakes; bench/README.md says what each does)\n"
      "  --host IPV4            server address (default 127.0.0.1)\n"
      "  --server-name NAME     SNI and certificate name to verify (default localhost)\n"
      "  --path PATH            request path (default /small; bulk: /large)\n"
      "  --threads T            handshakes: concurrent loops; idle: opener threads (default 4)\n"
      "  --connections C        requests: 32, bulk: 1, idle: 200 (default)\n"
      "  --duration S           measured window in seconds (default 5)\n"
      "  --warmup S             unmeasured ramp-up before the window (default 1)\n"
      "  --count N              end the window after N operations (default: duration only)\n"
      "  --settle S             idle: wait before each memory sample (default 0.5)\n"
      "  --timeout S            per socket operation (default 5)\n"
      "  --server-pid P[,P...]  sample CPU (and, for idle, RSS) of these processes + descendants\n"
      "  --upstream-pid P[,...] also report the upstream's CPU seconds\n"
      "  --proxy-src A[,B...]   begin each connection with a PROXY v1 header; thread i names\n"
      "                         source i modulo the list (flood: required, the first is used)\n"
      "  --rate R               total operations (flood: connections) per second over all\n"
      "                         threads (default 0: as fast as possible)\n"
      "  --hold N               flood: open N connections first and keep them (default 0)\n"
      "  --pending silent|half  pending: send nothing, or half a ClientHello (default silent)\n"
      "  --hup-pid P            resumed: SIGHUP P --hup-at S seconds into the window, then\n"
      "  --hup-at S             (after --hup-wait S, default 1.5) resume with tickets issued\n"
      "  --hup-wait S           before the signal and count how many are accepted\n"
      "  --label TEXT           copied into the output\n"
      "  --scenario TEXT        copied into the output\n"
      "  --format json|text     output line format (default json)\n",
      code == 0 ? stdout : stderr);
  std::exit(code);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::vector<pid_t> parse_pids(const std::string& s) {
  std::vector<pid_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    out.push_back(static_cast<pid_t>(std::stol(item)));
  }
  return out;
}

}  // namespace

options parse(int argc, char** argv) {
  options o;
  std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view a = args[i];
    if (a == "--help" || a == "-h") usage(0);
    if (i + 1 >= args.size()) {
      std::fprintf(stderr, "loadgen: %s needs a value (or is unknown)\n", argv[i + 1]);
      usage(2);
    }
    const std::string v(args[++i]);
    try {
      if (a == "--mode")
        o.mode = v;
      else if (a == "--host")
        o.host = v;
      else if (a == "--port")
        o.port = std::stoi(v);
      else if (a == "--cert")
        o.cert = v;
      else if (a == "--key")
        o.key = v;
      else if (a == "--ca")
        o.ca = v;
      else if (a == "--server-name")
        o.server_name = v;
      else if (a == "--path")
        o.path = v;
      else if (a == "--label")
        o.label = v;
      else if (a == "--scenario")
        o.scenario = v;
      else if (a == "--pending")
        o.pending = v;
      else if (a == "--hup-pid")
        o.hup_pid = static_cast<pid_t>(std::stol(v));
      else if (a == "--hup-at")
        o.hup_at = std::stod(v);
      else if (a == "--hup-wait")
        o.hup_wait = std::stod(v);
      else if (a == "--rate")
        o.rate = std::stod(v);
      else if (a == "--hold")
        o.hold = std::stoi(v);
      else if (a == "--proxy-src")
        o.proxy_srcs = split_list(v);
      else if (a == "--format")
        o.format = v;
      else if (a == "--threads")
        o.threads = std::stoi(v);
      else if (a == "--connections")
        o.connections = std::stoi(v);
      else if (a == "--duration")
        o.duration = std::stod(v);
      else if (a == "--warmup")
        o.warmup = std::stod(v);
      else if (a == "--settle")
        o.settle = std::stod(v);
      else if (a == "--timeout")
        o.timeout = std::stod(v);
      else if (a == "--count")
        o.count = std::stoull(v);
      else if (a == "--server-pid")
        o.server_pids = parse_pids(v);
      else if (a == "--upstream-pid")
        o.upstream_pids = parse_pids(v);
      else {
        std::fprintf(stderr, "loadgen: unknown option %s\n", std::string(a).c_str());
        usage(2);
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "loadgen: bad value for %s: %s\n", std::string(a).c_str(), v.c_str());
      usage(2);
    }
  }
  if (o.port <= 0 || o.port > 65535 || o.cert.empty() || o.key.empty() || o.ca.empty()) usage(2);
  static const std::vector<std::string> modes = {"handshakes", "resumed", "requests", "latency",
                                                 "bulk",       "idle",    "pending",  "flood"};
  if (std::find(modes.begin(), modes.end(), o.mode) == modes.end()) {
    std::fprintf(stderr, "loadgen: unknown mode %s\n", o.mode.c_str());
    usage(2);
  }
  if (o.mode == "flood" && o.proxy_srcs.empty()) {
    std::fputs("loadgen: --mode flood needs --proxy-src\n", stderr);
    usage(2);
  }
  for (const auto& src : o.proxy_srcs) {
    in_addr a{};
    if (::inet_pton(AF_INET, src.c_str(), &a) != 1) {
      std::fprintf(stderr, "loadgen: --proxy-src takes IPv4 literals: %s\n", src.c_str());
      usage(2);
    }
  }
  if (o.format != "json" && o.format != "text") usage(2);
  if (o.mode == "latency" && o.rate <= 0) {
    std::fputs("loadgen: --mode latency needs --rate\n", stderr);
    usage(2);
  }
  if (o.pending != "silent" && o.pending != "half") usage(2);
  if (o.path.empty()) o.path = o.mode == "bulk" ? "/large" : "/small";
  if (o.connections <= 0) {
    o.connections = o.mode == "bulk" ? 1 : (o.mode == "idle" || o.mode == "pending") ? 200 : 32;
  }
  o.threads = std::max(1, o.threads);
  o.duration = std::max(0.1, o.duration);
  o.warmup = std::max(0.0, o.warmup);
  return o;
}

}  // namespace loadgen
