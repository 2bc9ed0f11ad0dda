// Fuzz target for a Connection's queues and write path. The input scripts the kernel's answers
// (reads of any size, would-block, EOF, reset or another error; partial, refused and failed
// sends) and the order of readiness callbacks; invariants are checked after every step, and a
// broken one aborts. Built for libFuzzer with -Dfuzz=true, and in every build as a test replaying
// tests/fuzz/corpus/. With io_uring chosen in the header, the connection runs over a UringStream
// whose completions the input scripts instead (completion_harness.cpp, scripted_ring.hpp); what
// follows describes the readiness mode.
//
// Input, read front to back (bytes past the end read as 0):
//   header  flags (bit 0: stamp reply; bits 1-2: backend, 3 = io_uring's completion mode; bit 3
//           with io_uring: its readiness under a ReactorStream instead, see run; 0x9 in bits 4-7:
//           the PROXY header parser instead, fed the rest as a stream, run_proxy_header), content seed,
//           then four big-endian u16: high watermark - 1, low watermark (mod high), read
//           budget - 1, write budget - 1
//   steps   one byte each: on_readable or on_writable (only when the loop's interest asks for
//           it, as the loop would), a turn of the real loop, drain() or close() (Harness::step),
//           each followed by the answers to the socket calls it causes
//   answers one byte per recv or sendmsg (ScriptedSocket), some followed by a size byte or u16
// When the input runs out, sends succeed in full until nothing is queued, then the client's EOF
// arrives: the connection must then have delivered everything it owed and closed.
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "echoplex/net/connection.hpp"
#include "echoplex/net/proxy_header.hpp"
#include "echoplex/net/reactor_stream.hpp"
#include "echoplex/services/echo.hpp"
#include "echoplex/services/stamp.hpp"
#include "fuzz_support.hpp"

namespace echoplex::fuzz {
namespace {

// The kernel as the connection sees it, answering from the input. Keeps what a real socket
// keeps: after EOF reads give 0, after a reset every call fails, and it checks the calls made.
class ScriptedSocket final : public SocketIo {
public:
    // The last fatal answer given: a reset or another error, on a read or a send.
    enum class Failure : std::uint8_t { none, recv_reset, recv_error, send_failed, send_error };

    ScriptedSocket(Input& input, const FuzzLimits& limits, std::uint8_t seed)
        : input_(input), limits_(limits), stream_(seed), reply_(stream_) {}

    int fd = -1;
    bool settling = false;   // the input is over: sends succeed in full, reads would block
    bool final_eof = false;  // ...and then the client's EOF arrives
    bool eof = false;        // EOF delivered
    bool reset = false;      // the connection was reset
    bool shut_wr = false;    // the connection sent its FIN
    Failure failure = Failure::none;
    std::uint64_t received = 0;  // bytes delivered before the FIN (owed back)
    std::uint64_t sent = 0;      // bytes the kernel took
    std::uint64_t received_in_step = 0;
    std::uint64_t sent_in_step = 0;
    std::vector<char> scatter_;  // readv's bytes before they are spread over the iovecs

    const Reply& reply() const noexcept { return reply_; }

    // A scatter read answers like one recv of the iovecs' total, spread over them in order.
    ssize_t readv(int socket, const iovec* iov, int count) override {
        check(count > 0, "readv asks for at least one buffer");
        std::size_t total = 0;
        for (int i = 0; i < count; ++i) {
            check(iov[i].iov_len > 0, "readv buffers are not empty");
            total += iov[i].iov_len;
        }
        scatter_.resize(total);
        const ssize_t n = recv(socket, scatter_.data(), total);
        std::size_t left = n > 0 ? static_cast<std::size_t>(n) : 0;
        const char* from = scatter_.data();
        for (int i = 0; i < count && left > 0; ++i) {
            const std::size_t len = std::min(left, iov[i].iov_len);
            std::memcpy(iov[i].iov_base, from, len);
            from += len;
            left -= len;
        }
        return n;
    }

    ssize_t recv(int socket, void* buffer, std::size_t length) override {
        check(socket == fd, "recv on the connection's own descriptor");
        check(length > 0, "recv asks for at least one byte");
        if (reset) {
            return fail(ECONNRESET);
        }
        if (eof) {
            return 0;
        }
        if (input_.exhausted() || settling) {
            if (final_eof) {
                eof = true;
                return 0;
            }
            return fail(EAGAIN);
        }
        const std::uint8_t answer = input_.byte() % 16;
        trace("  recv(%zu): answer %u\n", length, unsigned{answer});
        std::size_t n = length;
        switch (answer) {
        case 0: case 1: case 2: case 3: break;                             // fills the buffer
        case 4: case 5: n = 1 + input_.byte() % length; break;             // short
        case 6: n = 1 + input_.u16() % length; break;                      // any size
        case 7: n = length - input_.byte() % length; break;                // nearly full
        case 8: case 9: return fail(EAGAIN);
        case 10:
            reset = true;
            failure = Failure::recv_error;
            return fail(ETIMEDOUT);  // an error other than a reset
        case 11: return fail(EINTR);
        case 12: eof = true; return 0;
        case 13:
            reset = true;
            failure = Failure::recv_reset;
            return fail(ECONNRESET);
        default: n = 1; break;                                             // byte by byte
        }
        trace("    -> %zu bytes%s\n", n, shut_wr ? " (discarded)" : "");
        stream_.copy(offset_, static_cast<char*>(buffer), n);
        if (!shut_wr) {
            // Read before our FIN, so owed back: as is, or in the book's stamped form.
            owe(reply_, limits_.reply, offset_, n);
            received += n;
            received_in_step += n;
        }
        offset_ += n;
        return static_cast<ssize_t>(n);
    }

    ssize_t sendmsg(int socket, const msghdr* message, int flags) override {
        check(socket == fd, "sendmsg on the connection's own descriptor");
        check((flags & MSG_NOSIGNAL) != 0, "every send passes MSG_NOSIGNAL");
        check(!shut_wr, "no send after the connection's FIN");
        check(message->msg_iovlen > 0 && message->msg_iovlen <= IOV_MAX, "sendmsg with 1..IOV_MAX iovecs");
        std::size_t total = 0;
        for (std::size_t i = 0; i < message->msg_iovlen; ++i) {
            check(message->msg_iov[i].iov_len > 0, "no empty iovec");
            total += message->msg_iov[i].iov_len;
        }
        check(total <= limits_.write_budget, "one send stays within the write budget");
        if (reset) {
            failure = Failure::send_failed;
            return fail(EPIPE);
        }
        std::size_t n = total;
        if (!input_.exhausted() && !settling) {
            const std::uint8_t answer = input_.byte() % 16;
            trace("  sendmsg(%zu in %zu iovecs): answer %u\n", total, static_cast<std::size_t>(message->msg_iovlen), unsigned{answer});
            switch (answer) {
            case 0: case 1: case 2: case 3: case 4: break;                 // takes everything
            case 5: case 6: n = 1 + input_.byte() % total; break;          // a little
            case 7: n = 1 + input_.u16() % total; break;                   // any part
            case 8: n = total - input_.byte() % total; break;              // nearly all
            case 9: case 10: case 11: return fail(EAGAIN);                // buffer full
            case 12:
                reset = true;
                failure = Failure::send_error;
                return fail(ETIMEDOUT);
            case 13: return fail(EINTR);
            case 14:
                reset = true;
                failure = Failure::send_failed;
                return fail(EPIPE);
            default:
                reset = true;
                failure = Failure::send_failed;
                return fail(ECONNRESET);
            }
        }
        trace("    -> %zu bytes\n", n);
        std::size_t left = n;
        for (std::size_t i = 0; left > 0; ++i) {
            const std::size_t len = std::min(left, message->msg_iov[i].iov_len);
            check(reply_.take(static_cast<const char*>(message->msg_iov[i].iov_base), len),
                  "bytes sent are the bytes received, in order, once each (or their stamped reply)");
            left -= len;
        }
        sent += n;
        sent_in_step += n;
        return static_cast<ssize_t>(n);
    }

    int shutdown(int socket, int how) override {
        check(socket == fd, "shutdown on the connection's own descriptor");
        check(how == SHUT_WR, "shutdown closes only the sending side");
        check(reply_.owed() == 0, "FIN only after everything owed was sent");
        trace("  shutdown(SHUT_WR)\n");
        shut_wr = true;
        return 0;
    }

private:
    static ssize_t fail(int code) noexcept {
        errno = code;
        return -1;
    }

    Input& input_;
    const FuzzLimits& limits_;
    ClientStream stream_;
    std::uint64_t offset_ = 0;  // bytes delivered so far, owed or discarded
    Reply reply_;
};

class Owner final : public ConnectionOwner {
public:
    Owner(const EventLoop& loop, const ScriptedSocket& socket) : loop_(loop), socket_(socket) {}

    bool drained = false;        // drain() was called
    bool closing = false;        // close("fuzz") was called
    int closes = 0;

    void connection_closed(Connection& connection, std::string_view reason) override {
        trace("  closed: %.*s\n", static_cast<int>(reason.size()), reason.data());
        check(++closes == 1, "one close per connection");
        check(connection.fd() == socket_.fd, "the descriptor is still open when the owner is told");
        check(!loop_.watched(socket_.fd), "unwatched before the owner is told");
        if (closing) {
            check(reason == "fuzz", "an explicit close keeps its reason");
        } else if (socket_.failure == ScriptedSocket::Failure::send_failed) {
            check(reason == "peer went away", "a failed send closes as 'peer went away'");
        } else if (socket_.failure == ScriptedSocket::Failure::send_error) {
            check(reason.starts_with("sendmsg: "), "a send error closes naming the call");
        } else if (socket_.shut_wr && socket_.failure != ScriptedSocket::Failure::none) {
            check(reason == "drained", "after our FIN, a read error ends the drain");
        } else if (socket_.failure == ScriptedSocket::Failure::recv_reset) {
            check(reason == "reset by peer", "a reset on read closes as 'reset by peer'");
        } else if (socket_.failure == ScriptedSocket::Failure::recv_error) {
            check(reason.starts_with("readv: "), "a read error closes naming the call");
        } else {
            // A graceful close: everything owed went out and a FIN followed it.
            check(socket_.eof && socket_.shut_wr && socket_.reply().owed() == 0,
                  "a graceful close only after the client's EOF, every owed byte and our FIN");
            check(reason == (drained ? "drained" : "client closed"), "a graceful close says why");
        }
    }

private:
    const EventLoop& loop_;
    const ScriptedSocket& socket_;
};

// The state before a step, to bound what one step may change.
struct Before {
    std::size_t queued;
    bool paused;
    std::uint64_t pauses;
};

struct Harness {
    Input& input;
    FuzzLimits limits;
    std::unique_ptr<EventLoop> loop;
    UniqueFd client;  // the real peer: keeps the watched descriptor readable and writable
    BlockPool pool;
    ServerStats stats;
    ScriptedSocket socket;
    Owner owner;
    std::unique_ptr<ConnectionContext> context;  // before the connection, which refers to it
    std::unique_ptr<Connection> connection;

    Harness(Input& in, const FuzzLimits& l, BackendKind backend, std::uint8_t seed)
        : input(in), limits(l), loop(make_loop(backend)), socket(in, limits, seed), owner(*loop, socket) {
        int pair[2];
        check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) == 0, "socketpair");
        client.reset(pair[1]);
        check(::send(pair[1], "x", 1, MSG_NOSIGNAL) == 1, "a byte for the loop to see");
        socket.fd = pair[0];
        ProtocolPtr protocol;
        if (limits.reply == ReplyMode::stamp) {
            protocol = std::make_unique<services::Stamp>();
        } else {
            protocol = shared_protocol<services::Echo>();
        }
        context = std::make_unique<ConnectionContext>(ConnectionContext{*loop, limits, pool, stats, owner});
        connection = std::make_unique<Connection>(*context, std::make_unique<ScriptedReactorStream>(*loop, UniqueFd(pair[0]), ScriptedSocketCalls{&socket}),
                                                  std::move(protocol));
        check(connection->start().has_value(), "the connection starts");
    }
    Harness(const Harness&) = delete;
    Harness& operator=(const Harness&) = delete;
    ~Harness() { connection.reset(); }  // before the loop it unwatches from

    static std::unique_ptr<EventLoop> make_loop(BackendKind backend) {
        auto created = EventLoop::create(backend);
        check(created.has_value(), "an event loop");
        return std::move(created).value();
    }

    Interest interest() const { return loop->interest(socket.fd); }
    std::size_t reply_overhead() const { return limits.reply == ReplyMode::stamp ? 6 + 4 + 24 : 0; }

    Before before() const { return {connection->queued_bytes(), connection->reading_paused(), stats.paused}; }

    void check_invariants(const Before& was, std::size_t callbacks) {
        check(stats.bytes_in == socket.received, "bytes_in counts the bytes read and answered");
        check(stats.bytes_out == socket.sent, "bytes_out counts the bytes the kernel took");
        check(socket.received_in_step <= limits.largest_event_read() * callbacks, "reads stay within the read budget");
        check(socket.sent_in_step <= limits.write_budget * callbacks, "sends stay within the write budget");
        Connection& c = *connection;
        if (c.closed()) {
            check(owner.closes == 1, "the owner hears of the close");
            check(!loop->watched(socket.fd), "a closed connection is not watched");
            check(c.queued_bytes() == 0 && c.buffer_blocks() == 0, "a closed connection holds no buffer");
            return;
        }
        check(owner.closes == 0, "an open connection was not reported closed");
        check(loop->watched(socket.fd), "an open connection is watched");
        const std::size_t queued = c.queued_bytes();
        check(queued == socket.reply().owed(), "queued bytes are exactly the bytes owed and not yet sent");
        check(queued <= limits.high_watermark + limits.largest_event_read() + reply_overhead(),
              "queued bytes stay within the high watermark plus one event's read");
        // Memory follows the bytes: apart from the first block, the last, and one short block
        // after a full one, every block holds at least half a block of queued bytes.
        check(c.buffer_blocks() <= 3 + queued / (BlockPool::block_size / 2),
              "buffer blocks stay proportional to the queued bytes");
        check(queued > 0 || c.buffer_blocks() == 0, "an idle connection holds no buffer");
        const Interest want = interest();
        check(wants_write(want) == (queued > 0), "write interest exactly while output is queued");
        if (socket.shut_wr) {
            check(queued == 0, "FIN only with nothing queued");
            check(want == Interest::read, "after our FIN: read (and discard) until the client's EOF");
        } else {
            check(wants_read(want) == (!c.reading_paused() && !socket.eof && !owner.drained),
                  "read interest exactly while not paused, not at EOF and not draining");
        }
        if (!socket.eof && !owner.drained) {
            check(queued < limits.high_watermark || c.reading_paused(), "paused at the high watermark");
            check(queued > limits.low_watermark || !c.reading_paused(), "resumed at the low watermark");
        }
        const std::uint64_t pauses = stats.paused - was.pauses;
        check(pauses <= callbacks, "at most one pause per callback");
        check(pauses >= ((!was.paused && c.reading_paused()) ? 1U : 0U), "every pause is counted");
    }

    // One step: a callback, a turn of the loop, drain() or close().
    void step() {
        const Before was = before();
        socket.received_in_step = 0;
        socket.sent_in_step = 0;
        std::size_t callbacks = 1;
        const std::uint8_t op = input.byte() % 16;
        trace("step %u (interest %u, queued %zu, blocks %zu)\n", unsigned{op}, static_cast<unsigned>(interest()),
              connection->queued_bytes(), connection->buffer_blocks());
        switch (op) {
        case 0: case 1: case 2: case 3: case 4: case 5:
            if (wants_read(interest())) {  // the loop calls only what is asked for
                connection->on_readable();
            }
            break;
        case 6: case 7: case 8: case 9: case 10:
            if (wants_write(interest())) {
                connection->on_writable();
            }
            break;
        case 11: case 12: case 13: {
            // The real loop: the descriptor is always readable and writable, so this dispatches
            // by interest, through the backend.
            auto ran = loop->run_once(std::chrono::milliseconds(0));
            check(ran.has_value(), "the loop turns");
            callbacks = std::max<std::size_t>(1, ran.value());
            break;
        }
        case 14:
            if (input.byte() < 64) {
                owner.drained = true;
                connection->drain();
            }
            break;
        default:
            if (input.byte() < 16) {
                owner.closing = true;
                connection->close_now(CloseReason::error, "fuzz");
            }
            break;
        }
        check_invariants(was, callbacks);
    }

    // After the input: sends succeed until nothing is queued, then the client's EOF arrives.
    void settle() {
        trace("settle (queued %zu)\n", connection->queued_bytes());
        socket.settling = true;
        for (std::size_t bound = connection->queued_bytes() / limits.write_budget + 4;
             !connection->closed() && wants_write(interest()); --bound) {
            check(bound > 0, "queued output drains while sends succeed");
            const Before was = before();
            socket.received_in_step = socket.sent_in_step = 0;
            connection->on_writable();
            check_invariants(was, 1);
        }
        socket.final_eof = true;
        if (!connection->closed()) {
            check(wants_read(interest()), "with nothing queued, the connection reads");
            const Before was = before();
            socket.received_in_step = socket.sent_in_step = 0;
            connection->on_readable();
            check_invariants(was, 1);
        }
        check(connection->closed(), "the client's EOF with nothing owed closes the connection");
        if (!owner.closing && socket.failure == ScriptedSocket::Failure::none) {
            check(socket.reply().owed() == 0, "everything received was answered");
            check(limits.reply == ReplyMode::stamp || socket.sent == socket.received, "everything received was echoed");
        }
        // Closing again is harmless.
        connection->drain();
        connection->close_now(CloseReason::error, "again");
        check(owner.closes == 1, "drain and close after a close do nothing");
    }
};

// The PROXY header parser fed a stream one more byte at a time, as a connection would: a prefix
// found invalid stays invalid, a header is complete exactly when its last byte arrives and stays
// the same header however much follows, and every verdict keeps to the specification's sizes.
void run_proxy_header(Input& input) {
    std::string stream;
    while (!input.exhausted() && stream.size() < 1024) {
        stream += static_cast<char>(input.byte());
    }
    bool invalid_seen = false;
    std::optional<ProxyHeader> first;
    for (std::size_t n = 0; n <= stream.size(); ++n) {
        const ProxyParse p = parse_proxy_header(std::string_view(stream).substr(0, std::min(n, proxy_prefix_max)), n);
        if (p.status == ProxyParseStatus::invalid) {
            check(!first, "a complete header stays complete as more bytes arrive");
            check(!p.problem.empty(), "an invalid header says what is wrong");
            invalid_seen = true;
            continue;
        }
        check(!invalid_seen, "a prefix found invalid stays invalid as more bytes arrive");
        if (p.status == ProxyParseStatus::incomplete) {
            check(!first, "a complete header stays complete as more bytes arrive");
            continue;
        }
        const ProxyHeader& h = p.header;
        if (!first) {
            check(h.length == n, "a header is complete exactly when its last byte arrives");
            check(h.version == 1 ? h.length <= proxy_v1_max : h.version == 2 && h.length >= proxy_v2_fixed,
                  "a version 1 header is at most 107 bytes, a version 2 one at least 16");
            check(h.has_addresses == (!h.source.empty() && !h.destination.empty()),
                  "a header with addresses names both, one without names neither");
            first = h;
        }
        check(h.length == first->length && h.source == first->source && h.destination == first->destination &&
                  h.version == first->version,
              "bytes after the header never change it");
    }
}

void run(Input& input) {
    const std::uint8_t flags = input.byte();
    if ((flags & 0xf0U) == 0x90U) {
        trace("PROXY header parser\n");
        run_proxy_header(input);
        return;
    }
    const std::uint8_t seed = input.byte();
    FuzzLimits limits;
    limits.reply = (flags & 1U) != 0 ? ReplyMode::stamp : ReplyMode::echo;
    limits.high_watermark = std::size_t{input.u16()} + 1;
    limits.low_watermark = input.u16() % limits.high_watermark;
    limits.read_budget = std::size_t{input.u16()} + 1;
    limits.write_budget = std::size_t{input.u16()} + 1;
    // Bits 1-2 choose the backend: 0 epoll, 1 poll, 2 select (the readiness backends compiled in,
    // in that order, modulo their number), 3 io_uring. io_uring is the completion mode (a
    // UringStream whose completions the input scripts: completion_harness.cpp); with bit 3 set
    // too, a ReactorStream over the real io_uring backend's readiness, where it is compiled in.
    const unsigned choice = (flags >> 1U) & 3U;
    const auto backends = available_backends();
    const bool real_uring = choice == 3 && (flags & 8U) != 0 &&
                            std::find(backends.begin(), backends.end(), BackendKind::io_uring) != backends.end();
    if (choice == 3 && !real_uring) {
        trace("limits: %s high %zu low %zu read %zu write %zu, io_uring (scripted completions)\n",
              limits.reply == ReplyMode::stamp ? "stamp" : "echo", limits.high_watermark, limits.low_watermark,
              limits.read_budget, limits.write_budget);
        run_completions(input, limits, seed);
        return;
    }
    std::vector<BackendKind> readiness;
    std::copy_if(backends.begin(), backends.end(), std::back_inserter(readiness),
                 [](BackendKind kind) { return kind != BackendKind::io_uring; });
    const BackendKind backend = real_uring ? BackendKind::io_uring : readiness[choice % readiness.size()];

    trace("limits: %s high %zu low %zu read %zu write %zu, %.*s\n", limits.reply == ReplyMode::stamp ? "stamp" : "echo",
          limits.high_watermark, limits.low_watermark, limits.read_budget, limits.write_budget,
          static_cast<int>(backend_name(backend).size()), backend_name(backend).data());
    Harness h(input, limits, backend, seed);
    while (!input.exhausted() && !h.connection->closed()) {
        h.step();
    }
    h.settle();
}

}  // namespace
}  // namespace echoplex::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    echoplex::fuzz::Input input(data, size);
    echoplex::fuzz::run(input);
    return 0;
}
