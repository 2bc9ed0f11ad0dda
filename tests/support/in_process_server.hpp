// A TcpServer in the test's own process, on the backend under test, listening on free loopback
// ports: the loop is stepped by the test itself, so nothing waits on a clock.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "echoplex/io/event_loop.hpp"
#include "echoplex/net/tcp_server.hpp"
#include "support/doctest.hpp"
#include "support/net.hpp"

namespace echoplex::test {

struct InProcessServer {
    std::unique_ptr<EventLoop> loop;
    std::unique_ptr<TcpServer> server;
    std::vector<std::uint16_t> ports;  // one per endpoint, in order

    // Each endpoint's port is replaced by 0 (the kernel picks) and its hosts by 127.0.0.1.
    explicit InProcessServer(TcpServerOptions options) {
        auto created = EventLoop::create(backend_under_test());
        REQUIRE(created.has_value());
        loop = std::move(created).value();
        for (auto& endpoint : options.endpoints) {
            endpoint.hosts = {"127.0.0.1"};
            endpoint.port = 0;
        }
        auto made = TcpServer::create(*loop, std::move(options));
        if (!made) {
            FAIL(made.error().message());
        }
        server = std::move(made).value();
        for (const std::string& address : server->addresses()) {
            ports.push_back(static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
        }
    }
    ~InProcessServer() { server.reset(); }  // before the loop its connections unwatch from

    UniqueFd connect(std::size_t endpoint = 0) const { return connect_loopback(ports.at(endpoint)); }

    // Steps the loop, reading `fd`, until `done(received, closed)`; returns its last value.
    bool read_until(int fd, std::string& received, bool& closed,
                    const std::function<bool(const std::string&, bool)>& done, int max_steps = 2000) {
        return run_until(*loop, [&] {
            received += read_available(fd, &closed);
            return done(received, closed);
        }, max_steps, std::chrono::milliseconds(5));
    }
};

}  // namespace echoplex::test
