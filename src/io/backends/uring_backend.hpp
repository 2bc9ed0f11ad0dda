// io_uring backend: completions for the sockets that ask for them (accept, receive, send), and
// readiness, for every other descriptor the loop watches, through poll submissions.
#pragma once

#include <liburing.h>

#include <vector>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/completion.hpp"

namespace echoplex::detail {

class UringBackend final : public Backend, public CompletionRing, private BufferLender {
public:
    // Sets up the ring (SINGLE_ISSUER|DEFER_TASKRUN where the kernel has them, COOP_TASKRUN
    // otherwise) and its provided-buffer ring. A kernel that refuses io_uring (disabled by sysctl,
    // blocked by seccomp, short of locked memory) gives an Error whose message says which.
    static Result<std::unique_ptr<Backend>> create();
    ~UringBackend() override;

    BackendKind kind() const noexcept override { return BackendKind::io_uring; }
    int fd_limit() const noexcept override;
    Result<void> modify(int fd, Interest old_interest, Interest new_interest) override;
    Result<std::span<const Readiness>> wait(std::optional<std::chrono::milliseconds> timeout) override;

    CompletionRing* completion_ring() noexcept override { return this; }
    std::span<const Completion> completions() const noexcept override { return completions_; }
    CompletionInfo describe(const Completion& completion) const noexcept override;
    void finished(const Completion& completion, bool delivered) noexcept override;
    std::uint64_t buffer_ring_shortages() const noexcept override { return shortages_; }

    void accept_multishot(int listen_fd, std::uint64_t data) override;
    void receive(int fd, bool multishot, ReceiveBuffer from, std::uint64_t data) override;
    void send_message(int fd, const msghdr* message, int flags, std::uint64_t data) override;
    void cancel(std::uint64_t target, std::uint64_t data) override;
    void cancel_now(int fd) noexcept override;
    bool keep_received() noexcept override;
    BufferLender& buffer_lender() noexcept override { return *this; }

    // The small buffers: up to buffer_count of buffer_size bytes, one per receive completion.
    // The ring starts with buffers_lent_first and lends more whenever a receive finds it dry
    // (-ENOBUFS), so resident memory follows the peak number of receives per wait: 1 MiB for a
    // few busy connections, at most 16 MiB (the kernel uses a ring's buffers in turn, touching
    // every one lent). The large ring (4 MiB) is lent whole: only streaming connections use it.
    static constexpr unsigned buffer_count = io_uring_buffer_count;
    static constexpr unsigned buffer_size = io_uring_buffer_size;
    static constexpr unsigned buffers_lent_first = 64;

private:
    UringBackend() = default;
    Result<void> set_up(unsigned flags);
    Result<void> set_up_buffers();
    // A free submission slot; submits what is queued first when the queue is full.
    io_uring_sqe* next_sqe() noexcept;
    void arm_poll(int fd) noexcept;
    void collect(const io_uring_cqe& cqe);
    // One provided-buffer ring: its buffers, in one mapping, carry the ids first_id.. so that a
    // completion's buffer id alone says which ring it came from.
    struct BufferRing {
        io_uring_buf_ring* entries = nullptr;
        char* memory = nullptr;
        unsigned count = 0;
        unsigned size = 0;
        unsigned first_id = 0;
        unsigned lent = 0;  // buffers lent so far, from the first
        unsigned kept = 0;  // buffers a receive's handler keeps (keep_received), not yet given back
        unsigned keep_limit = 0;
        bool registered = false;
    };
    Result<void> set_up_buffer_ring(BufferRing& ring, ReceiveBuffer kind, unsigned first_id);
    BufferRing& ring_of(unsigned buffer_id) noexcept { return buffer_id < large_.first_id ? small_ : large_; }
    BufferRing& ring_of(const char* buffer) noexcept;
    const BufferRing& ring_of(unsigned buffer_id) const noexcept {
        return buffer_id < large_.first_id ? small_ : large_;
    }
    void recycle(unsigned buffer_id) noexcept;
    void give_back(const char* buffer) noexcept override;
    static void lend_buffers(BufferRing& ring, unsigned count) noexcept;  // the next `count` never lent
    static void release(BufferRing& ring) noexcept;

    io_uring ring_{};
    bool ring_ready_ = false;
    // Readiness, per descriptor: the interest the loop gave (the kernel argument of the next
    // poll), whether a poll is in the kernel, and that poll's sequence number. A poll completion
    // with an older sequence is one removed by modify() and is ignored.
    std::vector<Interest> wanted_;
    std::vector<std::uint8_t> armed_;
    std::vector<std::uint32_t> sequence_;
    std::vector<int> rearm_;  // reported by the last wait: polled again by the next if still wanted
    std::vector<Readiness> ready_;
    std::vector<Completion> completions_;
    // The provided buffers and the rings that lend them to the kernel (mmap'd, page-aligned).
    BufferRing small_;
    BufferRing large_;
    // The completion being delivered, and whether its handler keeps its buffer (keep_received).
    mutable const Completion* delivering_ = nullptr;  // set by describe(), which the loop calls first
    bool keep_received_ = false;
    std::uint64_t shortages_ = 0;
    bool failed_submit_ = false;  // a submission found no slot even after submitting: wait() says so
};

}  // namespace echoplex::detail
