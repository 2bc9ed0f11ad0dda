// Connection over a real socket pair, on every backend: byte-exact echo under partial writes,
// write interest exactly while output is queued, backpressure, half-close, no idle memory.
#include "echoplex/net/connection.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>

#include "echoplex/net/bind_socket.hpp"
#include "echoplex/net/reactor_stream.hpp"
#include "echoplex/services/echo.hpp"
#include "echoplex/services/stamp.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {
namespace {

struct Owner final : ConnectionOwner {
    std::string reason;
    int closes = 0;
    void connection_closed(Connection&, std::string_view why) override {
        reason = std::string(why);
        ++closes;
    }
};

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
}

struct Fixture {
    std::unique_ptr<EventLoop> loop;
    SocketPair pair = connected_pair(Transport::tcp_loopback);
    BlockPool pool;
    ServerStats stats;
    ConnectionLimits limits;
    Owner owner;
    std::unique_ptr<ConnectionContext> context;
    std::unique_ptr<Connection> conn;

    // With `scripted`, the connection's socket calls are that script's (the socket pair then only
    // gives it a descriptor the loop can watch).
    explicit Fixture(ConnectionLimits l = {}, ProtocolPtr protocol = shared_protocol<services::Echo>(),
                     SocketIo* scripted = nullptr)
        : limits(l) {
        auto created = EventLoop::create(backend_under_test());
        REQUIRE(created.has_value());
        loop = std::move(created).value();
        std::unique_ptr<Stream> stream = scripted != nullptr
                                             ? std::make_unique<ScriptedReactorStream>(*loop, std::move(pair.b), ScriptedSocketCalls{scripted})
                                             : make_socket_stream(*loop, std::move(pair.b), pool);
        context = std::make_unique<ConnectionContext>(ConnectionContext{*loop, limits, pool, stats, owner});
        conn = std::make_unique<Connection>(*context, std::move(stream), std::move(protocol));
        REQUIRE(conn->start());
    }
    int client() const { return pair.a.get(); }
    int server_fd() const { return conn->fd(); }
};

// A fixture whose server side has a 4 KiB send buffer, so output queues up in the connection.
std::unique_ptr<Fixture> small_buffer_fixture(std::size_t high, std::size_t low) {
    ConnectionLimits limits;
    limits.high_watermark = high;
    limits.low_watermark = low;
    auto f = std::make_unique<Fixture>(limits);
    const int small = 4096;
    REQUIRE(::setsockopt(f->server_fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    return f;
}

// Writes `data` from `client` while reading the echo, stepping the server loop; returns what
// came back once it is as long as what was sent (or the step bound ran out).
std::string echo_through_fd(EventLoop& loop, int client, const std::string& data) {
    std::size_t sent = 0;
    std::string back;
    run_until(loop, [&] {
        send_some(client, data, sent);
        back += read_available(client);
        return back.size() >= data.size();
    }, 20000, std::chrono::milliseconds(5));
    return back;
}

std::string echo_through(Fixture& f, const std::string& data) { return echo_through_fd(*f.loop, f.client(), data); }

TEST_CASE("one event's read budget is an equal share of the batch's, between one and four read budgets") {
    ConnectionLimits limits;  // 64 KiB read budget, 16 MiB per batch
    CHECK(limits.event_read_budget(0) == 4 * limits.read_budget);
    CHECK(limits.event_read_budget(1) == 4 * limits.read_budget);
    CHECK(limits.event_read_budget(64) == 4 * limits.read_budget);
    CHECK(limits.event_read_budget(100) == limits.batch_read_budget / 100);
    CHECK(limits.event_read_budget(256) == limits.read_budget);
    CHECK(limits.event_read_budget(10000) == limits.read_budget);
    CHECK(limits.largest_event_read() == 4 * limits.read_budget);
    limits.batch_read_budget = 96 * 1024;
    CHECK(limits.event_read_budget(1) == 96 * 1024);
    CHECK(limits.event_read_budget(2) == limits.read_budget);
}

TEST_CASE("echo is byte-exact through a tiny send buffer, and write interest is off once drained") {
    auto fixture = small_buffer_fixture(ConnectionLimits{}.high_watermark, ConnectionLimits{}.low_watermark);
    Fixture& f = *fixture;
    const std::string data = random_bytes(1 << 20, 1);
    CHECK(echo_through(f, data) == data);
    CHECK(f.conn->queued_bytes() == 0);
    CHECK(f.conn->interest() == Interest::read);
    CHECK(f.conn->buffer_blocks() == 0);  // idle: no buffer memory held
    CHECK(f.stats.bytes_in == data.size());
    CHECK(f.stats.bytes_out == data.size());
}

TEST_CASE("a client that does not read pauses reading at the high watermark, and resumes") {
    auto fixture = small_buffer_fixture(64 * 1024, 16 * 1024);
    Fixture& f = *fixture;
    const ConnectionLimits& limits = f.limits;
    const std::string data = random_bytes(16 << 20, 2);
    std::size_t sent = 0;
    // Push until the server stops taking input: its queue is full and its reading paused.
    CHECK(run_until(*f.loop, [&] {
        send_some(f.client(), data, sent);
        return f.conn->reading_paused();
    }, 20000, std::chrono::milliseconds(1)));
    CHECK(sent < data.size());
    CHECK(f.stats.paused == 1);
    CHECK_FALSE(wants_read(f.conn->interest()));
    CHECK(wants_write(f.conn->interest()));
    // Bounded: at most the high watermark plus one event's read is ever queued.
    CHECK(f.conn->queued_bytes() <= limits.high_watermark + limits.largest_event_read());

    // The client reads again: everything comes back, in order, and reading resumes.
    std::string back;
    CHECK(run_until(*f.loop, [&] {
        send_some(f.client(), data, sent);
        back += read_available(f.client());
        return back.size() == data.size();
    }, 50000, std::chrono::milliseconds(1)));
    CHECK(back == data);
    CHECK(f.conn->interest() == Interest::read);
}

TEST_CASE("half-close: everything sent before EOF is echoed, then the server closes") {
    Fixture f;
    const std::string data = random_bytes(300000, 3);
    write_all(f.client(), data.substr(0, 100000));
    std::size_t sent = 100000;
    bool shut = false;
    std::string back;
    CHECK(run_until(*f.loop, [&] {
        if (sent < data.size()) {
            send_some(f.client(), data, sent);
        } else if (!shut) {
            REQUIRE(::shutdown(f.client(), SHUT_WR) == 0);
            shut = true;
        }
        back += read_available(f.client());
        return f.owner.closes == 1;
    }, 20000, std::chrono::milliseconds(2)));
    back += read_available(f.client());
    CHECK(back == data);
    CHECK(f.owner.reason == "client closed");
    char byte;
    CHECK(::recv(f.client(), &byte, 1, 0) == 0);  // FIN after the last byte
}

TEST_CASE("a reset closes only this connection, with its reason") {
    Fixture f;
    write_all(f.client(), "abc");
    set_linger_zero(f.client());
    f.pair.a.reset();
    CHECK(run_until(*f.loop, [&] { return f.owner.closes == 1; }));
    CHECK((f.owner.reason == "reset by peer" || f.owner.reason == "peer went away"));
    CHECK(f.conn->closed());
}

TEST_CASE("an idle connection's objects fit the heap chunks of the 256-byte budget") {
    // glibc hands out chunks of the request plus 8, rounded up to 16: a 168-byte Connection and
    // a 40-byte stream take 176 + 48 bytes; the loop's slot and the server's table add 24.
    // Echo and discard share one protocol instance, so they add nothing.
    CHECK(sizeof(Connection) <= 168);
    CHECK(sizeof(ReactorStream) <= 40);
}

TEST_CASE("peer() is the client's address as the socket tells it, until set_peer replaces it") {
    Fixture f;
    sockaddr_storage client{};
    socklen_t length = sizeof client;
    REQUIRE(::getsockname(f.client(), reinterpret_cast<sockaddr*>(&client), &length) == 0);
    CHECK(f.conn->peer() == format_address(reinterpret_cast<const sockaddr*>(&client)));
    f.conn->set_peer("192.0.2.7:4242");  // what a PROXY header says
    CHECK(f.conn->peer() == "192.0.2.7:4242");
}

// Counts its deletions: a protocol of its own per connection.
struct Counted final : Protocol {
    int* deleted;
    explicit Counted(int* d) : deleted(d) {}
    ~Counted() override { ++*deleted; }
    void on_input(Session& session, ByteQueue& input) override { session.send(input); }
};

TEST_CASE("a connection deletes a protocol of its own, and leaves a shared one to the next connection") {
    int deleted = 0;
    {
        Fixture f({}, std::make_unique<Counted>(&deleted));
        CHECK(echo_through(f, "own") == "own");
    }
    CHECK(deleted == 1);
    ProtocolPtr first = shared_protocol<services::Echo>();
    const Protocol* instance = first.get();
    {
        Fixture f({}, std::move(first));
        CHECK(echo_through(f, "one") == "one");
    }
    // The first connection is gone; the one instance serves the next.
    ProtocolPtr second = shared_protocol<services::Echo>();
    CHECK(second.get() == instance);
    Fixture f({}, std::move(second));
    CHECK(echo_through(f, "two") == "two");
}

TEST_CASE("drain stops reading, delivers what is queued, then closes") {
    auto fixture = small_buffer_fixture(32 * 1024, 8 * 1024);
    Fixture& f = *fixture;
    const std::string data = random_bytes(256 * 1024, 4);
    std::size_t sent = 0;
    CHECK(run_until(*f.loop, [&] {
        send_some(f.client(), data, sent);
        return f.conn->reading_paused();
    }, 20000, std::chrono::milliseconds(1)));
    const std::uint64_t read_by_server = f.stats.bytes_in;
    f.conn->drain();
    std::string back;
    bool eof = false;
    // The server sends FIN after the last byte and waits for ours before closing, so that its
    // close cannot turn into a reset that destroys unread output.
    CHECK(run_until(*f.loop, [&] {
        if (!eof) {
            back += read_available(f.client());
            char byte;
            eof = ::recv(f.client(), &byte, 1, MSG_PEEK) == 0;
            if (eof) {
                CHECK(f.owner.closes == 0);
                REQUIRE(::shutdown(f.client(), SHUT_WR) == 0);
            }
        }
        return f.owner.closes == 1;
    }, 20000, std::chrono::milliseconds(2)));
    CHECK(eof);
    CHECK(f.owner.reason == "drained");
    CHECK(back.size() == read_by_server);
    CHECK(back == data.substr(0, back.size()));
}

TEST_CASE("the stamp protocol answers each chunk in the book's form") {
    Fixture f({}, std::make_unique<services::Stamp>());
    write_all(f.client(), "Hello network world");
    std::string back;
    CHECK(run_until(*f.loop, [&] {
        back += read_available(f.client());
        return back.size() >= 6 + 19 + 4 + 24;
    }));
    REQUIRE(back.size() == 6 + 19 + 4 + 24);
    CHECK(back.starts_with("Echo=>Hello network world at "));
    const std::string when = back.substr(29);
    CHECK(when[3] == ' ');
    CHECK(when[7] == ' ');
    CHECK(when[13] == ':');
    CHECK(when[16] == ':');
}

// The kernel's answers for a client that sends one byte per readiness event and reads nothing:
// every recv gets one byte, every send would block.
struct ByteAtATimeClient final : SocketIo {
    std::size_t sent_to_us = 0;
    ssize_t recv(int, void* buffer, std::size_t) override {
        static_cast<char*>(buffer)[0] = static_cast<char>('a' + sent_to_us++ % 26);
        return 1;
    }
    ssize_t sendmsg(int, const msghdr*, int) override {
        errno = EAGAIN;
        return -1;
    }
    int shutdown(int, int) override { return 0; }
};

// Answers each complete line; a partial line waits in the input for the rest.
struct Lines final : Protocol {
    void on_input(Session& session, ByteQueue& input) override {
        const std::string text = input.to_string();
        const auto end = text.rfind('\n');
        if (end != std::string::npos) {
            session.send(std::string_view(text).substr(0, end + 1));
            input.consume(end + 1);
        }
    }
};

TEST_CASE("a partial frame a protocol keeps survives other connections' reads on the same loop") {
    // A read into an empty input lands in the loop's read scratch, which the next read of any
    // connection reuses: what the protocol leaves must be copied out before that.
    Fixture f({}, std::make_unique<Lines>());
    SocketPair other_pair = connected_pair(Transport::tcp_loopback);
    Connection other(*f.context, make_socket_stream(*f.loop, std::move(other_pair.b), f.pool),
                     shared_protocol<services::Echo>());
    REQUIRE(other.start());

    write_all(f.client(), "hel");
    REQUIRE(run_until(*f.loop, [&] { return f.stats.bytes_in == 3; }, 2000, std::chrono::milliseconds(5)));
    const std::string noise(1000, '#');  // read by the other connection into the same scratch
    CHECK(echo_through_fd(*f.loop, other_pair.a.get(), noise) == noise);
    write_all(f.client(), "lo\nwor");
    std::string back;
    REQUIRE(run_until(*f.loop, [&] {
        back += read_available(f.client());
        return back.size() >= 6;
    }, 2000, std::chrono::milliseconds(5)));
    CHECK(back == "hello\n");
    CHECK(echo_through_fd(*f.loop, other_pair.a.get(), noise) == noise);
    write_all(f.client(), "ld\n");
    REQUIRE(run_until(*f.loop, [&] {
        back += read_available(f.client());
        return back.size() >= 12;
    }, 2000, std::chrono::milliseconds(5)));
    CHECK(back == "hello\nworld\n");
    CHECK(f.owner.closes == 0);
}

// Always has input for us; our first reply finds the connection gone (EPIPE).
struct VanishingClient final : SocketIo {
    int reads = 0;
    int sends = 0;
    ssize_t recv(int, void* buffer, std::size_t length) override {
        ++reads;
        std::memset(buffer, 'x', length);
        return static_cast<ssize_t>(length);  // a full read: more is waiting
    }
    ssize_t sendmsg(int, const msghdr*, int) override {
        ++sends;
        errno = EPIPE;
        return -1;
    }
    int shutdown(int, int) override { return 0; }
};

TEST_CASE("a reply written on the spot to a vanished client stops the reading and closes as reset after the event") {
    VanishingClient client;
    ConnectionLimits limits;
    limits.read_budget = 4 * EventLoop::read_scratch_size;  // room for several full reads
    Fixture f(limits, shared_protocol<services::Echo>(), &client);
    f.conn->on_readable();
    CHECK(client.reads == 1);  // not read on into a connection that is closing
    CHECK(client.sends == 1);
    CHECK(f.owner.closes == 1);
    CHECK(f.owner.reason == "peer went away");
    CHECK(f.stats.closed_by(CloseReason::reset) == 1);
    CHECK(f.conn->closed());
    CHECK(f.conn->buffer_blocks() == 0);
}

TEST_CASE("a client sending a byte at a time cannot make queued memory outgrow the queued bytes") {
    // Found by tests/fuzz/connection_fuzz.cpp: each one-byte read moved a 16 KiB block of its own
    // to the write queue, so a paused connection could hold 16 KiB per queued byte.
    ByteAtATimeClient client;
    Fixture f({}, shared_protocol<services::Echo>(), &client);
    for (int i = 0; i < 1000; ++i) {
        f.conn->on_readable();
    }
    CHECK(f.owner.closes == 0);
    CHECK(f.conn->queued_bytes() == 1000);
    CHECK(f.conn->buffer_blocks() == 1);  // 1000 bytes fit in one block
    CHECK(f.loop->interest(f.conn->fd()) == Interest::both);
}

}  // namespace
}  // namespace echoplex::test
