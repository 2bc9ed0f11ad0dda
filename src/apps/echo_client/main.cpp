// echo-client: the book's client. Connects to HOST:50007, sends each WORD, waits for its reply
// and prints "Client received: <reply>". Blocking sockets on purpose: one conversation, in order.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "echoplex/io/fmt.hpp"

#include "cli.hpp"
#include "echoplex/io/error.hpp"
#include "echoplex/io/log.hpp"
#include "echoplex/io/unique_fd.hpp"
#include "program.hpp"
#include "stamp.hpp"

namespace {

using namespace echoplex;

constexpr std::string_view book_message = "Hello network world";

struct ClientArgs {
    std::string host = "localhost";  // the book's serverHost
    std::uint16_t port = 50007;
    double timeout_s = 10;
    std::vector<std::string> words;
};

[[nodiscard]] Result<UniqueFd> connect_to(const ClientArgs& args) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string service = std::to_string(args.port);
    const std::string where = fmt::format("{}:{}", args.host, args.port);
    if (const int rc = ::getaddrinfo(args.host.c_str(), service.c_str(), &hints, &found); rc != 0) {
        return Error{"getaddrinfo", make_error_code(errc::resolve_failed), fmt::format("{}: {}", args.host, ::gai_strerror(rc))};
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> results(found, ::freeaddrinfo);
    Error last = Error::from_errno("connect", ECONNREFUSED);
    // Every address of the name in turn, as the book's socket.connect((host, port)) does for one.
    for (const addrinfo* ai = results.get(); ai != nullptr; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) {
            last = Error::from_errno("socket");
            continue;
        }
        if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
            last = Error::from_errno("connect");
            continue;
        }
        const int one = 1;
        ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        timeval tv{};
        tv.tv_sec = static_cast<time_t>(args.timeout_s);
        tv.tv_usec = static_cast<suseconds_t>((args.timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        return fd;
    }
    last.context = "(" + where + ")";
    return last;
}

// Sends `word` and reads until its reply is complete: the word itself (an RFC 862 server) or
// stamped chunks carrying all of it (`echoplex --reply=stamp`, the book's server).
[[nodiscard]] Result<std::string> exchange(int fd, const std::string& word) {
    std::string_view rest = word;
    while (!rest.empty()) {
        const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return Error::from_errno("send");
        }
        rest.remove_prefix(static_cast<std::size_t>(n));
    }
    std::string reply;
    testecho::StampDecoder stamp;
    std::string decoded;
    bool stamped = true;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                // SO_RCVTIMEO ran out: say so, not "Resource temporarily unavailable".
                return Error{"waiting for the reply", make_error_code(errc::timed_out),
                             fmt::format("({} of {} bytes back; --timeout waits longer)", reply.size(), word.size())};
            }
            return Error::from_errno("recv");
        }
        if (n == 0) {
            return Error{"recv", std::error_code(ECONNRESET, std::system_category()),
                         fmt::format("(server closed after {} reply bytes)", reply.size())};
        }
        const std::string_view got(buf, static_cast<std::size_t>(n));
        reply.append(got);
        stamped = stamped && stamp.feed(got, decoded);
        if (reply == word || (stamped && decoded.size() >= word.size()) ||
            (!stamped && reply.size() >= word.size())) {
            return reply;
        }
    }
}

int run_client(int argc, char** argv) {
    log::set_program("echo-client");
    ClientArgs args;
    bool help = false;
    bool version = false;
    bool host_seen = false;
    cli::Parser p("echo-client", "[OPTIONS] [HOST] [WORD...]",
                  "The book's echo client: sends each WORD to HOST (default localhost) and prints each reply.");
    p.flag('h', "help", "print this help and exit", [&] { help = true; });
    p.flag('V', "version", "print the version and exit", [&] { version = true; });
    p.option('p', "port", "PORT", "server port (default 50007)",
             [&](std::string_view v) { args.port = static_cast<std::uint16_t>(cli::parse_int("--port", v, 1, 65535)); });
    p.option(0, "timeout", "TIME", "give up on a reply after this long (default 10s)",
             [&](std::string_view v) { args.timeout_s = cli::parse_seconds("--timeout", v); });
    p.positionals("[HOST] [WORD...]", [&](std::string_view w) {
        if (!host_seen) {
            args.host = std::string(w);
            host_seen = true;
        } else {
            args.words.emplace_back(w);
        }
    });
    p.parse(argc, argv);
    if (help) {
        std::fputs((p.help() + "\nExit status: 0 every reply received, 1 an error, 2 usage error.\n").c_str(), stdout);
        return 0;
    }
    if (version) {
        std::fputs((version_line("echo-client") + "\n").c_str(), stdout);
        return 0;
    }
    if (args.timeout_s <= 0) {
        throw cli::UsageError("--timeout must be more than 0");
    }
    if (args.words.empty()) {
        args.words.emplace_back(book_message);
    }
    for (const auto& w : args.words) {
        if (w.empty()) {
            throw cli::UsageError("words must not be empty");
        }
    }
    std::signal(SIGPIPE, SIG_IGN);
    auto fd = connect_to(args);
    if (!fd) {
        log::error("{}", fd.error().message());
        return 1;
    }
    for (const auto& word : args.words) {
        auto reply = exchange(fd->get(), word);
        if (!reply) {
            log::error("{}", reply.error().message());
            return 1;
        }
        std::fputs(fmt::format("Client received: {}\n", *reply).c_str(), stdout);
        std::fflush(stdout);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return echoplex::cli::run_main("echo-client", [&] { return run_client(argc, argv); });
}
