// The fuzz target's completion mode: a Connection over a UringStream, over a real EventLoop, over
// a ScriptedRing whose completions the input chooses (scripted_ring.hpp). The stream is wrapped
// in an ObservedStream that passes every call and event through and checks each one: what read()
// hands over, when events come, FIN and the close. Invariants are checked after every step.
//
// Steps, one byte each (the ring's wait then reads the answers it needs, see ScriptedRing):
//   0-5 a turn of the loop collecting one completion; 6-9 two to five (one more byte);
//   10-11 a turn collecting none (posted events and deferred work only); 15 a turn collecting
//   as many as are in flight; 12 drain() if the next byte is below 64; 13 close_now() if it is
//   below 32; 14, below 8: the connection destroyed with whatever is in flight (as a server's
//   teardown does), which ends the input.
// When the input runs out, sends complete in full until nothing is queued and the loop is quiet,
// then receives complete with EOF: the connection must then have delivered everything it owed
// and closed, and on_closed must have waited for every operation submitted.
#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <memory>
#include <string_view>

#include "echoplex/net/connection.hpp"
#include "echoplex/net/uring_stream.hpp"
#include "echoplex/services/echo.hpp"
#include "echoplex/services/stamp.hpp"
#include "fuzz_support.hpp"
#include "scripted_ring.hpp"

namespace echoplex::fuzz {
namespace {

// Stands in a stream's slot of the loop's handler table once the stream has gone: nothing meant
// for the stream (a late completion, a posted event) may reach it.
class Sentinel final : public CompletionHandler {
public:
    void on_completion(OpCode op, const CompletionInfo& info) override {
        (void)op;
        (void)info;
        check(false, "nothing meant for a handler that has gone reaches the next one in its slot");
    }
};

// True if the `n` bytes of `queue` from `from` on are the client's stream at `offset`.
bool holds_stream(const ByteQueue& queue, std::size_t from, const ClientStream& stream, std::uint64_t offset,
                  std::size_t n) {
    std::array<iovec, 64> pieces{};
    const std::size_t count = queue.peek(pieces.data(), pieces.size(), queue.size());
    std::size_t skip = from;
    for (std::size_t i = 0; i < count && n > 0; ++i) {
        const auto* bytes = static_cast<const char*>(pieces[i].iov_base);
        std::size_t len = pieces[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        bytes += skip;
        len -= skip;
        skip = 0;
        len = std::min(len, n);
        if (!stream.equal(offset, bytes, len)) {
            return false;
        }
        offset += len;
        n -= len;
    }
    return true;  // a queue of more than 64 pieces is checked as far as they go
}

// A UringStream as the connection uses it, with every call and event checked on the way.
class ObservedStream final : public Stream, private StreamEvents {
public:
    ObservedStream(std::unique_ptr<UringStream> inner, EventLoop& loop, ScriptedRing& ring, RingClient& client,
                   ReplyMode reply, Sentinel& sentinel)
        : inner_(std::move(inner)), loop_(loop), ring_(ring), client_(client), reply_(reply), sentinel_(sentinel) {}

    Interest interest() const noexcept override { return want_; }
    std::uint64_t handed() const noexcept { return handed_; }  // bytes read() handed over
    // Bytes received and neither handed over nor discarded: what the stream holds for its owner.
    std::uint64_t held() const noexcept { return ring_.bytes_delivered() - handed_ - dropped_; }
    std::uint64_t handed_in_step = 0;
    bool saw_end() const noexcept { return saw_end_; }  // read() or discard() reported the end
    bool shut_wr() const noexcept { return shut_wr_; }
    bool closed() const noexcept { return closed_; }  // on_closed ran

    int fd() const noexcept override { return inner_->fd(); }

    Result<void> open(StreamEvents& events) override {
        events_ = &events;
        return inner_->open(*this);
    }

    Result<void> set_interest(Interest want) override {
        check(!close_called_, "no interest change after close()");
        want_ = want;
        return inner_->set_interest(want);
    }

    IoResult read(ByteQueue& into, std::size_t budget) override {
        check(!close_called_ && !shut_wr_, "no read after close() or our FIN (a lingering connection discards)");
        const std::size_t before = into.size();
        const IoResult got = inner_->read(into, budget);
        const std::size_t n = into.size() - before;
        check(n == got.bytes, "read() reports the bytes it appended");
        check(n <= budget, "read() stays within its budget");
        check(handed_ + n <= client_.delivered, "read() hands over only bytes that were received");
        check(holds_stream(into, before, client_.stream, handed_, n), "read() hands over the bytes received, in order, once each");
        if (n > 0) {
            owe(client_.reply, reply_, handed_, n);
            handed_ += n;
            handed_in_step += n;
        }
        saw_end_ = saw_end_ || got.status == IoStatus::end;
        return got;
    }

    IoResult write(ByteQueue& from, std::size_t budget) override {
        check(!close_called_, "no write after close()");
        check(!shut_wr_ || from.empty(), "nothing to write after our FIN");
        const IoResult put = inner_->write(from, budget);
        check(!shut_wr_ || !ring_.send_in_flight(), "no send after our FIN");
        return put;
    }

    bool acts_immediately() const noexcept override { return inner_->acts_immediately(); }

    IoResult discard(std::size_t budget) override {
        check(!close_called_, "no discard after close()");
        const IoResult got = inner_->discard(budget);
        dropped_ = ring_.bytes_delivered() - handed_;  // what it held is gone
        saw_end_ = saw_end_ || got.status == IoStatus::end;
        return got;
    }

    void shutdown_write() noexcept override {
        check(!close_called_ && !shut_wr_, "one FIN, before close()");
        check(client_.reply.owed() == 0, "FIN only after everything owed was sent");
        check(!ring_.send_in_flight(), "no send in flight for the FIN to overtake");
        trace("  shutdown(SHUT_WR)\n");
        shut_wr_ = true;
        inner_->shutdown_write();
    }

    void close() noexcept override {
        close_called_ = true;
        inner_->close();
    }

    std::size_t in_flight() const noexcept override { return inner_->in_flight(); }

private:
    void on_readable() override {
        check(!close_called_, "no on_readable after close()");
        check(wants_read(want_), "on_readable only while input is wanted");
        events_->on_readable();
    }

    void on_writable() override {
        check(!close_called_, "no on_writable after close()");
        check(wants_write(want_) || client_.send_failed || client_.send_error,
              "on_writable only while output is wanted, or to report a failed send");
        events_->on_writable();
    }

    void on_closed() override {
        check(close_called_ && !closed_, "on_closed once, after close()");
        check(ring_.all_completed(), "on_closed only once every operation submitted has completed");
        check(inner_->in_flight() == 0, "nothing in flight at on_closed");
        closed_ = true;
        ring_.stream_closed();
        events_->on_closed();
        // The stream's slot in the loop's table is free now: whatever is still posted for the
        // stream must not reach the next handler given that slot.
        (void)loop_.add_completion_handler(sentinel_);
    }

    std::unique_ptr<UringStream> inner_;
    EventLoop& loop_;
    ScriptedRing& ring_;
    RingClient& client_;
    ReplyMode reply_;
    Sentinel& sentinel_;
    StreamEvents* events_ = nullptr;
    Interest want_ = Interest::read;  // open() asks for input
    std::uint64_t handed_ = 0;
    std::uint64_t dropped_ = 0;
    bool saw_end_ = false;
    bool shut_wr_ = false;
    bool close_called_ = false;
    bool closed_ = false;
};

class RingOwner final : public ConnectionOwner {
public:
    RingOwner(const RingClient& client, const ObservedStream*& stream, const int& fd)
        : client_(client), stream_(stream), fd_(fd) {}

    bool drained = false;  // drain() was called
    bool closing = false;  // close_now("fuzz") was called
    int closes = 0;

    void connection_closed(Connection& connection, std::string_view reason) override {
        trace("  closed: %.*s\n", static_cast<int>(reason.size()), reason.data());
        check(++closes == 1, "one close per connection");
        check(connection.fd() == fd_, "the descriptor is still open when the owner is told");
        const ObservedStream& stream = *stream_;
        if (closing) {
            check(reason == "fuzz", "an explicit close keeps its reason");
        } else if (reason == "peer went away") {
            check(client_.send_failed, "'peer went away' only after a send failed with EPIPE or ECONNRESET");
        } else if (reason.starts_with("sendmsg: ")) {
            check(client_.send_error, "a send error closes naming the call");
        } else if (reason == "reset by peer") {
            check(client_.recv_reset && !stream.shut_wr(), "'reset by peer' only after a receive was reset");
        } else if (reason.starts_with("readv: ")) {
            check(client_.recv_error && !stream.shut_wr(), "a receive error closes naming the call");
        } else if (stream.shut_wr() && client_.failed() && drained) {
            check(reason == "drained", "after our FIN, a receive's error ends the drain");
        } else {
            // A graceful close: everything owed went out and a FIN followed it.
            check(stream.saw_end() && stream.shut_wr() && client_.reply.owed() == 0,
                  "a graceful close only after the client's EOF, every owed byte and our FIN");
            check(reason == (drained ? "drained" : "client closed"), "a graceful close says why");
        }
    }

private:
    const RingClient& client_;
    const ObservedStream*& stream_;
    const int& fd_;
};

struct Before {
    std::size_t queued;
    bool paused;
    std::uint64_t pauses;
};

// The most completions one scripted turn collects (step 6-9).
constexpr std::size_t max_batch = 5;

struct CompletionHarness {
    Input& input;
    FuzzLimits limits;
    RingClient client;
    ScriptedRing* ring;  // owned by the loop
    std::unique_ptr<EventLoop> loop;
    UniqueFd peer;  // the socket's other end: the stream's is real, so that shutdown(2) works
    int fd = -1;
    BlockPool pool;
    ServerStats stats;
    Sentinel sentinel;
    const ObservedStream* observed = nullptr;
    RingOwner owner;
    ObservedStream* stream = nullptr;  // owned by the connection
    std::unique_ptr<ConnectionContext> context;  // before the connection, which refers to it
    std::unique_ptr<Connection> connection;
    bool torn_down = false;

    CompletionHarness(Input& in, const FuzzLimits& l, std::uint8_t seed)
        : input(in), limits(l), client(seed), ring(new ScriptedRing(in, client, limits.write_budget)),
          loop(std::make_unique<EventLoop>(std::unique_ptr<Backend>(ring))), owner(client, observed, fd) {
        check(loop->completion_ring() == ring, "the loop submits through the scripted ring");
        int pair[2];
        check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) == 0, "socketpair");
        peer.reset(pair[1]);
        fd = pair[0];
        ring->set_socket(fd);
        ProtocolPtr protocol;
        if (limits.reply == ReplyMode::stamp) {
            protocol = std::make_unique<services::Stamp>();
        } else {
            protocol = shared_protocol<services::Echo>();
        }
        auto observing = std::make_unique<ObservedStream>(std::make_unique<UringStream>(*loop, UniqueFd(fd), pool), *loop,
                                                          *ring, client, limits.reply, sentinel);
        stream = observing.get();
        observed = stream;
        context = std::make_unique<ConnectionContext>(ConnectionContext{*loop, limits, pool, stats, owner});
        connection = std::make_unique<Connection>(*context, std::move(observing), std::move(protocol));
        check(connection->start().has_value(), "the connection starts");
    }
    CompletionHarness(const CompletionHarness&) = delete;
    CompletionHarness& operator=(const CompletionHarness&) = delete;
    ~CompletionHarness() { connection.reset(); }  // before the loop its stream is registered with

    std::size_t reply_overhead() const { return limits.reply == ReplyMode::stamp ? 6 + 4 + 24 : 0; }
    bool done() const { return torn_down || connection->state() == ConnectionState::closed; }
    Before before() const { return {connection->queued_bytes(), connection->reading_paused(), stats.paused}; }

    std::size_t turn(std::size_t batch) {
        ring->set_batch(batch);
        auto ran = loop->run_once(std::chrono::milliseconds(0));
        check(ran.has_value(), "the loop turns");
        return ran.value();
    }

    void check_invariants(const Before& was, std::size_t callbacks) {
        check(stats.bytes_in == stream->handed(), "bytes_in counts the bytes read and answered");
        check(stream->handed_in_step <= limits.largest_event_read() * callbacks, "reads stay within the read budget");
        Connection& c = *connection;
        if (c.state() == ConnectionState::closed) {
            check(owner.closes == 1, "the owner hears of the close");
            check(ring->outstanding() == 0, "nothing is in flight once the close completed");
            check(c.queued_bytes() == 0 && c.buffer_blocks() == 0, "a closed connection holds no buffer");
            check(::fcntl(fd, F_GETFD) == -1 && errno == EBADF, "the socket is closed once its close completed");
            check(stats.bytes_out <= client.sent, "bytes_out counts no more than the kernel took");
            return;
        }
        check(owner.closes == 0, "the owner hears of a close only once it completed");
        if (c.closed()) {
            check(stats.bytes_out <= client.sent, "bytes_out counts no more than the kernel took");
            return;  // closing: waiting for what is in flight
        }
        check(stats.bytes_out == client.sent, "bytes_out counts the bytes the kernel took");
        const std::size_t queued = c.queued_bytes();
        check(queued == client.reply.owed(), "queued bytes are exactly the bytes owed and not yet sent");
        check(queued <= limits.high_watermark + limits.largest_event_read() + reply_overhead(),
              "queued bytes stay within the high watermark plus one event's read");
        check(c.buffer_blocks() <= 3 + queued / (BlockPool::block_size / 2),
              "buffer blocks stay proportional to the queued bytes");
        check(queued > 0 || c.buffer_blocks() == 0, "an idle connection holds no buffer");
        // What the stream holds for the connection is bounded too, whatever the budgets: what a
        // receive brings before its cancel lands (two batches) and one single-shot receive.
        check(stream->held() <= (2 * max_batch + 1) * ScriptedRing::buffer_size,
              "received bytes the connection has not read stay within a few receive buffers");
        const Interest want = stream->interest();
        check(wants_write(want) == (queued > 0), "write interest exactly while output is queued");
        if (stream->shut_wr()) {
            check(queued == 0, "FIN only with nothing queued");
            check(want == Interest::read, "after our FIN: read (and discard) until the client's EOF");
        } else {
            check(wants_read(want) == (!c.reading_paused() && !stream->saw_end() && !owner.drained),
                  "read interest exactly while not paused, not at EOF and not draining");
        }
        if (!stream->saw_end() && !owner.drained) {
            check(queued < limits.high_watermark || c.reading_paused(), "paused at the high watermark");
            check(queued > limits.low_watermark || !c.reading_paused(), "resumed at the low watermark");
        }
        const std::uint64_t pauses = stats.paused - was.pauses;
        check(pauses <= callbacks, "at most one pause per callback");
        check(pauses >= ((!was.paused && c.reading_paused()) ? 1U : 0U), "every pause is counted");
    }

    // The connection destroyed with whatever is in flight, as a server's destructor does: the
    // stream must stop the kernel first, and every completion left is dropped by the loop.
    void tear_down() {
        trace("teardown (in flight %zu)\n", ring->outstanding());
        const bool open = connection->state() != ConnectionState::closed;
        connection.reset();
        stream = nullptr;
        observed = nullptr;
        torn_down = true;
        check(ring->kept_buffers() == 0, "a destroyed connection gives back every receive buffer its queues kept");
        ring->stream_destroyed();
        check(ring->all_stopped(), "a stream destroyed with operations in flight stops them first (cancel_now)");
        check(::fcntl(fd, F_GETFD) == -1 && errno == EBADF, "a destroyed stream closes its socket");
        if (open) {
            (void)loop->add_completion_handler(sentinel);  // takes the stream's slot
        }
        // Each completion left is finished undelivered (ScriptedRing::finished checks), and
        // whatever was posted for the stream is dropped (the sentinel in its slot checks).
        ring->phase = ScriptedRing::Phase::settling;
        for (int i = 0; i < 4 && ring->outstanding() > 0; ++i) {
            (void)turn(0);
        }
        check(ring->outstanding() == 0, "what a destroyed stream had in flight completes");
        (void)turn(0);
        ring->check_finished();
    }

    void step() {
        const Before was = before();
        stream->handed_in_step = 0;
        std::size_t callbacks = 1;
        const std::uint8_t op = input.byte() % 16;
        trace("step %u (interest %u, queued %zu, blocks %zu, in flight %zu)\n", unsigned{op},
              static_cast<unsigned>(stream->interest()), connection->queued_bytes(), connection->buffer_blocks(),
              ring->outstanding());
        switch (op) {
        case 0: case 1: case 2: case 3: case 4: case 5:
            callbacks = std::max<std::size_t>(1, turn(1));
            break;
        case 6: case 7: case 8: case 9:
            callbacks = std::max<std::size_t>(1, turn(2 + input.byte() % (max_batch - 1)));
            break;
        case 10: case 11:
            callbacks = std::max<std::size_t>(1, turn(0));
            break;
        case 12:
            if (input.byte() < 64) {
                owner.drained = owner.drained || !connection->closed();
                connection->drain();
            }
            break;
        case 13:
            if (input.byte() < 32 && !connection->closed()) {
                owner.closing = true;
                connection->close_now(CloseReason::error, "fuzz");
            }
            break;
        case 14:
            if (input.byte() < 8) {
                tear_down();
                return;
            }
            break;
        default:
            callbacks = std::max<std::size_t>(1, turn(ring->outstanding()));
            break;
        }
        check_invariants(was, callbacks);
    }

    // Turns of the loop until one runs nothing; each may take a write budget, a read budget
    // and the bytes of a stamp. Spinning without end fails the bound.
    void quiesce(std::uint64_t held) {
        const std::uint64_t unit = std::min(limits.read_budget, limits.write_budget);
        const std::uint64_t owed = connection->queued_bytes() + held * (1 + reply_overhead());
        for (std::uint64_t bound = 64 + 4 * (owed / unit + held / unit);; --bound) {
            check(bound > 0, "the loop goes quiet once sends complete and nothing arrives");
            const Before was = before();
            stream->handed_in_step = 0;
            const std::size_t ran = turn(0);
            check_invariants(was, std::max<std::size_t>(1, ran));
            if (ran == 0 && ring->outstanding() <= (ring->receive_armed() ? 1U : 0U)) {
                return;
            }
        }
    }

    // After the input: sends complete in full until nothing is queued, then the client's EOF.
    void settle() {
        trace("settle (queued %zu, in flight %zu)\n", connection->queued_bytes(), ring->outstanding());
        // At a budget of a byte, the bytes a stream may hold would take a million turns: the
        // budgets grow to the defaults (the connection reads its limits where they are).
        const ConnectionLimits defaults;
        limits.read_budget = std::max(limits.read_budget, defaults.read_budget);
        limits.write_budget = std::max(limits.write_budget, defaults.write_budget);
        ring->set_write_budget(limits.write_budget);
        ring->phase = ScriptedRing::Phase::settling;
        quiesce(client.delivered - stream->handed());
        if (!done()) {
            check(connection->queued_bytes() == 0 || connection->closed(), "queued output drains while sends succeed");
        }
        ring->phase = ScriptedRing::Phase::final_eof;
        quiesce(client.delivered - stream->handed());
        check(connection->state() == ConnectionState::closed, "the client's EOF with nothing owed closes the connection");
        if (!owner.closing && !client.failed()) {
            check(client.reply.owed() == 0, "everything received was answered");
            check(limits.reply == ReplyMode::stamp || client.sent == stream->handed(), "everything received was echoed");
            check(owner.drained || stream->handed() == client.delivered, "every byte received reached the connection");
        }
        // Closing again is harmless, and submits nothing.
        connection->drain();
        connection->close_now(CloseReason::error, "again");
        check(owner.closes == 1, "drain and close after a close do nothing");
        check(turn(0) == 0, "a closed connection hears nothing more");
        ring->check_finished();
        check(ring->outstanding() == 0, "nothing is left in flight");
        check(ring->kept_buffers() == 0, "a closed connection gives back every receive buffer its queues kept");
    }
};

}  // namespace

void run_completions(Input& input, const FuzzLimits& given, std::uint8_t seed) {
    FuzzLimits limits = given;
    // Never reached while fuzzing: a step takes microseconds, and a slow one must not close it.
    limits.linger_timeout = std::chrono::hours(1);
    CompletionHarness h(input, limits, seed);
    while (!input.exhausted() && !h.done()) {
        h.step();
    }
    if (!h.torn_down) {
        h.settle();
    }
}

}  // namespace echoplex::fuzz
