// End-to-end test helpers implementation.
#include "support/server_process.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "echoplex/io/backend.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

[[noreturn]] void fail(const char* what, int err = errno) {
    throw std::system_error(err, std::system_category(), what);
}

int checked(int rc, const char* what) {
    if (rc < 0) {
        fail(what);
    }
    return rc;
}

// Milliseconds left until `deadline`, clamped to [0, INT_MAX] for poll(2).
int ms_left(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
        return 0;
    }
    return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
}

void set_nonblocking(int fd) {
    const int flags = checked(::fcntl(fd, F_GETFL), "fcntl(F_GETFL)");
    checked(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl(F_SETFL)");
}

ExitStatus decode(int status) {
    ExitStatus s;
    if (WIFEXITED(status)) {
        s.exited = true;
        s.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        s.signal = WTERMSIG(status);
    }
    return s;
}

}  // namespace

std::string server_binary() {
    const char* bin = std::getenv("ECHOPLEX_BIN");
    if (bin == nullptr || *bin == '\0') {
        throw std::runtime_error("ECHOPLEX_BIN is not set (meson test sets it to the echoplex binary)");
    }
    return bin;
}

std::string ExitStatus::describe() const {
    if (exited) {
        return "exit code " + std::to_string(code);
    }
    if (signal != 0) {
        return std::string("killed by signal ") + std::to_string(signal) + " (" + ::strsignal(signal) + ")";
    }
    return "unknown status";
}

// ---- ChildProcess ----

ChildProcess::ChildProcess(const std::string& program, const std::vector<std::string>& args,
                           const std::vector<ResourceLimit>& limits) {
    int out_pipe[2];
    int err_pipe[2];
    checked(::pipe2(out_pipe, O_CLOEXEC), "pipe2");
    UniqueFd out_r(out_pipe[0]);
    UniqueFd out_w(out_pipe[1]);
    checked(::pipe2(err_pipe, O_CLOEXEC), "pipe2");
    UniqueFd err_r(err_pipe[0]);
    UniqueFd err_w(err_pipe[1]);
    UniqueFd devnull(checked(::open("/dev/null", O_RDONLY | O_CLOEXEC), "open(/dev/null)"));

    // Everything the child needs is prepared before fork: between fork and exec only
    // async-signal-safe calls are allowed (the test process has threads).
    std::vector<std::string> argv_storage;
    argv_storage.push_back(program);
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    static const char exec_failed[] = "echoplex test: execv failed\n";
    static const char setrlimit_failed[] = "echoplex test: setrlimit failed\n";
    std::vector<std::pair<int, rlimit>> rlimits;
    for (const auto& limit : limits) {
        rlimits.emplace_back(limit.resource, rlimit{limit.soft, limit.hard});
    }

    const pid_t pid = ::fork();
    if (pid < 0) {
        fail("fork");
    }
    if (pid == 0) {
        // Child. dup2 clears FD_CLOEXEC on the new descriptors; every other descriptor of the test
        // process is close-on-exec.
        if (::dup2(devnull.get(), 0) < 0 || ::dup2(out_w.get(), 1) < 0 || ::dup2(err_w.get(), 2) < 0) {
            ::_exit(127);
        }
        sigset_t none;
        ::sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        for (const int sig : {SIGPIPE, SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGCHLD}) {
            ::signal(sig, SIG_DFL);
        }
        for (const auto& [resource, value] : rlimits) {
            if (::setrlimit(resource, &value) < 0) {
                const ssize_t ignored = ::write(2, setrlimit_failed, sizeof setrlimit_failed - 1);
                (void)ignored;
                ::_exit(127);
            }
        }
        ::execv(argv[0], argv.data());
        const ssize_t ignored = ::write(2, exec_failed, sizeof exec_failed - 1);
        (void)ignored;
        ::_exit(127);
    }
    pid_ = pid;
    out_w.reset();
    err_w.reset();
#ifdef SYS_pidfd_open
    const long pidfd = ::syscall(SYS_pidfd_open, pid, 0);
    if (pidfd >= 0) {
        pidfd_.reset(static_cast<int>(pidfd));
        ::fcntl(pidfd_.get(), F_SETFD, FD_CLOEXEC);
    }
#endif
    const int out_fd = out_r.release();
    const int err_fd = err_r.release();
    reader_ = std::thread([this, out_fd, err_fd] { reader_main(out_fd, err_fd); });
}

ChildProcess::~ChildProcess() {
    if (!status_) {
        ::kill(pid_, SIGKILL);
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
    }
    if (reader_.joinable()) {
        reader_.join();  // the pipes reach EOF once the child is gone
    }
}

void ChildProcess::reader_main(int out_fd, int err_fd) {
    UniqueFd out(out_fd);
    UniqueFd err(err_fd);
    char buffer[8192];
    for (;;) {
        pollfd fds[2];
        nfds_t n = 0;
        {
            std::lock_guard lock(mutex_);
            if (!out_eof_) {
                fds[n++] = {out.get(), POLLIN, 0};
            }
            if (!err_eof_) {
                fds[n++] = {err.get(), POLLIN, 0};
            }
        }
        if (n == 0) {
            return;
        }
        if (::poll(fds, n, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            std::lock_guard lock(mutex_);
            out_eof_ = err_eof_ = true;
            changed_.notify_all();
            return;
        }
        for (nfds_t i = 0; i < n; ++i) {
            if (fds[i].revents == 0) {
                continue;
            }
            const ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
            if (got < 0 && errno == EINTR) {
                continue;
            }
            std::lock_guard lock(mutex_);
            const bool is_out = fds[i].fd == out.get();
            if (got <= 0) {
                (is_out ? out_eof_ : err_eof_) = true;
            } else {
                (is_out ? out_ : err_).append(buffer, static_cast<std::size_t>(got));
            }
            changed_.notify_all();
        }
    }
}

bool ChildProcess::send_signal(int sig) {
    if (status_) {
        return false;
    }
    return ::kill(pid_, sig) == 0;
}

std::optional<ExitStatus> ChildProcess::wait_exit(milliseconds timeout) {
    if (status_) {
        return status_;
    }
    const auto deadline = Clock::now() + timeout;
    if (pidfd_) {
        for (;;) {
            pollfd p{pidfd_.get(), POLLIN, 0};
            const int rc = ::poll(&p, 1, ms_left(deadline));
            if (rc < 0 && errno == EINTR) {
                continue;
            }
            break;
        }
    } else {
        wait_output_eof(timeout);  // no pidfd: the pipes' EOF is the best hint of an exit
    }
    int status = 0;
    pid_t rc;
    while ((rc = ::waitpid(pid_, &status, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (rc == pid_) {
        status_ = decode(status);
    }
    return status_;
}

bool ChildProcess::running() { return !wait_exit(milliseconds(0)).has_value(); }

std::string ChildProcess::stdout_text() const {
    std::lock_guard lock(mutex_);
    return out_;
}

std::string ChildProcess::stderr_text() const {
    std::lock_guard lock(mutex_);
    return err_;
}

bool ChildProcess::wait_output(const std::function<bool(const std::string&, const std::string&)>& pred,
                               milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return pred(out_, err_) || (out_eof_ && err_eof_); });
    return pred(out_, err_);
}

bool ChildProcess::wait_output_eof(milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return out_eof_ && err_eof_; });
}

// ---- running to completion ----

RunResult run_server_to_completion(const std::vector<std::string>& args, milliseconds timeout) {
    ChildProcess child(server_binary(), args);
    RunResult result;
    auto status = child.wait_exit(timeout);
    if (!status) {
        child.send_signal(SIGKILL);
        status = child.wait_exit(std::chrono::seconds(10));
    }
    child.wait_output_eof(std::chrono::seconds(5));
    result.status = status.value_or(ExitStatus{});
    result.out = child.stdout_text();
    result.err = child.stderr_text();
    return result;
}

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        const auto nl = text.find('\n', start);
        if (nl == std::string::npos) {
            lines.push_back(text.substr(start));
            break;
        }
        lines.push_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    return lines;
}

std::optional<Stats> parse_stats_line(const std::string& line) {
    static const std::regex re(
        R"(echoplex: stats: accepted=(\d+) refused=(\d+) open=(\d+) peak=(\d+) bytes_in=(\d+) bytes_out=(\d+) paused=(\d+))");
    std::smatch m;
    if (!std::regex_match(line, m, re)) {
        return std::nullopt;
    }
    auto num = [&](int i) { return static_cast<std::uint64_t>(std::stoull(m[i].str())); };
    return Stats{num(1), num(2), num(3), num(4), num(5), num(6), num(7)};
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

// A program name without a slash looked up in $PATH (execv does not search; execvp is not
// async-signal-safe, so the lookup happens before fork).
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
        fail("mkstemp");
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

std::optional<Stats> ServerProcess::wait_stats_line(std::size_t count, milliseconds timeout) const {
    child_.wait_output([count](const std::string&, const std::string& err) { return stats_lines(err).size() >= count; },
                       timeout);
    const auto all = stats_lines(child_.stderr_text());
    if (all.size() < count) {
        return std::nullopt;
    }
    return all.back();
}

long ServerProcess::rss_kib() const {
    std::ifstream status("/proc/" + std::to_string(pid()) + "/status");
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
    const std::string path = "/proc/" + std::to_string(pid()) + "/fd";
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

std::vector<int> ServerProcess::fd_numbers() const {
    std::vector<int> numbers;
    const std::string path = "/proc/" + std::to_string(pid()) + "/fd";
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

long ServerProcess::cpu_ticks() const {
    // proc(5): "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so fields are
    // counted after the last ')'. utime and stime are fields 14 and 15.
    const std::string stat = read_file("/proc/" + std::to_string(pid()) + "/stat");
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

// ---- clients ----

UniqueFd connect_to(std::uint16_t port, const std::string& host, const std::function<void(int)>& before_connect) {
    sockaddr_storage storage{};
    socklen_t len = 0;
    int family = AF_INET;
    if (host.find(':') != std::string::npos) {
        family = AF_INET6;
        auto* a6 = reinterpret_cast<sockaddr_in6*>(&storage);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        if (::inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) != 1) {
            throw std::invalid_argument("connect_to: bad IPv6 address " + host);
        }
        len = sizeof(sockaddr_in6);
    } else {
        auto* a4 = reinterpret_cast<sockaddr_in*>(&storage);
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        if (::inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) {
            throw std::invalid_argument("connect_to: bad IPv4 address " + host);
        }
        len = sizeof(sockaddr_in);
    }
    UniqueFd fd(checked(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket"));
    if (before_connect) {
        before_connect(fd.get());
    }
    int rc;
    while ((rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&storage), len)) < 0 && errno == EINTR) {
    }
    if (rc < 0) {
        fail(("connect " + host + ":" + std::to_string(port)).c_str());
    }
    set_nonblocking(fd.get());
    const int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

bool ipv6_loopback_available() {
    UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        return false;
    }
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_loopback;
    return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

std::string random_bytes(std::size_t size, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::string out(size, '\0');
    std::size_t i = 0;
    while (i < size) {
        std::uint64_t word = rng();
        for (int k = 0; k < 8 && i < size; ++k, ++i) {
            out[i] = static_cast<char>(word & 0xFF);
            word >>= 8;
        }
    }
    return out;
}

bool Session::done() const {
    if (until_eof) {
        return eof || error != 0;
    }
    return received.size() >= expected();
}

std::string DriveResult::describe() const {
    return std::to_string(done) + "/" + std::to_string(total) + " sessions done after " +
           std::to_string(elapsed.count()) + " ms";
}

namespace {

constexpr std::size_t kWriteChunk = 256 * 1024;
constexpr std::size_t kReadChunk = 64 * 1024;

// A session that can make no more progress: done, failed, or closed early.
bool finished(const Session& s) { return s.done() || s.error != 0 || s.eof; }

void read_some(Session& s) {
    static thread_local std::vector<char> buffer(kReadChunk);
    // Bounded per wake-up so that one fast peer cannot starve the others.
    for (int i = 0; i < 16; ++i) {
        const ssize_t n = ::recv(s.fd.get(), buffer.data(), buffer.size(), 0);
        if (n > 0) {
            s.received.append(buffer.data(), static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            s.eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s.error = errno;
        }
        return;
    }
}

void write_some(Session& s) {
    while (s.sent < s.to_send.size()) {
        const std::size_t len = std::min(kWriteChunk, s.to_send.size() - s.sent);
        const ssize_t n = ::send(s.fd.get(), s.to_send.data() + s.sent, len, MSG_NOSIGNAL);
        if (n > 0) {
            s.sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s.error = errno;
        }
        break;
    }
    if (s.sent == s.to_send.size() && s.shutdown_after_send && !s.shut_down && s.error == 0) {
        ::shutdown(s.fd.get(), SHUT_WR);
        s.shut_down = true;
    }
}

}  // namespace

DriveResult drive_sessions(std::vector<Session>& sessions, milliseconds deadline_in) {
    const auto start = Clock::now();
    const auto deadline = start + deadline_in;
    std::vector<pollfd> fds;
    std::vector<std::size_t> index;
    // An empty payload with shutdown requested is shut down at once.
    for (auto& s : sessions) {
        if (s.to_send.empty()) {
            write_some(s);
        }
    }
    for (;;) {
        fds.clear();
        index.clear();
        for (std::size_t i = 0; i < sessions.size(); ++i) {
            const Session& s = sessions[i];
            if (finished(s)) {
                continue;
            }
            short events = POLLIN;
            if (s.sent < s.to_send.size()) {
                events |= POLLOUT;
            }
            fds.push_back({s.fd.get(), events, 0});
            index.push_back(i);
        }
        if (fds.empty() || Clock::now() >= deadline) {
            break;
        }
        const int rc = ::poll(fds.data(), fds.size(), ms_left(deadline));
        if (rc < 0) {
            if (errno == EINTR) {
                continue;
            }
            fail("poll");
        }
        for (std::size_t k = 0; k < fds.size(); ++k) {
            Session& s = sessions[index[k]];
            const short re = fds[k].revents;
            if ((re & POLLOUT) != 0) {
                write_some(s);
            }
            if ((re & (POLLIN | POLLHUP | POLLERR)) != 0) {
                read_some(s);
            }
            if ((re & POLLERR) != 0 && s.error == 0 && !s.eof) {
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(s.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0) {
                    s.error = err;
                }
            }
        }
    }
    DriveResult result;
    result.total = sessions.size();
    result.done = static_cast<std::size_t>(std::count_if(sessions.begin(), sessions.end(), [](const Session& s) {
        return s.done() && (s.until_eof || s.error == 0);
    }));
    result.all_done = result.done == result.total;
    result.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    return result;
}

PushResult push_without_reading(int fd, const std::string& pattern, std::size_t limit, milliseconds stall,
                                milliseconds deadline_in, std::size_t start_offset) {
    PushResult result;
    const auto deadline = Clock::now() + deadline_in;
    auto last_progress = Clock::now();
    while (result.sent < limit) {
        // Write while the socket takes it.
        bool progressed = false;
        for (;;) {
            if (result.sent >= limit) {
                break;
            }
            const std::size_t offset = (start_offset + result.sent) % pattern.size();
            const std::size_t len = std::min({pattern.size() - offset, limit - result.sent, kWriteChunk});
            const ssize_t n = ::send(fd, pattern.data() + offset, len, MSG_NOSIGNAL);
            if (n > 0) {
                result.sent += static_cast<std::size_t>(n);
                progressed = true;
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                break;
            }
            result.error = errno;
            return result;
        }
        const auto now = Clock::now();
        if (progressed) {
            last_progress = now;
        }
        if (result.sent >= limit || now >= deadline) {
            break;
        }
        const auto stall_at = last_progress + stall;
        if (now >= stall_at) {
            result.stalled = true;
            break;
        }
        pollfd p{fd, POLLOUT, 0};
        const int rc = ::poll(&p, 1, ms_left(std::min(stall_at, deadline)));
        if (rc < 0 && errno != EINTR) {
            fail("poll");
        }
    }
    return result;
}

ReadResult read_until_eof(int fd, milliseconds deadline_in) {
    ReadResult result;
    const auto deadline = Clock::now() + deadline_in;
    std::vector<char> buffer(kReadChunk);
    for (;;) {
        const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (n > 0) {
            result.data.append(buffer.data(), static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            result.eof = true;
            return result;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            result.error = errno;
            return result;
        }
        if (Clock::now() >= deadline) {
            result.timed_out = true;
            return result;
        }
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms_left(deadline)) < 0 && errno != EINTR) {
            fail("poll");
        }
    }
}

}  // namespace echoplex::test
