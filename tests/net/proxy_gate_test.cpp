// The PROXY protocol in front of a server's protocols, on every backend: a header arriving a
// byte at a time is consumed and never answered, the client it names becomes the connection's
// peer, nothing is answered before it is complete, and a bad, missing or late one closes the
// connection, counted once. Without the option nothing changes.
#include "echoplex/net/proxy_gate.hpp"

#include <memory>
#include <string>
#include <vector>

#include "echoplex/net/tcp_server.hpp"
#include "echoplex/services/services.hpp"
#include "support/doctest.hpp"
#include "support/in_process_server.hpp"

namespace echoplex::test {
namespace {

using namespace std::chrono_literals;

// Echoes, and notes the peer its connection has when it opens.
struct PeerEcho final : Protocol {
    std::vector<std::string>* peers;
    explicit PeerEcho(std::vector<std::string>& seen) : peers(&seen) {}
    void on_open(Session& session) override { peers->push_back(session.peer()); }
    void on_input(Session& session, ByteQueue& input) override { session.send(input); }
};

struct Gated {
    std::vector<std::string> peers;
    std::unique_ptr<InProcessServer> server;

    explicit Gated(std::chrono::milliseconds deadline = 5000ms, bool proxy = true, std::string service = {}) {
        TcpServerOptions options;
        ProtocolFactory factory = [this] { return std::make_unique<PeerEcho>(peers); };
        if (!service.empty()) {
            factory = services::find(service)->factory;
        }
        options.endpoints.push_back(Endpoint{{"127.0.0.1"}, 0, "test", factory});
        options.proxy_protocol = proxy;
        options.proxy_deadline = deadline;
        server = std::make_unique<InProcessServer>(std::move(options));
    }
    EventLoop& loop() { return *server->loop; }
    ServerStats stats() { return server->server->stats(); }

    // Sends `bytes` one at a time, letting the server run a few iterations after each.
    void send_bytewise(int fd, const std::string& bytes) {
        for (const char c : bytes) {
            write_all(fd, std::string(1, c));
            for (int i = 0; i < 3; ++i) {
                REQUIRE(loop().run_once(1ms));
            }
        }
    }
    // Reads until `want` bytes came back.
    std::string read_back(int fd, std::size_t want) {
        std::string got;
        CHECK(run_until(loop(), [&] {
            got += read_available(fd);
            return got.size() >= want;
        }));
        return got;
    }
    // Runs until the server closed `fd`; returns what came before the close.
    std::string read_to_close(int fd) {
        std::string got;
        bool closed = false;
        CHECK(run_until(loop(), [&] {
            got += read_available(fd, &closed);
            return closed;
        }, 2000, 5ms));
        return got;
    }
};

std::string v2_tcp4_with_tlvs() {
    std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
    const unsigned char rest[] = {0x21, 0x11, 0x00, 0x14,                    // PROXY, TCP4, 20 bytes
                                  192,  0,    2,    1,    198, 51, 100, 7,   // addresses
                                  0xdc, 0x04, 0x01, 0xbb,                    // ports 56324, 443
                                  0x01, 0x00, 0x02, 'h',  '2', 0x04, 0x00, 0x00};  // ALPN "h2", NOOP
    h.append(reinterpret_cast<const char*>(rest), sizeof rest);
    return h;
}

TEST_CASE("a version 1 header arriving a byte at a time is consumed, never echoed, and names the peer") {
    Gated gated;
    const UniqueFd client = gated.server->connect();
    gated.send_bytewise(client.get(), "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r");
    CHECK(gated.peers.empty());  // nothing behind the gate opens before the header is complete
    gated.send_bytewise(client.get(), "\n");
    CHECK(gated.peers.size() == 1);
    write_all(client.get(), "hello\n");
    CHECK(gated.read_back(client.get(), 6) == "hello\n");
    REQUIRE(gated.peers.size() == 1);
    CHECK(gated.peers[0] == "192.0.2.1:56324");
    CHECK(gated.stats().proxy_rejected == 0);
}

TEST_CASE("a version 2 header with TLVs, a byte at a time, and the bytes sent with it, are handled in order") {
    Gated gated;
    const UniqueFd client = gated.server->connect();
    const std::string header = v2_tcp4_with_tlvs();
    gated.send_bytewise(client.get(), header.substr(0, header.size() - 1));
    CHECK(gated.peers.empty());
    write_all(client.get(), header.substr(header.size() - 1) + "same packet");  // the header's end and data at once
    CHECK(gated.read_back(client.get(), 11) == "same packet");
    REQUIRE(gated.peers.size() == 1);
    CHECK(gated.peers[0] == "192.0.2.1:56324");
}

TEST_CASE("LOCAL and UNKNOWN headers (health checks) keep the connection's own address") {
    Gated gated;
    std::string local("\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", 16);
    for (const std::string& header : {local, std::string("PROXY UNKNOWN\r\n")}) {
        const UniqueFd client = gated.server->connect();
        write_all(client.get(), header + "ping");
        CHECK(gated.read_back(client.get(), 4) == "ping");
    }
    REQUIRE(gated.peers.size() == 2);
    for (const std::string& peer : gated.peers) {
        CHECK(peer.rfind("127.0.0.1:", 0) == 0);
    }
}

TEST_CASE("garbage, an oversized version 1 line and an end before the header close the connection, each counted once") {
    Gated gated;
    const std::vector<std::string> bad = {"GET / HTTP/1.0\r\n\r\n", "PROXY UNKNOWN " + std::string(200, 'x'),
                                          "PROXY TCP4 300.0.0.1 198.51.100.7 1 2\r\nhello"};
    std::uint64_t expected = 0;
    for (const std::string& bytes : bad) {
        const UniqueFd client = gated.server->connect();
        write_all(client.get(), bytes);
        CHECK(gated.read_to_close(client.get()).empty());  // nothing echoed, not even the bytes after
        CHECK(gated.stats().proxy_rejected == ++expected);
    }
    const UniqueFd ended = gated.server->connect();
    write_all(ended.get(), "PROXY TCP4 192.0.2.1");
    REQUIRE(::shutdown(ended.get(), SHUT_WR) == 0);
    CHECK(gated.read_to_close(ended.get()).empty());
    CHECK(gated.stats().proxy_rejected == expected + 1);
    CHECK(gated.peers.empty());
}

TEST_CASE("a header not complete within the deadline closes the connection; a complete one then silence stays open") {
    Gated gated(150ms);
    const UniqueFd complete = gated.server->connect();
    write_all(complete.get(), "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
    const UniqueFd partial = gated.server->connect();
    write_all(partial.get(), "PROXY TCP4 192.0.2.1 ");
    const UniqueFd silent = gated.server->connect();
    CHECK(gated.read_to_close(partial.get()).empty());
    CHECK(gated.read_to_close(silent.get()).empty());
    CHECK(gated.stats().proxy_rejected == 2);
    // The complete one outlived both deadlines and still echoes.
    write_all(complete.get(), "still here");
    CHECK(gated.read_back(complete.get(), 10) == "still here");
    CHECK(gated.stats().open == 1);
}

TEST_CASE("a service that speaks first (daytime) waits for the header") {
    Gated gated(5000ms, true, "daytime");
    const UniqueFd client = gated.server->connect();
    write_all(client.get(), "PROXY TCP6 2001:db8::1 ::1 1 2");
    for (int i = 0; i < 5; ++i) {
        REQUIRE(gated.loop().run_once(1ms));
    }
    CHECK(read_available(client.get()).empty());
    write_all(client.get(), "\r\n");
    const std::string answer = gated.read_to_close(client.get());
    CHECK(answer.size() > 10);
    CHECK(answer.find("PROXY") == std::string::npos);
}

TEST_CASE("without the option a PROXY header is just bytes") {
    Gated gated(5000ms, false);
    const UniqueFd client = gated.server->connect();
    const std::string line = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    write_all(client.get(), line);
    CHECK(gated.read_back(client.get(), line.size()) == line);
    REQUIRE(gated.peers.size() == 1);
    CHECK(gated.peers[0].rfind("127.0.0.1:", 0) == 0);
}

}  // namespace
}  // namespace echoplex::test
