// Connection over a real socket pair, on every backend: byte-exact echo under partial writes,
// write interest exactly while output is queued, backpressure, half-close, no idle memory.
#include "echoplex/net/connection.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <random>
#include <string>

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
    std::unique_ptr<Connection> conn;

    explicit Fixture(ConnectionLimits l = {}, std::unique_ptr<Protocol> protocol = std::make_unique<services::Echo>())
        : limits(l) {
        auto created = EventLoop::create(backend_under_test());
        REQUIRE(created.has_value());
        loop = std::move(created).value();
        conn = std::make_unique<Connection>(*loop, make_socket_stream(*loop, std::move(pair.b), pool), "peer",
                                            std::move(protocol), limits, pool, stats, owner);
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

// Writes `data` from the client while reading the echo, stepping the server loop; returns
// what came back once it is as long as what was sent (or the step bound ran out).
std::string echo_through(Fixture& f, const std::string& data) {
    std::size_t sent = 0;
    std::string back;
    run_until(*f.loop, [&] {
        send_some(f.client(), data, sent);
        back += read_available(f.client());
        return back.size() >= data.size();
    }, 20000, std::chrono::milliseconds(5));
    return back;
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
    // Bounded: at most the high watermark plus one read budget is ever queued.
    CHECK(f.conn->queued_bytes() <= limits.high_watermark + limits.read_budget);

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

TEST_CASE("a client sending a byte at a time cannot make queued memory outgrow the queued bytes") {
    // Found by tests/fuzz/connection_fuzz.cpp: each one-byte read moved a 16 KiB block of its own
    // to the write queue, so a paused connection could hold 16 KiB per queued byte.
    auto created = EventLoop::create(backend_under_test());
    REQUIRE(created.has_value());
    std::unique_ptr<EventLoop> loop = std::move(created).value();
    SocketPair pair = connected_pair(Transport::unix_stream);
    BlockPool pool;
    ServerStats stats;
    const ConnectionLimits limits;
    Owner owner;
    ByteAtATimeClient client;
    Connection conn(*loop, std::make_unique<ReactorStream>(*loop, std::move(pair.b), client), "peer",
                    std::make_unique<services::Echo>(), limits, pool, stats, owner);
    REQUIRE(conn.start());
    for (int i = 0; i < 1000; ++i) {
        conn.on_readable();
    }
    CHECK(owner.closes == 0);
    CHECK(conn.queued_bytes() == 1000);
    CHECK(conn.buffer_blocks() == 1);  // 1000 bytes fit in one block
    CHECK(loop->interest(conn.fd()) == Interest::both);
}

}  // namespace
}  // namespace echoplex::test
