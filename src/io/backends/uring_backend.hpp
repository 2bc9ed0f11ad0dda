// io_uring backend: completions for the sockets that ask for them (accept, receive, send), and
// readiness, for every other descriptor the loop watches, through poll submissions.
#pragma once

#include <liburing.h>

#include <vector>

#include "echoplex/io/backend.hpp"
#include "echoplex/io/completion.hpp"

namespace echoplex::detail {

class UringBackend final : public Backend, public CompletionRing {
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
    void receive(int fd, bool multishot, std::uint64_t data) override;
    void send_message(int fd, const msghdr* message, int flags, std::uint64_t data) override;
    void cancel(std::uint64_t target, std::uint64_t data) override;
    void cancel_now(int fd) noexcept override;

    // The provided-buffer ring: up to this many buffers of this many bytes, one per receive
    // completion. It starts with buffers_lent_first and lends more whenever a receive finds it dry
    // (-ENOBUFS), so resident memory follows the peak number of receives per wait: 1 MiB for a
    // few busy connections, at most 16 MiB (the kernel uses a ring's buffers in turn, touching
    // every one lent).
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
    void recycle(unsigned buffer_id) noexcept;
    void lend_buffers(unsigned count) noexcept;  // the next `count` never-lent buffers

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
    // The provided buffers and the ring that lends them to the kernel (mmap'd, page-aligned).
    io_uring_buf_ring* buffer_ring_ = nullptr;
    char* buffers_ = nullptr;
    bool buffers_registered_ = false;
    unsigned buffers_lent_ = 0;
    std::uint64_t shortages_ = 0;
    bool failed_submit_ = false;  // a submission found no slot even after submitting: wait() says so
};

}  // namespace echoplex::detail
