#pragma once
// How many threads this process has now (/proc/self/task). The sandbox can only be entered
// single-threaded, so start-up asks before entering it, and PKCS#11 loading asks whether a
// module started any. A leaf: it includes nothing of mtlsd.
#include <dirent.h>

namespace mtlsd {

inline int thread_count() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (const dirent* e = ::readdir(d))
      n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

}  // namespace mtlsd
