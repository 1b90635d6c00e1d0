// YAML -> configuration structs: the text is parsed by yaml-cpp, then read section by section
// (parse_top.cpp and the parse_*.cpp it leads to) with every problem collected, so that
// `mtlsd check` prints one line per problem, each as FILE:LINE:COL.
#include "mtlsd/config/load.hpp"

#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>

#include "mtlsd/util/regular_file.hpp"
#include "sections.hpp"
#include "yaml_reader.hpp"

namespace mtlsd::config {
namespace {

namespace fs = std::filesystem;

// Where the second YAML document of `text` starts, if there is one. YAML::Load reads only the
// first, so a file with `---` and more would silently lose the rest (and any error in it).
class document_starts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

std::optional<YAML::Mark> second_document(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  document_starts starts;
  while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {
  }
  if (starts.marks.size() < 2) return std::nullopt;
  return starts.marks[1];
}

load_result finish(configuration c, diagnostics problems) {
  load_result out;
  out.problems = std::move(problems);
  if (!has_errors(out.problems)) out.config = std::move(c);
  return out;
}

}  // namespace

load_result load_text(const std::string& text, const std::string& file,
                      const load_options& options) {
  diagnostics problems;
  reader r(file, problems, options);
  YAML::Node root;
  try {
    root = YAML::Load(text);
    if (auto second = second_document(text))
      problems.push_back({{file, second->line + 1, second->column + 1},
                          "a second YAML document starts here: a configuration file holds exactly "
                          "one (remove the '---' line and what follows, or merge it into the "
                          "first)"});
  } catch (const YAML::ParserException& e) {
    problems.push_back({{file, e.mark.line + 1, e.mark.column + 1}, "YAML syntax error: " + e.msg});
    return finish({}, std::move(problems));
  }
  try {
    configuration c = parse_root(r, root, file);
    return finish(std::move(c), std::move(problems));
  } catch (const YAML::Exception& e) {
    // A check that looked into a node of another shape than it expected (yaml-cpp throws on
    // subscripting a scalar): reported where yaml-cpp says, not thrown past `check` (review).
    problems.push_back(
        {{file, e.mark.line + 1, e.mark.column + 1}, "unexpected YAML structure here: " + e.msg});
    return finish({}, std::move(problems));
  }
}

load_result load_file(const std::string& path, const load_options& options) {
  load_result out;
  // A relative path is resolved against the working directory, which may be gone (removed under
  // a running daemon): a problem to report, not an exception (review: it ended the process).
  std::error_code ec;
  const fs::path resolved = fs::absolute(path, ec);
  if (ec) {
    out.problems.push_back({{path, 0, 0},
                            "cannot read configuration file: cannot resolve the relative path "
                            "against the working directory: " +
                                ec.message()});
    return out;
  }
  const std::string absolute = resolved.lexically_normal().string();
  const util::opened_file f = util::open_regular_file(absolute);
  std::string text;
  std::string error = f.why;
  bool too_large = false;
  if (f.fd >= 0) {
    // At most max_config_bytes + 1 bytes: a larger file (or a stream that does not end, such as
    // /dev/zero under `check`) is refused, not read until memory runs out (review).
    struct stat st {};
    too_large = ::fstat(f.fd, &st) == 0 && S_ISREG(st.st_mode) &&
                static_cast<std::uintmax_t>(st.st_size) > max_config_bytes;  // not read, then
    char buf[16 * 1024];
    while (!too_large) {
      const ssize_t n = ::read(f.fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) error = std::strerror(errno);
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
      too_large = text.size() > max_config_bytes;
    }
    ::close(f.fd);
  }
  if (error.empty() && too_large)
    error = "larger than " + std::to_string(max_config_bytes >> 20) +
            " MiB, the most mtlsd reads of a configuration file";
  if (f.fd < 0 || !error.empty()) {
    out.problems.push_back({{absolute, 0, 0}, "cannot read configuration file: " + error});
    return out;
  }
  return load_text(text, absolute, options);
}

}  // namespace mtlsd::config
