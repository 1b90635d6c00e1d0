#pragma once
// systemd readiness protocol (Type=notify). No-ops when NOTIFY_SOCKET is unset.
namespace mtlsd::daemon {
void notify_ready();
void notify_reloading();  // RELOADING=1 with MONOTONIC_USEC, then notify_ready() when done
void notify_stopping();
}  // namespace mtlsd::daemon
