#pragma once
// Is a private key file more open than the deployment needs? Shipped deployments make keys
// readable by a group the process is in (Kubernetes fsGroup, the systemd unit's key group), so
// only keys the world can read, or a group the process is not in, are a finding.
#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/config/config.hpp"

namespace mtlsd::runtime {

// Why a key file with permission bits `mode` and owning group `gid` is too open for a process
// in `groups` (effective and supplementary group ids), or nullopt when it is fine.
std::optional<std::string> key_exposure(mode_t mode, gid_t gid, const std::vector<gid_t>& groups);

// This process's effective and supplementary group ids.
std::vector<gid_t> own_groups();

// A warning for `key` when its file is too open, the first time this process sees that file
// with that owner group and mode; nullopt otherwise (fine, unreadable, or already warned about),
// so a reload does not repeat it. `what` names the file's secret in the warning: a private
// key, or what unlocks one (a password or PIN file is as good as the key it opens).
std::optional<config::diagnostic> key_permission_warning_once(
    const config::file_ref& key, std::string_view what = "private key file");

}  // namespace mtlsd::runtime
