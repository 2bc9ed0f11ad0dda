// Completions: the half of a completion backend (io_uring) that readiness backends do not have.
// A handler submits operations (accept, receive, send) through the loop's CompletionRing and hears
// what each did when the kernel finishes it, from the loop, like any other event.
//
// Every submission carries a tag naming its handler by slot and generation in the loop's table.
// A handler removed from the table bumps its slot's generation, so a completion still queued for
// it (its descriptor number perhaps already reused by accept) no longer matches and is dropped:
// a descriptor it carries is closed, a buffer it holds goes back to the ring.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "echoplex/io/byte_queue.hpp"

namespace echoplex {

// The io_uring backend's provided buffers, whatever the number of connections: 1,024 of 16 KiB,
// lent to the kernel in steps as receives need them, for every connection; and 64 of 64 KiB (one
// read budget each) for the few connections streaming more than 16 KiB at a time, so that a
// 1 MiB message takes 16 receives and 16 sends, not 64 of each.
constexpr std::size_t io_uring_buffer_count = 1024;
constexpr std::size_t io_uring_buffer_size = 16 * 1024;
constexpr std::size_t io_uring_large_buffer_count = 64;
constexpr std::size_t io_uring_large_buffer_size = 64 * 1024;
constexpr long io_uring_buffer_ring_bytes = static_cast<long>(io_uring_buffer_count * io_uring_buffer_size +
                                                              io_uring_large_buffer_count * io_uring_large_buffer_size);

// Which of the provided-buffer rings a receive takes its buffer from.
enum class ReceiveBuffer : std::uint8_t { small, large };
constexpr std::size_t buffer_bytes(ReceiveBuffer kind) noexcept {
    return kind == ReceiveBuffer::large ? io_uring_large_buffer_size : io_uring_buffer_size;
}

// Which of its operations a completion belongs to, as its handler numbers them (0..63).
using OpCode = std::uint8_t;

// A handler in the loop's table: its slot, and the slot's generation when it was registered.
struct CompletionTag {
    std::uint32_t slot = 0;
    std::uint32_t generation = 0;
};

// The 64 bits the kernel hands back with every completion (io_uring's user_data):
//   bit 63: 1 for a completion of a handler's operation (0: the backend's own, its polls)
//   bit 62: the result is a new descriptor (accept): closed if the completion is dropped
//   bits 56..61: the OpCode; bits 32..55: the generation (24 bits); bits 0..31: the slot.
namespace op_data {
constexpr std::uint64_t handler_bit = std::uint64_t{1} << 63U;
constexpr std::uint64_t fd_result_bit = std::uint64_t{1} << 62U;
constexpr std::uint32_t generation_mask = 0xff'ffffU;

constexpr std::uint64_t encode(CompletionTag tag, OpCode op, bool fd_result = false) noexcept {
    return handler_bit | (fd_result ? fd_result_bit : 0) | (std::uint64_t{op & 0x3fU} << 56U) |
           (std::uint64_t{tag.generation & generation_mask} << 32U) | tag.slot;
}
constexpr bool from_handler(std::uint64_t data) noexcept { return (data & handler_bit) != 0; }
constexpr bool fd_result(std::uint64_t data) noexcept { return (data & fd_result_bit) != 0; }
constexpr OpCode op(std::uint64_t data) noexcept { return static_cast<OpCode>((data >> 56U) & 0x3fU); }
constexpr CompletionTag tag(std::uint64_t data) noexcept {
    return {static_cast<std::uint32_t>(data & 0xffff'ffffU), static_cast<std::uint32_t>(data >> 32U) & generation_mask};
}
}  // namespace op_data

// One finished operation, as the backend collected it.
struct Completion {
    std::uint64_t data;   // op_data::encode(...) of the submission
    int result;           // the system call's result, or -errno
    std::uint32_t flags;  // the kernel's completion flags (more to come, buffer id)
};

// What a completion means, decoded by the ring: the kernel's flags are the backend's business.
struct CompletionInfo {
    int result;
    bool more;  // a multishot operation stays armed and will complete again
    // A receive's bytes, in a buffer lent by the ring: valid until recycle(buffer_id) or the
    // next wait, whichever comes first, and recycled by the loop after the handler returns.
    std::span<const char> bytes;
};

class CompletionHandler {
public:
    virtual void on_completion(OpCode op, const CompletionInfo& info) = 0;

protected:
    ~CompletionHandler() = default;
};

// The submission side. Each call queues one operation; the loop's next wait submits everything
// queued in the same io_uring_enter that waits. `data` is op_data::encode(...) of the submitter.
class CompletionRing {
public:
    CompletionRing() = default;
    CompletionRing(const CompletionRing&) = delete;
    CompletionRing& operator=(const CompletionRing&) = delete;

    // Completes once per accepted socket (non-blocking and close-on-exec, like accept4's; the
    // ring's own operations on it still wait, by polling internally) until it ends without
    // `more` (an error; re-arm to go on).
    virtual void accept_multishot(int listen_fd, std::uint64_t data) = 0;
    // Receives into a buffer of the provided-buffer ring `from`. Multishot: completes once per
    // arrival of bytes until EOF (result 0), an error, a cancel or a ring run dry (-ENOBUFS),
    // then re-arm; otherwise once, with at most one buffer's worth (buffer_bytes(from)).
    virtual void receive(int fd, bool multishot, ReceiveBuffer from, std::uint64_t data) = 0;
    // sendmsg(2) with `flags`; `message` and what it points to must stay valid until completion.
    virtual void send_message(int fd, const msghdr* message, int flags, std::uint64_t data) = 0;
    // Asks the kernel to cancel the operation submitted with `target`; it then completes with
    // -ECANCELED (or its own result, if it raced). This request completes too, with `data`.
    virtual void cancel(std::uint64_t target, std::uint64_t data) = 0;
    // Keeps the buffer of the receive completion being delivered (its CompletionInfo::bytes) out
    // of the ring: the loop does not recycle it after the handler returns; it goes back to the
    // kernel once given to buffer_lender() (a ByteQueue::append_lent does that when consumed).
    // False if the ring keeps enough already (copy the bytes then): queues that wait for a slow
    // client must not hold the buffers every other connection's receives need.
    [[nodiscard]] virtual bool keep_received() noexcept = 0;
    virtual BufferLender& buffer_lender() noexcept = 0;
    // Cancels every operation on `fd` and returns once the kernel has stopped them all (their
    // completions still arrive, to be dropped): for a handler that goes away with work in flight.
    virtual void cancel_now(int fd) noexcept = 0;

protected:
    ~CompletionRing() = default;
};

}  // namespace echoplex
