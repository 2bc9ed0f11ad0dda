// A Boost.Asio peer for the benchmark: the usual async echo, one io_context run by one thread.
// Each session reads with async_read_some into its own 64 KiB buffer and async_writes it all back.
#include <utility>  // first: Boost 1.74's asio/awaitable.hpp uses std::exchange without including it

#include <boost/asio.hpp>

#include <array>
#include <memory>

#include "common.hpp"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
public:
    explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

    void start() {
        socket_.set_option(tcp::no_delay(true));  // as echoplex does
        read();
    }

private:
    void read() {
        socket_.async_read_some(asio::buffer(buffer_), [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
            if (!ec) {
                self->write(n);
            }
        });
    }

    void write(std::size_t n) {
        asio::async_write(socket_, asio::buffer(buffer_, n), [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
            if (!ec) {
                self->read();
            }
        });
    }

    tcp::socket socket_;
    std::array<char, 65536> buffer_;  // left uninitialised: an idle session touches none of it
};

void accept(tcp::acceptor& acceptor) {
    acceptor.async_accept([&acceptor](boost::system::error_code ec, tcp::socket socket) {
        if (!ec) {
            std::make_shared<Session>(std::move(socket))->start();
        }
        accept(acceptor);
    });
}

}  // namespace

int main(int argc, char** argv) {
    asio::io_context io(1);
    // The shared helper binds and announces; Asio adopts the listening descriptor.
    tcp::acceptor acceptor(io, tcp::v4(), bench::listen_loopback(bench::parse_port(argc, argv), 0));
    accept(acceptor);
    io.run();
}
