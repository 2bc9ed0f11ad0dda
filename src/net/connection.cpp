// Connection implementation: the read path, the write path and backpressure.
#include "echoplex/net/connection.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <climits>
#include <ctime>

#include "echoplex/io/log.hpp"

namespace echoplex {

Connection::Connection(EventLoop& loop, UniqueFd socket, std::string peer, const ConnectionLimits& limits,
                       BlockPool& pool, ServerStats& stats, ConnectionOwner& owner, SocketIo& io)
    : loop_(loop),
      socket_(std::move(socket)),
      peer_(std::move(peer)),
      limits_(limits),
      stats_(stats),
      owner_(owner),
      io_(io),
      input_(pool),
      output_(pool),
      last_activity_(loop.now()) {}

Result<void> Connection::start() { return loop_.watch(fd(), *this, Interest::read); }

void Connection::on_readable() {
    if (lingering_) {
        discard_input();
        return;
    }
    if (!read_some()) {
        return;
    }
    // Write at once: only what the kernel does not take stays queued (and arms write interest).
    if (!output_.empty() && !flush()) {
        return;
    }
    update_interest();
}

void Connection::on_writable() {
    if (flush()) {
        update_interest();
    }
}

bool Connection::read_some() {
    std::size_t budget = limits_.read_budget;
    while (budget > 0 && output_.size() < limits_.high_watermark) {
        // One scatter read of up to the whole budget once the client is streaming (the last
        // read filled all it was offered): a large message costs a quarter of the system calls
        // of block-sized reads. Otherwise one block, so a small message takes one from the pool.
        std::array<iovec, max_read_blocks> space{};
        const std::size_t count = input_.prepare(space.data(), wide_reads_ ? space.size() : 1, budget);
        std::size_t want = 0;
        for (std::size_t i = 0; i < count; ++i) {
            want += space[i].iov_len;
        }
        const ssize_t n = io_.readv(fd(), space.data(), static_cast<int>(count));
        wide_reads_ = n > 0 && static_cast<std::size_t>(n) == want;
        if (n > 0) {
            input_.commit(static_cast<std::size_t>(n));
            stats_.bytes_in += static_cast<std::uint64_t>(n);
            budget -= static_cast<std::size_t>(n);
            last_activity_ = loop_.now();
            answer_chunk();
            if (static_cast<std::size_t>(n) < want) {
                break;  // short read: the socket is drained; level-triggering reports any more
            }
            continue;
        }
        input_.release_unused_tail();
        if (n == 0) {
            peer_done_ = true;
            break;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        }
        close(errno == ECONNRESET ? "reset by peer" : Error::from_errno("readv").message());
        return false;
    }
    input_.release_unused_tail();
    return true;
}

namespace {
// A chunk read at least this long moves to the write queue with its block; a shorter one is
// copied into the queue's tail. Moving short chunks would pin a 16 KiB block for each: a client
// sending a byte per readiness event would make a paused connection hold 16 KiB per queued byte
// (4 GiB at the default high watermark). With the copy, every block but the first, the last and
// one short block after a full one is at least half full: memory stays within about twice the
// queued bytes.
constexpr std::size_t move_threshold = BlockPool::block_size / 2;
}  // namespace

void Connection::queue_input() {
    if (input_.size() >= move_threshold) {
        output_.splice_from(input_);  // moves the blocks: no copy
        return;
    }
    while (!input_.empty()) {
        iovec piece{};
        input_.peek(&piece, 1, input_.size());
        output_.append({static_cast<const char*>(piece.iov_base), piece.iov_len});
        input_.consume(piece.iov_len);
    }
}

void Connection::answer_chunk() {
    if (limits_.reply == ReplyMode::echo) {
        queue_input();
        return;
    }
    // The book's reply: one "Echo=>DATA at TIME" per chunk read, TIME as time.ctime() prints it.
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    ::localtime_r(&now, &local);
    std::array<char, 32> stamp{};
    const std::size_t len = std::strftime(stamp.data(), stamp.size(), " at %a %b %e %H:%M:%S %Y", &local);
    output_.append("Echo=>");
    queue_input();
    output_.append(std::string_view(stamp.data(), len));
}

bool Connection::flush() {
    std::size_t budget = limits_.write_budget;
    while (!output_.empty() && budget > 0) {
        std::array<iovec, 64> iov;  // not zeroed: peek fills the `count` entries sendmsg reads
        const std::size_t count = output_.peek(iov.data(), iov.size(), budget);
        msghdr msg{};
        msg.msg_iov = iov.data();
        msg.msg_iovlen = count;
        // sendmsg rather than writev for MSG_NOSIGNAL: a vanished client must never raise SIGPIPE.
        const ssize_t n = io_.sendmsg(fd(), &msg, MSG_NOSIGNAL);
        if (n > 0) {
            output_.consume(static_cast<std::size_t>(n));
            stats_.bytes_out += static_cast<std::uint64_t>(n);
            budget -= std::min(budget, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        close(errno == EPIPE || errno == ECONNRESET ? "peer went away" : Error::from_errno("sendmsg").message());
        return false;
    }
    return true;
}

void Connection::update_interest() {
    if ((peer_done_ || draining_) && output_.empty()) {
        // Everything owed is delivered: send FIN. If the client has finished too, close now.
        // Otherwise linger: closing with unread input makes the kernel send RST, which can
        // destroy our last bytes in the client's receive queue. So read and discard until the
        // client's EOF (the server's drain deadline bounds the wait).
        io_.shutdown(fd(), SHUT_WR);
        if (peer_done_) {
            close(draining_ ? "drained" : "client closed");
        } else if (!lingering_) {
            lingering_ = true;
            if (auto changed = loop_.set_interest(fd(), Interest::read); !changed) {
                close(changed.error().message());
            }
        }
        return;
    }
    if (!paused_ && output_.size() >= limits_.high_watermark) {
        paused_ = true;
        ++stats_.paused;
    } else if (paused_ && output_.size() <= limits_.low_watermark) {
        paused_ = false;
    }
    const bool read = !paused_ && !peer_done_ && !draining_;
    const Interest want = (read ? Interest::read : Interest::none) | (output_.empty() ? Interest::none : Interest::write);
    if (auto changed = loop_.set_interest(fd(), want); !changed) {
        close(changed.error().message());
    }
}

void Connection::discard_input() {
    std::array<char, 16384> sink;
    for (std::size_t budget = limits_.read_budget; budget > 0;) {
        const ssize_t n = io_.recv(fd(), sink.data(), sink.size());
        if (n > 0) {
            budget -= std::min(budget, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        close("drained");  // EOF (or the client's reset): nothing more is owed either way
        return;
    }
}

void Connection::drain() {
    if (closed()) {
        return;
    }
    draining_ = true;
    input_.clear();
    update_interest();
}

void Connection::close(std::string_view reason) {
    if (closed()) {
        return;
    }
    loop_.unwatch(fd());
    input_.clear();
    output_.clear();
    owner_.connection_closed(*this, reason);  // while fd() still names this connection
    socket_.reset();
}

Connection::~Connection() {
    if (!closed()) {
        loop_.unwatch(fd());
    }
}

}  // namespace echoplex
