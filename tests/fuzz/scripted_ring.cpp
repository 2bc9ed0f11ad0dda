// ScriptedRing implementation.
#include "scripted_ring.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

namespace echoplex::fuzz {

int ScriptedRing::fd_limit() const noexcept { return INT_MAX; }

Result<void> ScriptedRing::modify(int fd, Interest old_interest, Interest new_interest) {
    (void)fd;
    (void)old_interest;
    (void)new_interest;
    check(false, "a completion stream asks for no readiness");
    return {};
}

bool ScriptedRing::receive_armed() const noexcept {
    return std::any_of(ops_.begin(), ops_.end(), [](const Op& op) { return op.kind == Kind::receive; });
}

bool ScriptedRing::send_in_flight() const noexcept {
    return std::any_of(ops_.begin(), ops_.end(), [](const Op& op) { return op.kind == Kind::send; });
}

bool ScriptedRing::all_completed() const noexcept {
    if (!ops_.empty()) {
        return false;
    }
    for (std::size_t i = next_finish_; i < collected_.size(); ++i) {
        if (!(i == next_finish_ && collected_[i].described)) {
            return false;
        }
    }
    return true;
}

bool ScriptedRing::all_stopped() const noexcept {
    return std::all_of(ops_.begin(), ops_.end(), [](const Op& op) { return op.kind == Kind::cancel || op.stopped; });
}

void ScriptedRing::check_finished() const {
    check(next_finish_ == completions_.size(), "the loop finishes every completion a wait collected");
    for (const Collected& c : collected_) {
        check(c.finished, "every completion is finished (its buffer given back)");
    }
}

// ---- submissions ----

void ScriptedRing::submitted(std::uint64_t data) {
    check(!closed_, "nothing is submitted for a stream once its close completed");
    check(!destroyed_, "nothing is submitted for a stream once it was destroyed");
    check(op_data::from_handler(data) && !op_data::fd_result(data), "a stream's submission carries its handler's tag");
    const CompletionTag tag = op_data::tag(data);
    if (!have_tag_) {
        have_tag_ = true;
        tag_ = tag;
    }
    check(tag.slot == tag_.slot && tag.generation == tag_.generation, "every submission carries the stream's one tag");
}

void ScriptedRing::accept_multishot(int listen_fd, std::uint64_t data) {
    (void)listen_fd;
    (void)data;
    check(false, "a connection's stream accepts nothing");
}

void ScriptedRing::receive(int fd, bool multishot, ReceiveBuffer from, std::uint64_t data) {
    submitted(data);
    check(fd == fd_, "a receive on the stream's own socket");
    check(!receive_armed(), "at most one receive armed");
    Op op;
    op.kind = Kind::receive;
    op.serial = ++serial_;
    op.data = data;
    op.multishot = multishot;
    op.capacity = buffer_bytes(from);
    trace("  submit receive #%llu (%s, %zu-byte buffers)\n", static_cast<unsigned long long>(op.serial),
          multishot ? "multishot" : "single", op.capacity);
    ops_.push_back(std::move(op));
}

void ScriptedRing::send_message(int fd, const msghdr* message, int flags, std::uint64_t data) {
    submitted(data);
    check(fd == fd_, "a send on the stream's own socket");
    check(!send_in_flight(), "at most one send in flight");
    check((flags & MSG_NOSIGNAL) != 0, "every send passes MSG_NOSIGNAL");
    check(message != nullptr && message->msg_iovlen > 0 && message->msg_iovlen <= IOV_MAX,
          "sendmsg with 1..IOV_MAX iovecs");
    check(message->msg_name == nullptr && message->msg_control == nullptr, "a connected send: no address, no control");
    Op op;
    op.kind = Kind::send;
    op.serial = ++serial_;
    op.data = data;
    op.message = message;
    op.header = *message;
    op.vector.assign(message->msg_iov, message->msg_iov + message->msg_iovlen);
    for (const iovec& piece : op.vector) {
        check(piece.iov_len > 0, "no empty iovec");
        const auto* from = static_cast<const char*>(piece.iov_base);
        op.bytes.insert(op.bytes.end(), from, from + piece.iov_len);
    }
    check(op.bytes.size() <= write_budget_, "one send stays within the write budget");
    trace("  submit send #%llu (%zu bytes in %zu iovecs)\n", static_cast<unsigned long long>(op.serial), op.bytes.size(),
          op.vector.size());
    ops_.push_back(std::move(op));
}

void ScriptedRing::cancel(std::uint64_t target, std::uint64_t data) {
    submitted(data);
    Op op;
    op.kind = Kind::cancel;
    op.serial = ++serial_;
    op.data = data;
    // The kernel looks the target up when it sees the cancel, among what was submitted before
    // it: with one receive and one send at most, the one in flight now is the one it can find.
    for (Op& other : ops_) {
        if (other.kind != Kind::cancel && other.data == target) {
            op.target = other.serial;
            other.cancel_pending = true;
        }
    }
    trace("  submit cancel #%llu of #%llu\n", static_cast<unsigned long long>(op.serial),
          static_cast<unsigned long long>(op.target));
    ops_.push_back(std::move(op));
}

void ScriptedRing::cancel_now(int fd) noexcept {
    check(fd == fd_, "cancel_now on the stream's own socket");
    // Synchronous: once this returns the kernel has let go of every operation on the socket.
    // Their completions (-ECANCELED) still arrive; an async cancel is not on the socket.
    for (Op& op : ops_) {
        if (op.kind != Kind::cancel) {
            op.doomed = true;
            op.stopped = true;
        }
    }
    trace("  cancel_now\n");
}

// ---- completions ----

ScriptedRing::Op* ScriptedRing::find(std::uint64_t serial) noexcept {
    for (Op& op : ops_) {
        if (op.serial == serial) {
            return &op;
        }
    }
    return nullptr;
}

void ScriptedRing::push(const Op& op, int result, bool more, std::vector<char> buffer) {
    completions_.push_back({op.data, result, more ? 1U : 0U});
    Collected collected;
    collected.kind = op.kind;
    collected.more = more;
    collected.buffer = std::move(buffer);
    collected_.push_back(std::move(collected));
}

// The kernel meets a cancel: the target it names is found (and completes with -ECANCELED), or
// has just started completing on its own (-EALREADY: its next completion is its last), or is
// gone already (-ENOENT).
void ScriptedRing::see_cancel(Op& cancel) {
    cancel.seen = true;
    Op* target = find(cancel.target);
    if (target == nullptr) {
        cancel.result = -ENOENT;
        return;
    }
    target->cancel_pending = false;
    if (phase == Phase::scripted && input_.byte() % 4 == 3) {
        cancel.result = -EALREADY;
        target->must_end = true;
    } else {
        cancel.result = 0;
        target->doomed = true;
    }
    trace("    cancel #%llu %s #%llu\n", static_cast<unsigned long long>(cancel.serial),
          cancel.result == 0 ? "finds" : "races", static_cast<unsigned long long>(target->serial));
}

bool ScriptedRing::settles(const Op& op) const noexcept {
    if (op.kind != Kind::receive || op.doomed || client_.eof || client_.reset) {
        return true;
    }
    return phase == Phase::final_eof;  // settling: the client sends nothing more
}

void ScriptedRing::collect(std::size_t index) {
    switch (ops_[index].kind) {
    case Kind::receive: collect_receive(index); return;
    case Kind::send: collect_send(index); return;
    case Kind::cancel: collect_cancel(index); return;
    }
}

void ScriptedRing::collect_receive(std::size_t index) {
    Op& op = ops_[index];
    int result = 0;
    std::size_t n = 0;
    bool ends = !op.multishot || op.must_end;
    if (op.doomed) {
        result = -ECANCELED;
    } else if (client_.reset) {
        client_.recv_reset = true;
        result = -ECONNRESET;
    } else if (client_.eof || phase != Phase::scripted) {
        client_.eof = true;  // final_eof (settling receives nothing, see settles)
    } else {
        const std::uint8_t answer = input_.byte() % 16;
        switch (answer) {
        case 0: case 1: n = op.capacity; break;                                  // a full buffer
        case 2: case 3: case 13: case 14: n = 1 + input_.byte(); break;          // a short one
        case 4: n = 1 + input_.u16() % op.capacity; break;                       // any size
        case 5: case 15: n = 1; break;                                           // byte by byte
        case 6: n = 1 + input_.byte(); ends = true; break;                       // the kernel ends the multishot
        case 7: case 8: result = -ENOBUFS; break;                                // the buffer ring ran dry
        case 9: client_.eof = true; break;                                       // the client's EOF
        case 10:
            client_.reset = client_.recv_reset = true;
            result = -ECONNRESET;
            break;
        case 11:
            client_.reset = client_.recv_error = true;
            result = -ETIMEDOUT;  // an error other than a reset
            break;
        default:  // 12: the cancel that names it reaches the kernel now and finds it
            if (op.cancel_pending) {
                for (Op& cancel : ops_) {
                    if (cancel.kind == Kind::cancel && cancel.target == op.serial && !cancel.seen) {
                        cancel.seen = true;
                        cancel.result = 0;
                    }
                }
                op.cancel_pending = false;
                op.doomed = true;
                result = -ECANCELED;
            } else {
                n = 1 + input_.byte() % 64;
            }
            break;
        }
    }
    std::vector<char> buffer;
    if (n > 0) {
        buffer.resize(n);
        client_.stream.copy(client_.delivered, buffer.data(), n);
        client_.delivered += n;
        result = static_cast<int>(n);
    } else {
        ends = true;  // anything but bytes ends a multishot receive
    }
    trace("    receive #%llu: %d%s\n", static_cast<unsigned long long>(op.serial), result, ends ? "" : " (more)");
    const Op done = op;
    if (ends) {
        ops_.erase(ops_.begin() + static_cast<std::ptrdiff_t>(index));
    }
    push(done, result, !ends, std::move(buffer));
}

void ScriptedRing::check_unchanged(const Op& send) const {
    const msghdr* message = send.message;
    check(std::memcmp(message, &send.header, sizeof(msghdr)) == 0, "a send's msghdr stays unchanged until its completion");
    check(std::memcmp(message->msg_iov, send.vector.data(), send.vector.size() * sizeof(iovec)) == 0,
          "a send's iovecs stay unchanged until its completion");
    std::size_t at = 0;
    for (const iovec& piece : send.vector) {
        check(std::memcmp(piece.iov_base, send.bytes.data() + at, piece.iov_len) == 0,
              "a send's bytes stay unchanged until its completion");
        at += piece.iov_len;
    }
}

void ScriptedRing::collect_send(std::size_t index) {
    Op& op = ops_[index];
    const std::size_t total = op.bytes.size();
    if (!op.stopped) {
        check_unchanged(op);
    }
    std::size_t n = 0;
    int result = 0;
    if (op.doomed) {
        result = -ECANCELED;
    } else if (client_.reset) {
        client_.send_failed = true;
        result = -EPIPE;
    } else if (phase != Phase::scripted) {
        n = total;
    } else {
        const std::uint8_t answer = input_.byte() % 16;
        switch (answer) {
        case 6: case 7: n = 1 + input_.byte() % total; break;  // a little
        case 8: n = 1 + input_.u16() % total; break;           // any part
        case 9: n = total - input_.byte() % total; break;      // nearly all
        case 10:
            client_.reset = client_.send_failed = true;
            result = -EPIPE;
            break;
        case 11:
            client_.reset = client_.send_failed = true;
            result = -ECONNRESET;
            break;
        case 12:
            client_.reset = client_.send_error = true;
            result = -ETIMEDOUT;
            break;
        case 13:
            if (op.cancel_pending) {  // the close's cancel reaches the kernel now and finds it
                for (Op& cancel : ops_) {
                    if (cancel.kind == Kind::cancel && cancel.target == op.serial && !cancel.seen) {
                        cancel.seen = true;
                        cancel.result = 0;
                    }
                }
                op.cancel_pending = false;
            }
            result = -ECANCELED;  // cancelled, or given up by the kernel: taken back, nothing sent
            break;
        default: n = total; break;  // takes everything
        }
    }
    if (n > 0) {
        check(client_.reply.take(op.bytes.data(), n), "bytes sent are the bytes received, in order, once each (or their stamped reply)");
        client_.sent += n;
        result = static_cast<int>(n);
    }
    trace("    send #%llu: %d of %zu\n", static_cast<unsigned long long>(op.serial), result, total);
    Op done = std::move(op);
    ops_.erase(ops_.begin() + static_cast<std::ptrdiff_t>(index));
    push(done, result, false, {});
    collected_.back().send = std::move(done);
}

void ScriptedRing::collect_cancel(std::size_t index) {
    if (!ops_[index].seen) {
        see_cancel(ops_[index]);
    }
    const Op done = ops_[index];
    trace("    cancel #%llu: %d\n", static_cast<unsigned long long>(done.serial), done.result);
    ops_.erase(ops_.begin() + static_cast<std::ptrdiff_t>(index));
    push(done, done.result, false, {});
}

Result<std::span<const Readiness>> ScriptedRing::wait(std::optional<std::chrono::milliseconds> timeout) {
    (void)timeout;  // never blocks: what completes is chosen, not awaited
    check_finished();
    completions_.clear();
    collected_.clear();
    next_finish_ = 0;
    if (phase == Phase::scripted) {
        for (std::size_t i = 0; i < batch_ && !ops_.empty() && !input_.exhausted(); ++i) {
            collect(input_.byte() % ops_.size());
        }
        // Whatever else happens, every cancel submitted before this wait reaches the kernel in it.
        for (Op& op : ops_) {
            if (op.kind == Kind::cancel && !op.seen) {
                see_cancel(op);
            }
        }
    } else {
        for (std::size_t i = 0; i < ops_.size();) {
            if (settles(ops_[i])) {
                collect(i);  // each completes for the last time, and leaves ops_
            } else {
                ++i;
            }
        }
    }
    batch_ = 0;
    return std::span<const Readiness>{};
}

std::size_t ScriptedRing::index_of(const Completion& completion) const noexcept {
    check(&completion >= completions_.data() && &completion < completions_.data() + completions_.size(),
          "the loop hands back a completion of the last wait");
    return static_cast<std::size_t>(&completion - completions_.data());
}

CompletionInfo ScriptedRing::describe(const Completion& completion) const noexcept {
    const std::size_t index = index_of(completion);
    check(index == next_finish_, "completions are delivered in the order they were collected");
    Collected& collected = collected_[index];
    check(!collected.described, "a completion is delivered once");
    collected.described = true;
    if (collected.kind == Kind::send && !collected.send.stopped) {
        check_unchanged(collected.send);  // the stream consumes them only now
    }
    bytes_delivered_ += collected.buffer.size();
    return {completion.result, collected.more, {collected.buffer.data(), collected.buffer.size()}};
}

void ScriptedRing::finished(const Completion& completion, bool delivered) noexcept {
    const std::size_t index = index_of(completion);
    check(index == next_finish_, "completions are finished once each, in order");
    ++next_finish_;
    Collected& collected = collected_[index];
    collected.finished = true;
    check(delivered == collected.described, "a completion is described exactly when it is delivered");
    check(delivered != destroyed_, "completions reach a live stream and are dropped once it is gone");
    // The buffer goes back to the ring: a stream that kept a pointer into it reads this.
    std::fill(collected.buffer.begin(), collected.buffer.end(), '\xa5');
}

bool ScriptedRing::keep_received() noexcept {
    check(next_finish_ < collected_.size() && collected_[next_finish_].described && !collected_[next_finish_].finished,
          "a buffer is kept while its completion is being delivered");
    Collected& collected = collected_[next_finish_];
    check(collected.kind == Kind::receive && !collected.buffer.empty() && !collected.kept,
          "only a receive's bytes are kept, once");
    if (kept_.size() >= keep_limit) {
        return false;
    }
    collected.kept = true;
    kept_.push_back(std::move(collected.buffer));
    collected.buffer.clear();
    return true;
}

void ScriptedRing::give_back(const char* buffer) noexcept {
    const auto it = std::find_if(kept_.begin(), kept_.end(),
                                 [buffer](const std::vector<char>& kept) { return kept.data() == buffer; });
    check(it != kept_.end(), "a buffer given back is one kept, and is given back once");
    std::fill(it->begin(), it->end(), '\xa5');  // a queue that still pointed into it would read this
    kept_.erase(it);
}

}  // namespace echoplex::fuzz
