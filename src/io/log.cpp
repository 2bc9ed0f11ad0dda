// Logging implementation: two sinks (stderr, stdout), each writing without blocking and keeping
// what the descriptor does not take in a bounded queue.
#include "echoplex/io/log.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <string>

namespace echoplex::log {
namespace {

// Per stream: about 4,000 lines of 250 bytes; a log that far behind is better cut than grown.
constexpr std::size_t max_queued_bytes = 1024 * 1024;

// One output stream. How it writes without blocking depends on what the descriptor is:
//   a socket (the journal's stream): send(MSG_DONTWAIT), which leaves the descriptor alone;
//   a pipe, FIFO or terminal: a descriptor of its own, opened O_NONBLOCK through /proc/self/fd,
//     so the shared one (a shell's terminal) is never made non-blocking behind anyone's back;
//   a regular file (or anything that cannot be reopened): write(2) as it is: a disk does not
//     stop taking bytes the way a reader can.
class Sink {
public:
    explicit Sink(int fd) : fd_(fd) {}

    void put(std::string_view text) {
        if (queued() + text.size() > max_queued_bytes) {
            ++dropped_;
            return;
        }
        if (queued() == 0) {
            const std::size_t n = write_some(text);
            text.remove_prefix(n);
            if (text.empty()) {
                return;
            }
        }
        queue_.append(text);
    }

    // Writes what the descriptor takes now.
    void drain() noexcept {
        while (queued() > 0) {
            const std::size_t n = write_some(std::string_view(queue_).substr(head_));
            if (n == 0) {
                break;
            }
            head_ += n;
        }
        if (head_ == queue_.size() || head_ > queue_.size() / 2) {
            queue_.erase(0, head_);
            head_ = 0;
        }
    }

    std::size_t queued() const noexcept { return queue_.size() - head_; }
    int poll_fd() noexcept {
        open_writer();
        return out_;
    }
    void forget() noexcept {
        queue_.clear();
        head_ = 0;
    }
    void reopen() noexcept {
        forget();
        if (out_ >= 0 && out_ != fd_) {
            ::close(out_);
        }
        out_ = -1;
        socket_ = false;
    }
    std::uint64_t dropped_ = 0;           // lines that did not fit
    std::uint64_t dropped_reported_ = 0;  // ... of which a line has told

private:
    void open_writer() noexcept {
        if (out_ >= 0) {
            return;
        }
        out_ = fd_;
        struct stat st {};
        if (::fstat(fd_, &st) != 0) {
            return;
        }
        if (S_ISSOCK(st.st_mode)) {
            socket_ = true;
            return;
        }
        if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
            const std::string path = "/proc/self/fd/" + std::to_string(fd_);
            const int own = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
            if (own >= 0) {
                out_ = own;
            }
        }
    }

    // Bytes written, 0 when the descriptor takes none now. A descriptor that fails (a reader
    // gone: EPIPE) takes everything from then on, into nowhere: a log must not end the program.
    std::size_t write_some(std::string_view text) noexcept {
        open_writer();
        for (;;) {
            const ssize_t n = socket_ ? ::send(out_, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL)
                                      : ::write(out_, text.data(), text.size());
            if (n >= 0) {
                return static_cast<std::size_t>(n);
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            return text.size();
        }
    }

    int fd_;
    int out_ = -1;
    bool socket_ = false;
    std::string queue_;
    std::size_t head_ = 0;
};

struct State {
    std::string program = "echoplex";
    std::string context;
    Level level = Level::info;
    Format format = Format::plain;
    Sink err{2};
    Sink out{1};
    std::function<void()> wake;
};

State& state() {
    static State s;  // constructed on first use: logging works from any static initializer
    return s;
}

constexpr std::string_view level_name(Level l) {
    switch (l) {
    case Level::error: return "error";
    case Level::warn: return "warn";
    case Level::info: return "info";
    case Level::debug: return "debug";
    }
    return "?";
}

constexpr int syslog_priority(Level l) {
    switch (l) {
    case Level::error: return 3;
    case Level::warn: return 4;
    case Level::info: return 6;
    case Level::debug: return 7;
    }
    return 6;
}

std::string timestamp() {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    tm utc{};
    ::gmtime_r(&now.tv_sec, &utc);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
                       utc.tm_hour, utc.tm_min, utc.tm_sec, now.tv_nsec / 1'000'000);
}

std::string format_line(Level l, std::string_view message) {
    State& s = state();
    switch (s.format) {
    case Format::journal:
        return s.context.empty() ? fmt::format("<{}>{}\n", syslog_priority(l), message)
                                 : fmt::format("<{}>{}: {}\n", syslog_priority(l), s.context, message);
    case Format::timestamped:
        return fmt::format("{} {}{}{} {}: {}\n", timestamp(), s.program, s.context.empty() ? "" : " ", s.context,
                           level_name(l), message);
    case Format::plain:
        break;
    }
    return fmt::format("{}{}{}: {}\n", s.program, s.context.empty() ? "" : " ", s.context, message);
}

void put(Sink& sink, std::string_view text) {
    State& s = state();
    const bool was_waiting = s.err.queued() > 0 || s.out.queued() > 0;
    sink.drain();  // older bytes first
    if (&sink == &s.err && sink.dropped_ > sink.dropped_reported_ && sink.queued() == 0) {
        const std::uint64_t lost = sink.dropped_ - sink.dropped_reported_;
        sink.dropped_reported_ = sink.dropped_;
        sink.put(format_line(Level::warn, fmt::format("{} log line(s) dropped: stderr was not taking them", lost)));
    }
    sink.put(text);
    if (!was_waiting && (s.err.queued() > 0 || s.out.queued() > 0) && s.wake) {
        s.wake();
    }
}

}  // namespace

void set_program(std::string_view name) { state().program = name; }
void set_context(std::string_view context) { state().context = context; }
void set_level(Level l) noexcept { state().level = l; }
void set_format(Format f) noexcept { state().format = f; }
bool enabled(Level l) noexcept { return l <= state().level; }

bool stderr_is_journal() noexcept {
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (stream == nullptr) {
        return false;
    }
    unsigned long long dev = 0;
    unsigned long long ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) {
        return false;
    }
    struct stat st {};
    return ::fstat(2, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

void write(Level l, std::string_view message) {
    if (!enabled(l)) {
        return;
    }
    put(state().err, format_line(l, message));
}

void print(std::string_view text) { put(state().out, text); }

void flush(std::chrono::milliseconds timeout) noexcept {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (Sink* sink : {&state().out, &state().err}) {
        sink->drain();
        while (sink->queued() > 0) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                sink->forget();  // nobody is reading: exiting beats waiting for them
                break;
            }
            pollfd p{sink->poll_fd(), POLLOUT, 0};
            ::poll(&p, 1, static_cast<int>(left.count()));
            sink->drain();
        }
    }
}

void after_fork() noexcept {
    state().err.forget();
    state().out.forget();
    state().wake = nullptr;
}

void reopen() noexcept {
    state().err.reopen();
    state().out.reopen();
}

void prepare() noexcept {
    state().err.poll_fd();
    state().out.poll_fd();
}

std::uint64_t dropped() noexcept { return state().err.dropped_ + state().out.dropped_; }

void for_each_pending(const std::function<void(int fd)>& fn) {
    for (Sink* sink : {&state().out, &state().err}) {
        if (sink->queued() > 0) {
            fn(sink->poll_fd());
        }
    }
}

void write_queued(int fd) noexcept {
    for (Sink* sink : {&state().out, &state().err}) {
        if (sink->poll_fd() == fd) {
            sink->drain();
        }
    }
}

void set_wake(std::function<void()> wake) { state().wake = std::move(wake); }

}  // namespace echoplex::log
