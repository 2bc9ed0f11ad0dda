// make_socket_stream: which Stream a connected socket gets, decided once for every owner.
#include "echoplex/net/stream.hpp"

#include "echoplex/net/reactor_stream.hpp"
#include "echoplex/net/uring_stream.hpp"

namespace echoplex {

std::unique_ptr<Stream> make_socket_stream(EventLoop& loop, UniqueFd socket, BlockPool& pool) {
    if (loop.completion_ring() != nullptr) {
        return std::make_unique<UringStream>(loop, std::move(socket), pool);
    }
    return std::make_unique<ReactorStream>(loop, std::move(socket));
}

}  // namespace echoplex
