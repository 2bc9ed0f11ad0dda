// The echoplex binary as a child of the test: implementation.
#include "support/server_process.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "echoplex/io/backend.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {

using std::chrono::milliseconds;

std::string server_binary() {
    const char* bin = std::getenv("ECHOPLEX_BIN");
    if (bin == nullptr || *bin == '\0') {
        throw std::runtime_error("ECHOPLEX_BIN is not set (meson test sets it to the echoplex binary)");
    }
    return bin;
}

std::string resolve_program(const std::string& name) {
    if (name.find('/') != std::string::npos) {
        return name;
    }
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0) {
            return candidate;
        }
    }
    return name;  // execv fails and the child exits 127 with a line on stderr
}

std::string without_log_stamps(const std::string& text) {
    static const std::regex stamped(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (.+?) (error|warn|info|debug): (.*)$)");
    std::string out;
    out.reserve(text.size());
    std::size_t start = 0;
    while (start < text.size()) {
        const auto end = text.find('\n', start);
        const std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
        std::smatch m;
        out += std::regex_match(line, m, stamped) ? m[1].str() + ": " + m[3].str() : line;
        if (end == std::string::npos) {
            break;
        }
        out += '\n';
        start = end + 1;
    }
    return out;
}

RunResult run_server_to_completion(const std::vector<std::string>& args, milliseconds timeout) {
    RunResult r = run_to_completion(server_binary(), args, timeout);
    r.err = without_log_stamps(r.err);
    return r;
}

std::optional<Stats> parse_stats_line(const std::string& line) {
    static const std::regex re(
        R"(echoplex: stats: accepted=(\d+) refused=(\d+) open=(\d+) peak=(\d+) bytes_in=(\d+) bytes_out=(\d+) paused=(\d+)(?: proxy_rejected=(\d+))?(?: workers=(\d+) restarts=(\d+))?)");
    std::smatch m;
    if (!std::regex_match(line, m, re)) {
        return std::nullopt;
    }
    auto num = [&](int i) { return static_cast<std::uint64_t>(std::stoull(m[i].str())); };
    Stats stats{num(1), num(2), num(3), num(4), num(5), num(6), num(7), std::nullopt, std::nullopt, std::nullopt};
    if (m[8].matched) {
        stats.proxy_rejected = num(8);
    }
    if (m[9].matched) {
        stats.workers = num(9);
        stats.restarts = num(10);
    }
    return stats;
}

std::vector<Stats> stats_lines(const std::string& text) {
    std::vector<Stats> out;
    for (const auto& line : split_lines(text)) {
        if (auto s = parse_stats_line(line)) {
            out.push_back(*s);
        }
    }
    return out;
}

std::size_t count_stats_prefixed_lines(const std::string& text) {
    std::size_t n = 0;
    for (const auto& line : split_lines(text)) {
        if (line.rfind("echoplex: stats:", 0) == 0) {
            ++n;
        }
    }
    return n;
}

// ---- ServerProcess ----

namespace {


bool is_valgrind(const std::vector<std::string>& wrapper) {
    if (wrapper.empty()) {
        return false;
    }
    const std::string& program = wrapper.front();
    const auto slash = program.rfind('/');
    return program.substr(slash == std::string::npos ? 0 : slash + 1) == "valgrind";
}

// A new empty file for valgrind's report (in $TMPDIR or /tmp); "" without a valgrind wrapper.
std::string make_valgrind_log() {
    if (!is_valgrind(server_wrapper())) {
        return "";
    }
    const char* tmp = std::getenv("TMPDIR");
    std::string path = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/echoplex-valgrind-XXXXXX";
    const int fd = ::mkstemp(path.data());
    if (fd < 0) {
        throw std::system_error(errno, std::system_category(), "mkstemp");
    }
    ::close(fd);
    return path;
}

// The whole command line: [wrapper...] server --backend=<under test> args...
std::vector<std::string> server_command(const std::vector<std::string>& args, const std::string& valgrind_log) {
    std::vector<std::string> all = server_wrapper();
    if (!all.empty()) {
        all.front() = resolve_program(all.front());
        if (!valgrind_log.empty()) {
            all.insert(all.begin() + 1, "--log-file=" + valgrind_log);
        }
    }
    all.push_back(server_binary());
    all.push_back("--backend=" + std::string(backend_name(backend_under_test())));
    if (const std::size_t workers = workers_under_test(); workers > 1) {
        all.push_back("--workers=" + std::to_string(workers));
    }
    all.insert(all.end(), args.begin(), args.end());
    return all;
}

std::vector<std::string> tail(std::vector<std::string> all) {
    all.erase(all.begin());
    return all;
}

// The --error-exitcode=N of the wrapper's command line; -1 if it sets none.
int valgrind_error_exit_code() {
    static const std::string flag = "--error-exitcode=";
    for (const auto& word : server_wrapper()) {
        if (word.rfind(flag, 0) == 0) {
            return std::atoi(word.c_str() + flag.size());
        }
    }
    return -1;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

std::size_t workers_under_test() {
    const char* env = std::getenv("ECHOPLEX_WORKERS");
    return env != nullptr && *env != '\0' ? std::stoul(env) : 1;
}

std::vector<std::string> server_wrapper() {
    std::vector<std::string> words;
    const char* wrapper = std::getenv("ECHOPLEX_WRAPPER");
    std::istringstream in(wrapper != nullptr ? wrapper : "");
    std::string word;
    while (in >> word) {
        words.push_back(word);
    }
    return words;
}

bool server_wrapped() { return !server_wrapper().empty(); }

ServerProcess::ServerProcess(const std::vector<std::string>& args, milliseconds startup_timeout)
    : ServerProcess(args, ServerOptions{startup_timeout, {}}) {}

ServerProcess::ServerProcess(const std::vector<std::string>& args, const ServerOptions& options)
    : valgrind_log_(make_valgrind_log()),
      child_(server_command(args, valgrind_log_.path).front(), tail(server_command(args, valgrind_log_.path)),
             options.limits) {
    const milliseconds startup_timeout = options.startup_timeout * (server_wrapped() ? 6 : 1);
    const bool got_line = child_.wait_output(
        [](const std::string& out, const std::string&) { return out.find('\n') != std::string::npos; },
        startup_timeout);
    const std::string out = child_.stdout_text();
    if (!got_line) {
        std::string why = child_.running() ? "no startup line within the timeout" : "the server exited";
        if (auto st = child_.wait_exit(milliseconds(0))) {
            why += " (" + st->describe() + ")";
        }
        throw std::runtime_error("echoplex did not start: " + why + "; stdout: [" + out + "] stderr: [" +
                                 child_.stderr_text() + "]");
    }
    startup_line_ = out.substr(0, out.find('\n'));
    // "echoplex: listening on 127.0.0.1:P (echo), 127.0.0.1:Q (discard); backend epoll"
    static const std::string prefix = "echoplex: listening on ";
    static const std::string backend_mark = "; backend ";
    const auto mark = startup_line_.rfind(backend_mark);
    if (startup_line_.rfind(prefix, 0) != 0 || mark == std::string::npos || mark < prefix.size()) {
        throw std::runtime_error("unexpected startup line: [" + startup_line_ + "]");
    }
    announced_backend_ = startup_line_.substr(mark + backend_mark.size());
    std::string list = startup_line_.substr(prefix.size(), mark - prefix.size());
    // "...; 2 workers" before the backend under --workers.
    static const std::regex workers_part(R"(; (\d+) workers$)");
    if (std::smatch m; std::regex_search(list, m, workers_part)) {
        announced_workers_ = std::stoul(m[1].str());
        list.resize(static_cast<std::size_t>(m.position(0)));
    }
    std::size_t start = 0;
    for (;;) {
        const auto comma = list.find(", ", start);
        std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        const auto paren = item.rfind(" (");
        if (paren == std::string::npos || item.back() != ')') {
            throw std::runtime_error("no service after '" + item + "' in startup line: [" + startup_line_ + "]");
        }
        services_.push_back(item.substr(paren + 2, item.size() - paren - 3));
        item.resize(paren);
        const auto colon = item.rfind(':');
        if (colon == std::string::npos || colon + 1 >= item.size()) {
            throw std::runtime_error("unexpected address '" + item + "' in startup line: [" + startup_line_ + "]");
        }
        std::string host = item.substr(0, colon);
        if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
            host = host.substr(1, host.size() - 2);
        }
        const std::string port_text = item.substr(colon + 1);
        if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5) {
            throw std::runtime_error("bad port '" + port_text + "' in startup line: [" + startup_line_ + "]");
        }
        const unsigned long port = std::stoul(port_text);
        if (port == 0 || port > 65535) {
            throw std::runtime_error("bad port '" + port_text + "' in startup line: [" + startup_line_ + "]");
        }
        hosts_.push_back(host);
        ports_.push_back(static_cast<std::uint16_t>(port));
        if (comma == std::string::npos) {
            break;
        }
        start = comma + 2;
    }
}

std::optional<Stats> ServerProcess::ask_stats_until(const std::function<bool(const Stats&)>& until, milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::optional<Stats> last;
    while (std::chrono::steady_clock::now() < deadline) {
        const std::size_t before = stats_lines(stderr_text()).size();
        if (!send_signal(SIGUSR1)) {
            return last;
        }
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        auto seen = wait_stats_line(before + 1, std::max(left, milliseconds(1)));
        if (!seen) {
            return last;
        }
        last = seen;
        if (until(*seen)) {
            break;
        }
    }
    return last;
}

std::optional<Stats> ServerProcess::wait_stats_line(std::size_t count, milliseconds timeout) const {
    child_.wait_output([count](const std::string&, const std::string& err) { return stats_lines(without_log_stamps(err)).size() >= count; },
                       timeout);
    const auto all = stats_lines(stderr_text());
    if (all.size() < count) {
        return std::nullopt;
    }
    return all.back();
}

namespace {

long rss_kib_of(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            std::istringstream fields(line.substr(6));
            long kib = -1;
            fields >> kib;
            return kib;
        }
    }
    return -1;
}

int open_fds_of(pid_t pid) {
    const std::string path = "/proc/" + std::to_string(pid) + "/fd";
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) {
        return -1;
    }
    int n = 0;
    while (const dirent* entry = ::readdir(dir)) {
        if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) {
            ++n;
        }
    }
    ::closedir(dir);
    return n;
}

long cpu_ticks_of(pid_t pid) {
    // proc(5): "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so fields are
    // counted after the last ')'. utime and stime are fields 14 and 15.
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) {
        return -1;
    }
    std::istringstream fields(stat.substr(close_paren + 1));
    std::string field;
    long utime = -1;
    long stime = -1;
    for (int index = 3; fields >> field; ++index) {
        if (index == 14) {
            utime = std::stol(field);
        } else if (index == 15) {
            stime = std::stol(field);
            break;
        }
    }
    return utime < 0 || stime < 0 ? -1 : utime + stime;
}

// The sum of `of` over the processes; -1 if any cannot be read.
template <class Fn>
long sum_over(const std::vector<pid_t>& pids, Fn of) {
    long total = 0;
    for (const pid_t p : pids) {
        const long v = of(p);
        if (v < 0) {
            return -1;
        }
        total += v;
    }
    return total;
}

}  // namespace

std::vector<pid_t> ServerProcess::worker_pids() const {
    std::vector<pid_t> out;
    std::istringstream children(read_file("/proc/" + std::to_string(pid()) + "/task/" + std::to_string(pid()) + "/children"));
    for (pid_t p = 0; children >> p;) {
        out.push_back(p);
    }
    return out;
}

std::vector<pid_t> ServerProcess::process_tree() const {
    std::vector<pid_t> all{pid()};
    const auto workers = worker_pids();
    all.insert(all.end(), workers.begin(), workers.end());
    return all;
}

long ServerProcess::rss_kib() const { return sum_over(process_tree(), rss_kib_of); }

ServerProcess::TempFile::~TempFile() {
    if (!path.empty()) {
        ::unlink(path.c_str());
    }
}

ServerProcess::~ServerProcess() {
    if (valgrind_log_.path.empty()) {
        return;
    }
    try {
        check_wrapper_report();
    } catch (...) {
        // A destructor must not throw (reading the report or formatting it failed): unchecked.
    }
}

void ServerProcess::check_wrapper_report() {
    // valgrind's checks (leaks above all) run when the program exits: ask it to, politely. The
    // drain deadline bounds how long the server may take; memcheck's leak scan adds seconds.
    auto status = child_.wait_exit(milliseconds(0));
    if (!status) {
        child_.send_signal(SIGTERM);
        status = child_.wait_exit(std::chrono::seconds(120));
    }
    if (!status) {
        MESSAGE("valgrind: the server did not exit within 120 s of SIGTERM; no report checked");
        return;
    }
    const std::string report = read_file(valgrind_log_.path);
    static const std::regex summary(R"(ERROR SUMMARY: ([0-9]+) errors)");
    std::smatch m;
    if (!std::regex_search(report, m, summary)) {
        // Killed by a signal (e.g. a test's SIGKILL): memcheck had no chance to write its summary.
        MESSAGE("valgrind: no error summary (server ", status->describe(), ")");
        return;
    }
    const auto errors = std::stoull(m[1].str());
    if (errors == 0) {
        MESSAGE("valgrind: 0 errors in the server (pid ", pid(), ", ", status->describe(), ")");
    }
    CHECK_MESSAGE(errors == 0, "valgrind found ", errors, " error(s) in the server (pid ", pid(), "):\n", report);
    CHECK_MESSAGE(!(status->exited && status->code == valgrind_error_exit_code()),
                  "the server exited with valgrind's --error-exitcode (", status->code, ")");
}

int ServerProcess::open_fds() const {
    return static_cast<int>(sum_over(process_tree(), [](pid_t p) { return static_cast<long>(open_fds_of(p)); }));
}

std::vector<int> ServerProcess::fd_numbers() const {
    std::vector<int> numbers;
    const auto workers = worker_pids();
    const std::string path = "/proc/" + std::to_string(workers.empty() ? pid() : workers.front()) + "/fd";
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) {
        return numbers;
    }
    while (const dirent* entry = ::readdir(dir)) {
        if (entry->d_name[0] >= '0' && entry->d_name[0] <= '9') {
            numbers.push_back(std::atoi(entry->d_name));
        }
    }
    ::closedir(dir);
    std::sort(numbers.begin(), numbers.end());
    return numbers;
}

long ServerProcess::cpu_ticks() const { return sum_over(process_tree(), cpu_ticks_of); }

}  // namespace echoplex::test
