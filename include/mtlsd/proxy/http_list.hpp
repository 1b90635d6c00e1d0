#pragma once
// The members of a comma-separated HTTP field value (RFC 9110 5.6.1): each without the optional
// whitespace around it, empty ones skipped, as a recipient must ignore them. Expect, Upgrade and
// X-Forwarded-For are read this way.
#include <string_view>

namespace mtlsd::proxy {

template <class F>
void for_each_list_member(std::string_view list, F&& f) {
  for (;;) {
    const auto comma = list.find(',');
    std::string_view member = list.substr(0, comma);
    while (!member.empty() && (member.front() == ' ' || member.front() == '\t'))
      member.remove_prefix(1);
    while (!member.empty() && (member.back() == ' ' || member.back() == '\t'))
      member.remove_suffix(1);
    if (!member.empty()) f(member);
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

}  // namespace mtlsd::proxy
