// chat_server: a line-based chat room on the echoplex library, written as an example of a Protocol.
// Every complete line a client sends goes to every other client, prefixed with the sender's
// address ("[127.0.0.1:40312] hello"); joins and leaves are announced.
//
// What it shows:
//  - one Protocol object per connection (a Member), made by the endpoint's factory, sharing the
//    room through an object the factory captures;
//  - framing: complete lines are taken from the input and a partial line waits there for its LF;
//    the connection's input limit closes a client whose line never ends;
//  - sending to other sessions from inside one session's callback (the library defers those
//    writes to the end of the iteration, so iterating over the room while sending is safe);
//  - backpressure across connections: a client that does not read holds the clients that talk
//    to it, instead of making the server buffer for it (see Member::broadcast).
//
//   $ chat_server --port 7000                 then `nc 127.0.0.1 7000` in a few terminals
//   chat_server: listening on 127.0.0.1:7000 (chat); backend epoll
#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "echoplex/io/fmt.hpp"

#include "echoplex/io/event_loop.hpp"
#include "echoplex/io/log.hpp"
#include "echoplex/net/tcp_server.hpp"

namespace {

using namespace echoplex;

// Takes the complete lines (through the last LF) from the front of `input`; a partial line stays
// for later. `searched` counts the bytes at the front already known to hold no LF, so each byte is
// searched once however slowly a long line trickles in.
std::string take_lines(ByteQueue& input, std::size_t& searched) {
    std::vector<iovec> pieces(input.blocks());
    pieces.resize(input.peek(pieces.data(), pieces.size(), input.size()));
    std::size_t end = 0;  // one past the last LF
    std::size_t offset = 0;
    for (const iovec& piece : pieces) {
        const std::string_view bytes(static_cast<const char*>(piece.iov_base), piece.iov_len);
        if (offset + bytes.size() > searched) {
            const std::size_t from = searched > offset ? searched - offset : 0;
            if (const auto lf = bytes.substr(from).rfind('\n'); lf != std::string_view::npos) {
                end = offset + from + lf + 1;
            }
        }
        offset += bytes.size();
    }
    searched = input.size();
    std::string lines;
    for (const iovec& piece : pieces) {
        if (lines.size() == end) {
            break;
        }
        lines.append(static_cast<const char*>(piece.iov_base), std::min(piece.iov_len, end - lines.size()));
    }
    input.consume(end);
    searched -= end;
    return lines;
}

class Member;

// Everyone connected, shared by the Members through the protocol factory.
struct Room {
    std::vector<Member*> members;  // each from its on_open until its on_close
};

class Member final : public Protocol {
public:
    explicit Member(std::shared_ptr<Room> room) : room_(std::move(room)) {}

    void on_open(Session& session) override {
        session_ = &session;
        name_ = session.peer();  // kept: once the client is gone its socket has no peer to ask
        prefix_ = fmt::format("[{}] ", name_);
        announce(fmt::format("* {} joined\n", name_));
        room_->members.push_back(this);
    }

    void on_input(Session& session, ByteQueue& input) override {
        (void)session;
        const std::string lines = take_lines(input, searched_);
        std::string_view rest = lines;
        std::string text;
        while (!rest.empty()) {
            const std::size_t end = rest.find('\n') + 1;  // every line taken ends with LF
            text += prefix_;
            text += rest.substr(0, end);
            rest.remove_prefix(end);
        }
        if (!text.empty()) {
            broadcast(text);
        }
    }

    // The client will send no more: a last line without its LF still counts.
    void on_input_end(Session& session, ByteQueue& input) override {
        (void)session;
        if (!input.empty()) {
            broadcast(prefix_ + input.to_string() + "\n");
        }
    }

    // Our output fell to the low watermark (we asked in hold()): our senders may talk again.
    void on_output_space(Session& session) override {
        session.want_output_space(false);
        release_senders();
    }

    void on_close() override {
        std::erase(room_->members, this);
        release_senders();
        for (Member* other : room_->members) {
            std::erase(other->held_senders_, this);  // we may have been waiting on them
        }
        announce(fmt::format("* {} left\n", name_));
        session_ = nullptr;  // no longer valid once on_close returns
    }

private:
    // Sends `text` to everyone else. The policy for a slow reader: when a recipient's output is
    // full (at its high watermark, 256 KiB by default), the sender's input is held until that
    // recipient has drained to its low watermark. The batch in hand still goes out (the lines one
    // read completed: under the input limit plus one read budget, 64 KiB each here, and their
    // prefixes), but nothing more is read from the sender, so TCP flow control stops its client.
    // A client that never reads thus costs the server its high watermark plus one batch per
    // sender, and stalls those who talk to it (a real chat might also close a reader that stays
    // full too long). Announcements hold no one; the output limit bounds what they can queue.
    void broadcast(const std::string& text) {
        for (Member* to : room_->members) {
            if (to == this) {
                continue;
            }
            to->session_->send(text);
            if (to->session_->output_full()) {
                to->hold(*this);
            }
        }
    }

    // Holds `sender`'s input until this member's output drains.
    void hold(Member& sender) {
        if (std::ranges::find(held_senders_, &sender) != held_senders_.end()) {
            return;
        }
        held_senders_.push_back(&sender);
        session_->want_output_space(true);  // on_output_space once we are at the low watermark
        if (sender.waiting_for_++ == 0) {
            sender.session_->hold_input(true);
        }
    }

    // The senders this member held may read again, unless another recipient still holds them.
    void release_senders() {
        for (Member* sender : std::exchange(held_senders_, {})) {
            if (--sender->waiting_for_ == 0) {
                sender->session_->hold_input(false);
            }
        }
    }

    // Joins and leaves: to everyone else, holding no one.
    void announce(const std::string& text) {
        for (Member* to : room_->members) {
            if (to != this) {
                to->session_->send(text);
            }
        }
    }

    std::shared_ptr<Room> room_;
    Session* session_ = nullptr;  // from on_open until on_close
    std::string name_;            // the client's address, as announced
    std::string prefix_;          // "[peer] "
    std::size_t searched_ = 0;    // for take_lines
    std::vector<Member*> held_senders_;  // members whose input waits until our output drains
    int waiting_for_ = 0;                // full recipients holding our input
};

struct Args {
    std::uint16_t port = 0;  // 0: the kernel picks one, printed in the startup line
    BackendKind backend = available_backends().front();
};

constexpr const char* usage =
    "usage: chat_server [--port N] [--backend epoll|poll|select]\n"
    "A line-based chat room on 127.0.0.1; SIGINT or SIGTERM drains and exits.\n";

// nullopt after printing why the command line is wrong (or the help, with `exit_status` 0).
std::optional<Args> parse_args(int argc, char** argv, int& exit_status) {
    Args args;
    for (int i = 1; i < argc; ++i) {
        const std::string_view flag = argv[i];
        if (flag == "--help") {
            std::fputs(usage, stdout);
            exit_status = 0;
            return std::nullopt;
        }
        if ((flag == "--port" || flag == "--backend") && i + 1 < argc) {
            const std::string_view value = argv[++i];
            bool ok = true;
            if (flag == "--port") {
                const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), args.port);
                ok = error == std::errc{} && end == value.data() + value.size();
            } else if (const auto kind = parse_backend_kind(value)) {
                args.backend = *kind;
            } else {
                ok = false;
            }
            if (ok) {
                continue;
            }
            log::error("bad value for {}: '{}'", flag, value);
        } else {
            log::error("unexpected argument '{}'", flag);
        }
        std::fputs(usage, stderr);
        exit_status = 2;
        return std::nullopt;
    }
    return args;
}

}  // namespace

int main(int argc, char** argv) {
    log::set_program("chat_server");
    int exit_status = 0;
    const std::optional<Args> args = parse_args(argc, argv, exit_status);
    if (!args) {
        return exit_status;
    }
    std::signal(SIGPIPE, SIG_IGN);  // a write to a vanished client must not kill the server

    auto loop = EventLoop::create(args->backend);
    if (!loop) {
        log::error("{}", loop.error().message());
        return 1;
    }
    TcpServerOptions options;
    options.limits.input_limit = 64 * 1024;  // the longest line; a longer one closes its client
    options.endpoints.push_back(Endpoint{
        .hosts = {"127.0.0.1"},
        .port = args->port,
        .service = "chat",
        .protocol = [room = std::make_shared<Room>()] { return std::make_unique<Member>(room); },
    });
    auto server = TcpServer::create(**loop, std::move(options));
    if (!server) {
        log::error("cannot listen: {}", server.error().message());
        return 1;
    }
    EventLoop& l = **loop;
    TcpServer& s = **server;

    // Drain: stop accepting and reading, deliver what is queued (for at most the drain timeout).
    for (const int signo : {SIGINT, SIGTERM}) {
        if (auto watching = l.on_signal(signo, [&](int) { s.shutdown([&] { l.stop(); }); }); !watching) {
            log::error("{}", watching.error().message());
            return 1;
        }
    }
    fmt::print("chat_server: listening on {}; backend {}\n", s.descriptions().front(), backend_name(args->backend));
    std::fflush(stdout);

    if (auto ran = l.run(); !ran) {
        log::error("event loop failed: {}", ran.error().message());
        return 1;
    }
    return 0;
}
