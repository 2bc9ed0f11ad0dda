// What only a completion backend can get wrong, on a real io_uring loop: a close with operations
// in flight, a provided-buffer ring that runs dry, and completions (or posted events) that are
// still queued when their stream or listener has gone and its descriptor number is reused.
// Registered with ECHOPLEX_BACKEND=io_uring, so a kernel that refuses io_uring skips it (77).
#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <vector>

#include "echoplex/net/listener.hpp"
#include "echoplex/net/uring_stream.hpp"
#include "echoplex/services/services.hpp"
#include "support/doctest.hpp"
#include "support/in_process_server.hpp"
#include "support/net.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<EventLoop> uring_loop() {
    auto loop = EventLoop::create(BackendKind::io_uring);
    if (!loop) {
        FAIL(loop.error().message());
    }
    return std::move(loop).value();
}

// Counts what a stream tells its owner, and what the stream had in flight when it said closed.
struct Recorder final : StreamEvents {
    Stream* stream = nullptr;
    int readable = 0;
    int writable = 0;
    int closed = 0;
    std::size_t in_flight_at_close = 99;
    void on_readable() override { ++readable; }
    void on_writable() override { ++writable; }
    void on_closed() override {
        ++closed;
        in_flight_at_close = stream->in_flight();
    }
};

int open_descriptors() {
    int count = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (::readdir(dir) != nullptr) {
            ++count;
        }
        ::closedir(dir);
    }
    return count - 3;  // ".", ".." and the directory's own descriptor
}

// Raises the soft descriptor limit to the hard one; false (and says why) if even that is below
// `needed`, and the test then checks nothing.
bool descriptors_for(std::size_t needed) {
    rlimit limit{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
    if (limit.rlim_max < needed) {
        MESSAGE("skipped: RLIMIT_NOFILE's hard limit is below ", needed);
        return false;
    }
    limit.rlim_cur = limit.rlim_max;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
    return true;
}

// An echo server on 127.0.0.1 for `max_connections`, on the io_uring loop under test.
std::unique_ptr<InProcessServer> echo_server(std::size_t max_connections) {
    TcpServerOptions options;
    options.endpoints.push_back(Endpoint{{"127.0.0.1"}, 0, "echo", services::find("echo")->factory});
    options.max_connections = max_connections;
    auto server = std::make_unique<InProcessServer>(std::move(options));
    REQUIRE(server->loop->backend().kind() == BackendKind::io_uring);
    return server;
}

TEST_CASE("a close while a receive and a send are in flight completes after both, and the send consumed nothing") {
    auto loop = uring_loop();
    auto pair = connected_pair(Transport::tcp_loopback);
    // Fill the socket's send buffer first, so the stream's send waits in the kernel.
    const std::string chunk(64 * 1024, 'f');
    while (::send(pair.a.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
    }
    BlockPool pool;
    ByteQueue output(pool);
    output.append(std::string(100 * 1024, 'q'));
    Recorder events;
    UringStream stream(*loop, std::move(pair.a), pool);
    events.stream = &stream;
    REQUIRE(stream.open(events));
    const IoResult submitted = stream.write(output, output.size());
    CHECK(submitted.status == IoStatus::would_block);
    for (int i = 0; i < 3; ++i) {
        REQUIRE(loop->run_once(0ms));  // the submissions reach the kernel; neither can complete
    }
    REQUIRE(stream.in_flight() == 2);  // the receive and the send

    stream.close();
    CHECK(events.closed == 0);  // not before the kernel has let go of both
    REQUIRE(run_until(*loop, [&] { return events.closed == 1; }, 200));
    CHECK(events.in_flight_at_close == 0);
    CHECK(stream.fd() == -1);
    CHECK(output.size() == 100 * 1024);  // a cancelled send took nothing off the queue
    REQUIRE(loop->run_once(0ms));
    CHECK(events.closed == 1);  // once
}

TEST_CASE("an event posted for a destroyed stream never reaches the stream that reuses its descriptor number") {
    auto loop = uring_loop();
    BlockPool pool;
    Recorder first_events;
    auto first_pair = connected_pair(Transport::unix_stream);
    auto first = std::make_unique<UringStream>(*loop, std::move(first_pair.a), pool);
    first_events.stream = first.get();
    REQUIRE(first->open(first_events));
    REQUIRE(first->set_interest(Interest::both));  // posts "writable": nothing is in flight to send
    REQUIRE(loop->run_once(0ms));                  // and the receive reaches the kernel
    REQUIRE(first->set_interest(Interest::both));
    const int number = first->fd();
    first.reset();  // with a receive in flight: cancelled on the spot, descriptor closed

    auto second_pair = connected_pair(Transport::unix_stream);
    UniqueFd reused = std::move(second_pair.a);
    if (reused.get() != number) {
        // The two ends of the pair may take the numbers in either order.
        std::swap(reused, second_pair.b);
    }
    REQUIRE(reused.get() == number);
    Recorder second_events;
    UringStream second(*loop, std::move(reused), pool);
    second_events.stream = &second;
    REQUIRE(second.open(second_events));  // read only
    write_all(second_pair.b.get(), "for the second");
    REQUIRE(run_until(*loop, [&] { return second_events.readable > 0; }, 200));
    for (int i = 0; i < 3; ++i) {
        REQUIRE(loop->run_once(0ms));
    }
    CHECK(second_events.writable == 0);  // the first stream's posted event was dropped
    CHECK(first_events.writable <= 1);   // whatever it saw, it saw before it was destroyed
    CHECK(first_events.closed == 0);
    ByteQueue got(pool);
    CHECK(second.read(got, 1024).bytes == 14);
}

TEST_CASE("an accept completion queued behind its listener's close is dropped and its socket closed") {
    auto loop = uring_loop();
    std::vector<UniqueFd> taken;
    std::unique_ptr<Listener> listener;
    auto opened = Listener::open(
        *loop, "127.0.0.1", 0, 64,
        [&](UniqueFd socket, std::string) {
            taken.push_back(std::move(socket));
            listener->close();  // the second accepted socket's completion is still queued
        },
        [](const Error&) {});
    REQUIRE(opened.has_value());
    listener = std::move(opened).value();
    REQUIRE(listener->start());
    REQUIRE(loop->run_once(0ms));  // the multishot accept is in the kernel
    REQUIRE(listener->accepting_by_completion());
    const std::uint16_t port =
        static_cast<std::uint16_t>(std::stoi(listener->address().substr(listener->address().rfind(':') + 1)));
    const int before = open_descriptors();
    UniqueFd one = connect_loopback(port);
    UniqueFd two = connect_loopback(port);
    REQUIRE(run_until(*loop, [&] { return !taken.empty(); }, 200));
    for (int i = 0; i < 3; ++i) {
        REQUIRE(loop->run_once(0ms));
    }
    CHECK(taken.size() == 1);
    // The two clients, the socket the listener handed over; the listener itself is closed, and
    // the second accepted socket (if the kernel got to it) was closed by the loop, not leaked.
    CHECK(open_descriptors() == before - 1 + 2 + 1);
    bool closed = false;
    REQUIRE(run_until(*loop, [&] {
        (void)read_available(two.get(), &closed);
        return closed;
    }, 200));
}

TEST_CASE("the provided-buffer ring runs dry under 1,000 connections sending at once, and no byte is lost") {
    constexpr std::size_t clients_count = 1000;
    if (!descriptors_for(2 * clients_count + 64)) {
        return;
    }
    const auto owned = echo_server(clients_count + 10);
    InProcessServer& server = *owned;
    std::vector<UniqueFd> clients;
    while (clients.size() < clients_count) {
        // In batches the listen backlog holds, accepted before the next batch connects.
        for (int i = 0; i < 50; ++i) {
            clients.push_back(server.connect());
        }
        REQUIRE(run_until(*server.loop, [&] { return server.server->stats().open == clients.size(); }, 2000, 5ms));
    }

    // Every client sends at once: far more receives complete in one wait than the ring lends.
    std::vector<std::string> sent(clients_count);
    for (std::size_t i = 0; i < clients_count; ++i) {
        sent[i] = std::string(4096, static_cast<char>('a' + i % 26)) + std::to_string(i);
        write_all(clients[i].get(), sent[i]);
    }
    std::vector<std::string> received(clients_count);
    std::size_t done = 0;
    REQUIRE(run_until(*server.loop, [&] {
        for (std::size_t i = 0; i < clients_count; ++i) {
            if (received[i].size() < sent[i].size()) {
                received[i] += read_available(clients[i].get());
                done += received[i].size() >= sent[i].size() ? 1 : 0;
            }
        }
        return done == clients_count;
    }, 4000, 5ms));
    for (std::size_t i = 0; i < clients_count; ++i) {
        if (received[i] != sent[i]) {
            FAIL_CHECK("client ", i, " got ", received[i].size(), " bytes that differ from its ", sent[i].size());
        }
    }
    MESSAGE("receives that found the ring dry: ", server.loop->backend().buffer_ring_shortages());
    CHECK(server.loop->backend().buffer_ring_shortages() > 0);
}

TEST_CASE("clients that never read keep at most their share of the receive buffers: another client is still echoed") {
    // Each of these clients sends far more than the server may queue for it and reads nothing,
    // so every connection pauses holding a high watermark of replies: more bytes than the large
    // and small receive buffers hold together, many of them in kept receive buffers. Another
    // client must still find buffers for its receives and be echoed byte for byte.
    constexpr std::size_t stuck_count = 100;
    if (!descriptors_for(2 * stuck_count + 64)) {
        return;
    }
    const auto served_stuck = echo_server(stuck_count + 10);
    InProcessServer& server = *served_stuck;
    const std::string payload = std::string(1 << 20, 'x');
    std::vector<UniqueFd> stuck;
    std::vector<std::size_t> sent(stuck_count, 0);
    for (std::size_t i = 0; i < stuck_count; ++i) {
        stuck.push_back(server.connect());
        // A small receive buffer: the replies fill it, and then the server's queue, soon.
        const int small = 16 * 1024;
        REQUIRE(::setsockopt(stuck.back().get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    }
    REQUIRE(run_until(*server.loop, [&] {
        for (std::size_t i = 0; i < stuck_count; ++i) {
            send_some(stuck[i].get(), payload, sent[i]);
            sent[i] %= payload.size();  // and again, for as long as the server reads
        }
        return server.server->stats().paused >= stuck_count;
    }, 4000, 1ms));
    const std::size_t held = static_cast<std::size_t>(server.server->stats().paused) * ConnectionLimits{}.high_watermark;
    REQUIRE(held > static_cast<std::size_t>(io_uring_buffer_ring_bytes));

    const UniqueFd client = server.connect();
    std::string message(256 * 1024, '\0');
    for (std::size_t i = 0; i < message.size(); ++i) {
        message[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
    }
    std::size_t message_sent = 0;
    std::string echoed;
    const bool served = run_until(*server.loop, [&] {
        send_some(client.get(), message, message_sent);
        echoed += read_available(client.get());
        return echoed.size() >= message.size();
    }, 4000, 1ms);
    CHECK(served);
    CHECK(echoed == message);
}

}  // namespace
}  // namespace echoplex::test
