// The generic TCP server with test protocols, on every backend: partial frames wait for the
// rest, the input limit closes a client that never completes one, output made later (a timer)
// is delivered, endpoints keep their own protocols, and shutdown drains.
#include "echoplex/net/tcp_server.hpp"

#include <sys/socket.h>

#include <cctype>
#include <string>

#include "support/doctest.hpp"
#include "support/in_process_server.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

// Answers each complete line in capitals; a partial line waits in the input.
struct Shout final : Protocol {
    void on_input(Session& session, ByteQueue& input) override {
        const std::string text = input.to_string();
        const auto end = text.rfind('\n');
        if (end == std::string::npos) {
            return;
        }
        std::string lines = text.substr(0, end + 1);
        for (char& c : lines) {
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        session.send(lines);
        input.consume(end + 1);
    }
};

// Says "tick" 20 ms after the client connects, from a timer, then finishes.
struct LateTick final : Protocol {
    std::optional<TimerId> timer;
    EventLoop* loop = nullptr;
    void on_open(Session& session) override {
        loop = &session.loop();
        timer = loop->add_timer(20ms, [this, &session] {
            timer.reset();
            session.send("tick\n");
            session.finish();
        });
    }
    void on_input(Session&, ByteQueue& input) override { input.clear(); }
    void on_close() override {
        if (timer) {
            loop->cancel_timer(*timer);
        }
    }
};

// Sends 64 KiB every millisecond from a timer, whether or not the client reads (reading
// never pauses it, so the watermarks cannot help): only the output limit stops it.
struct Flood final : Protocol {
    std::optional<TimerId> timer;
    EventLoop* loop = nullptr;
    Session* session = nullptr;
    void on_open(Session& s) override {
        session = &s;
        loop = &s.loop();
        tick();
    }
    void tick() {
        session->send(std::string(64 * 1024, 'f'));
        timer = loop->add_timer(1ms, [this] { tick(); });
    }
    void on_input(Session&, ByteQueue& input) override { input.clear(); }
    void on_close() override {
        if (timer) {
            loop->cancel_timer(*timer);
        }
    }
};

TcpServerOptions options_with(std::vector<std::pair<std::string, ProtocolFactory>> protocols) {
    TcpServerOptions options;
    for (auto& [name, factory] : protocols) {
        Endpoint endpoint;
        endpoint.service = name;
        endpoint.protocol = std::move(factory);
        options.endpoints.push_back(std::move(endpoint));
    }
    return options;
}

// One counter of the server's stats line ("bytes_in=123").
std::uint64_t stat(const TcpServer& server, const std::string& name) {
    const std::string line = server.stats_line();
    const auto at = line.find(" " + name + "=");
    REQUIRE(at != std::string::npos);
    return std::stoull(line.substr(at + name.size() + 2));
}

// What a server can have sent to a non-reading loopback client before its output limit bites:
// the 512 KiB limit, one more answer, and generous room for the two sockets' kernel buffers.
std::uint64_t options_limit_plus_buffers() { return 512 * 1024 + 64 * 1024 + 16 * 1024 * 1024; }

ProtocolFactory shout() {
    return [] { return std::make_unique<Shout>(); };
}

TEST_CASE("a partial frame waits in the input until the rest arrives") {
    InProcessServer s(options_with({{"shout", shout()}}));
    const UniqueFd client = s.connect();
    write_all(client.get(), "hel");
    std::string got;
    bool closed = false;
    // Nothing comes back for a partial line, however long the loop runs.
    s.read_until(client.get(), got, closed, [](const std::string&, bool) { return false; }, 20);
    CHECK(got.empty());
    write_all(client.get(), "lo\nwor");
    CHECK(s.read_until(client.get(), got, closed, [](const std::string& r, bool) { return r == "HELLO\n"; }));
    write_all(client.get(), "ld\n");
    CHECK(s.read_until(client.get(), got, closed, [](const std::string& r, bool) { return r == "HELLO\nWORLD\n"; }));
    CHECK_FALSE(closed);
}

TEST_CASE("a client whose unfinished frame passes the input limit is closed, the others are not") {
    TcpServerOptions options = options_with({{"shout", shout()}});
    const std::size_t options_limit = 64 * 1024;
    options.limits.input_limit = options_limit;
    InProcessServer s(std::move(options));
    const UniqueFd greedy = s.connect();
    const UniqueFd polite = s.connect();
    const std::string no_newline(256 * 1024, 'x');
    std::size_t sent = 0;
    std::string got;
    bool closed = false;
    CHECK(run_until(*s.loop, [&] {
        send_some(greedy.get(), no_newline, sent);
        got += read_available(greedy.get(), &closed);
        return closed;
    }, 4000, 5ms));
    CHECK(got.empty());
    // The server took in no more than the limit and one read beyond it.
    CHECK(stat(*s.server, "bytes_in") <= options_limit + ConnectionLimits{}.read_budget);
    write_all(polite.get(), "still here\n");
    std::string answer;
    bool polite_closed = false;
    CHECK(s.read_until(polite.get(), answer, polite_closed, [](const std::string& r, bool) { return r == "STILL HERE\n"; }));
    CHECK_FALSE(polite_closed);
}

TEST_CASE("a protocol that keeps sending to a client that does not read is stopped by the output limit") {
    TcpServerOptions options = options_with({{"flood", [] { return std::make_unique<Flood>(); }}});
    options.limits.output_limit = 512 * 1024;
    InProcessServer s(std::move(options));
    const UniqueFd client = s.connect();  // never reads
    CHECK(run_until(*s.loop, [&] { return stat(*s.server, "accepted") == 1 && stat(*s.server, "open") == 0; },
                    20000, 1ms));
    // It was closed by the server, having been sent less than the limit plus the kernel's buffers.
    CHECK(stat(*s.server, "bytes_out") < options_limit_plus_buffers());
}

TEST_CASE("output a protocol makes later, from a timer, is delivered, and finish() closes after it") {
    InProcessServer s(options_with({{"tick", [] { return std::make_unique<LateTick>(); }}}));
    const UniqueFd client = s.connect();
    std::string got;
    bool closed = false;
    CHECK(s.read_until(client.get(), got, closed, [](const std::string&, bool c) { return c; }));
    CHECK(got == "tick\n");
}

TEST_CASE("each endpoint serves its own protocol, and the descriptions name them") {
    InProcessServer s(options_with({{"shout", shout()}, {"tick", [] { return std::make_unique<LateTick>(); }}}));
    const auto described = s.server->descriptions();
    REQUIRE(described.size() == 2);
    CHECK(described[0] == "127.0.0.1:" + std::to_string(s.ports[0]) + " (shout)");
    CHECK(described[1] == "127.0.0.1:" + std::to_string(s.ports[1]) + " (tick)");
    const UniqueFd a = s.connect(0);
    const UniqueFd b = s.connect(1);
    write_all(a.get(), "a\n");
    std::string got_a;
    std::string got_b;
    bool closed_a = false;
    bool closed_b = false;
    CHECK(run_until(*s.loop, [&] {
        got_a += read_available(a.get(), &closed_a);
        got_b += read_available(b.get(), &closed_b);
        return got_a == "A\n" && closed_b;
    }, 2000, 5ms));
    CHECK(got_b == "tick\n");
    CHECK_FALSE(closed_a);
}

TEST_CASE("shutdown delivers what is owed, closes every client and reports once done") {
    InProcessServer s(options_with({{"shout", shout()}}));
    const UniqueFd client = s.connect();
    write_all(client.get(), "bye\n");
    std::string got;
    bool closed = false;
    CHECK(s.read_until(client.get(), got, closed, [](const std::string& r, bool) { return r == "BYE\n"; }));
    bool finished = false;
    s.server->shutdown([&] { finished = true; });
    CHECK(s.read_until(client.get(), got, closed, [](const std::string&, bool c) { return c; }));
    ::shutdown(client.get(), SHUT_WR);  // the server lingers for our EOF before it closes
    CHECK(run_until(*s.loop, [&] { return finished; }));
    CHECK(stat(*s.server, "open") == 0);
}

}  // namespace
}  // namespace echoplex::test
