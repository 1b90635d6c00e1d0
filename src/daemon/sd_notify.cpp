#include "mtlsd/daemon/sd_notify.hpp"

#include <systemd/sd-daemon.h>

#include <ctime>
#include <string>

namespace mtlsd::daemon {

void notify_ready() {
  sd_notify(0, "READY=1\nSTATUS=serving");
}

void notify_reloading() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const auto usec = static_cast<unsigned long long>(ts.tv_sec) * 1'000'000ULL +
                    static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL;
  const std::string msg = "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec);
  sd_notify(0, msg.c_str());
}

void notify_stopping() {
  sd_notify(0, "STOPPING=1\nSTATUS=draining");
}

}  // namespace mtlsd::daemon
