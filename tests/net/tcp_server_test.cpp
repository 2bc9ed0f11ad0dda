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
    std::size_t* ticks = nullptr;  // counts the sends, when set
    void on_open(Session& s) override {
        session = &s;
        loop = &s.loop();
        tick();
    }
    void tick() {
        if (ticks != nullptr) {
            ++*ticks;
        }
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

// Sends `size` bytes as it opens, then nothing; reads and drops.
struct Blast final : Protocol {
    explicit Blast(std::size_t size) : size(size) {}
    std::size_t size;
    void on_open(Session& session) override { session.send(std::string(size, 'b')); }
    void on_input(Session&, ByteQueue& input) override { input.clear(); }
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
    // The server took in no more than the limit and one event's read beyond it.
    CHECK(stat(*s.server, "bytes_in") <= options_limit + ConnectionLimits{}.largest_event_read());
    write_all(polite.get(), "still here\n");
    std::string answer;
    bool polite_closed = false;
    CHECK(s.read_until(polite.get(), answer, polite_closed, [](const std::string& r, bool) { return r == "STILL HERE\n"; }));
    CHECK_FALSE(polite_closed);
    CHECK(s.server->stats().closed_by(CloseReason::limit) == 1);
}

// Answers once the input passes 1 KiB, then finishes without consuming it (as an HTTP server
// answers an oversized head with 431).
struct RefuseLong final : Protocol {
    void on_input(Session& session, ByteQueue& input) override {
        if (input.size() > 1024) {
            session.send("too long\n");
            session.finish();
        }
    }
};

TEST_CASE("a protocol that answers and finishes on input beyond the input limit is heard, not cut off by the limit") {
    TcpServerOptions options = options_with({{"refuse", [] { return std::make_unique<RefuseLong>(); }}});
    options.limits.input_limit = 2048;  // one read of the 8 KiB below passes it
    InProcessServer s(std::move(options));
    const UniqueFd client = s.connect();
    write_all(client.get(), std::string(8192, 'x'));
    ::shutdown(client.get(), SHUT_WR);
    std::string got;
    bool closed = false;
    CHECK(s.read_until(client.get(), got, closed, [](const std::string&, bool c) { return c; }));
    CHECK(got == "too long\n");
    CHECK(run_until(*s.loop, [&] { return stat(*s.server, "open") == 0; }, 2000, 1ms));
    CHECK(s.server->stats().closed_by(CloseReason::limit) == 0);
    CHECK(s.server->stats().closed_by(CloseReason::finished) == 1);
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
    CHECK(s.server->stats().closed_by(CloseReason::limit) == 1);
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
    CHECK(s.server->stats().closed_by(CloseReason::drained) == 1);
}

// Steps the loop until the server has closed `n` connections in all.
bool until_closed(InProcessServer& s, std::uint64_t n) {
    return run_until(*s.loop, [&] {
        const ServerStats stats = s.server->stats();
        std::uint64_t closed = 0;
        for (const std::uint64_t c : stats.closed) {
            closed += c;
        }
        return closed >= n && stats.open == 0;
    }, 4000, 5ms);
}

TEST_CASE("every close is counted under its reason and every refusal under its cause, per service") {
    TcpServerOptions options = options_with({{"shout", shout()}, {"tick", [] { return std::make_unique<LateTick>(); }}});
    options.max_connections = 2;
    options.idle_timeout_s = 0.1;
    options.limits.linger_timeout = 50ms;
    InProcessServer s(std::move(options));
    REQUIRE(s.server->service_stats().size() == 2);
    const ServerStats& shout_stats = s.server->service_stats()[0].stats;
    const ServerStats& tick_stats = s.server->service_stats()[1].stats;
    CHECK(s.server->service_stats()[0].service == "shout");

    {  // answered, then the client's EOF: client_closed
        const UniqueFd c = s.connect(0);
        write_all(c.get(), "x\n");
        std::string got;
        bool closed = false;
        REQUIRE(s.read_until(c.get(), got, closed, [](const std::string& r, bool) { return r == "X\n"; }));
        ::shutdown(c.get(), SHUT_WR);
        REQUIRE(until_closed(s, 1));
    }
    CHECK(shout_stats.closed_by(CloseReason::client_closed) == 1);
    {  // a reset: SO_LINGER 0 makes close(2) send RST
        const UniqueFd c = s.connect(0);
        REQUIRE(run_until(*s.loop, [&] { return s.server->stats().open == 1; }, 2000, 5ms));
        set_linger_zero(c.get());
    }
    REQUIRE(until_closed(s, 2));
    CHECK(shout_stats.closed_by(CloseReason::reset) == 1);
    {  // the protocol finishes, the client never sends its EOF: linger_timeout
        const UniqueFd c = s.connect(1);
        std::string got;
        bool closed = false;
        REQUIRE(s.read_until(c.get(), got, closed, [](const std::string& r, bool) { return r == "tick\n"; }));
        REQUIRE(until_closed(s, 3));
    }
    CHECK(tick_stats.closed_by(CloseReason::linger_timeout) == 1);
    {  // two silent clients fill --max-connections: a third is refused, then both time out idle
        const UniqueFd a = s.connect(0);
        const UniqueFd b = s.connect(0);
        REQUIRE(run_until(*s.loop, [&] { return s.server->stats().open == 2; }, 2000, 5ms));
        const UniqueFd c = s.connect(1);
        REQUIRE(run_until(*s.loop, [&] { return tick_stats.refused_by(RefusalCause::max_connections) == 1; }, 2000, 5ms));
        REQUIRE(until_closed(s, 5));
    }
    CHECK(shout_stats.closed_by(CloseReason::idle_timeout) == 2);
    CHECK(shout_stats.accepted == 4);
    CHECK(tick_stats.accepted == 1);
    CHECK(shout_stats.refused_total() == 0);
    CHECK(tick_stats.refused_total() == 1);
    CHECK(s.server->stats().refused_total() == 1);
    CHECK(s.server->stats().peak == 2);
    // Nothing else was counted: every close is under exactly one reason.
    const ServerStats total = s.server->stats();
    std::uint64_t closes = 0;
    for (const std::uint64_t c : total.closed) {
        closes += c;
    }
    CHECK(closes == total.accepted);
}

TEST_CASE("a drain that outlasts its deadline is counted as drain_timeout") {
    // 32 MiB at once, more than loopback's socket buffers hold for a client that does not read.
    TcpServerOptions options = options_with({{"blast", [] { return std::make_unique<Blast>(32 * 1024 * 1024); }}});
    options.drain_timeout_s = 0.05;
    InProcessServer s(std::move(options));
    const UniqueFd client = s.connect();  // never reads: its output cannot drain
    REQUIRE(run_until(*s.loop, [&] { return s.server->stats().bytes_out > 0; }, 2000, 5ms));
    bool finished = false;
    s.server->shutdown([&] { finished = true; });
    CHECK(run_until(*s.loop, [&] { return finished; }, 4000, 5ms));
    CHECK(s.server->stats().closed_by(CloseReason::drain_timeout) == 1);
}

TEST_CASE("output a protocol makes after the connection's FIN is dropped, not sent into a shut socket") {
    // Flood sends every millisecond; the drain finds its output delivered, sends FIN and lingers
    // for our EOF while Flood goes on sending.
    std::size_t ticks = 0;
    InProcessServer s(options_with({{"flood", [&ticks] {
        auto flood = std::make_unique<Flood>();
        flood->ticks = &ticks;
        return flood;
    }}}));
    const UniqueFd client = s.connect();
    std::string got;
    bool closed = false;
    REQUIRE(s.read_until(client.get(), got, closed, [](const std::string& r, bool) { return !r.empty(); }));
    bool finished = false;
    s.server->shutdown([&] { finished = true; });
    CHECK(s.read_until(client.get(), got, closed, [](const std::string&, bool c) { return c; }, 20000));
    // The server's FIN came; Flood sends three times more before our EOF.
    const std::size_t at_fin = ticks;
    CHECK(run_until(*s.loop, [&] { return ticks >= at_fin + 3 || s.server->stats().open == 0; }, 2000, 1ms));
    ::shutdown(client.get(), SHUT_WR);
    CHECK(run_until(*s.loop, [&] { return finished; }, 4000, 5ms));
    CHECK(s.server->stats().closed_by(CloseReason::drained) == 1);
    CHECK(s.server->stats().closed_by(CloseReason::reset) == 0);
}

}  // namespace
}  // namespace echoplex::test
