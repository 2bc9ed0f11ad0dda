// io_uring backend.
#include "uring_backend.hpp"

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <string>
#include <utility>

#include "poll_events.hpp"

namespace echoplex::detail {
namespace {

constexpr unsigned submission_entries = 2048;  // a send per connection per iteration at 1,000 connections
// Completions arrive in bursts (one per connection with bytes): room for several per submission.
constexpr unsigned completion_entries = 8 * submission_entries;
// The provided-buffer groups, as receives name them.
constexpr unsigned short group_of(ReceiveBuffer kind) noexcept { return kind == ReceiveBuffer::large ? 1 : 0; }

// user_data of the backend's own submissions (bit 63 clear): a poll carries its descriptor
// (bits 0..31) and sequence number (bits 32..61); a poll removal's own completion is ignored.
constexpr std::uint64_t ignored_data = std::uint64_t{1} << 62U;
constexpr std::uint32_t sequence_mask = 0x3fff'ffffU;

constexpr std::uint64_t poll_data(int fd, std::uint32_t sequence) noexcept {
    return (std::uint64_t{sequence & sequence_mask} << 32U) | static_cast<std::uint32_t>(fd);
}

Error from_result(std::string_view call, int negative_errno, std::string context = {}) {
    Error e = Error::from_errno(call, -negative_errno);
    e.context = std::move(context);
    return e;
}

// Why the kernel refused io_uring_setup, in words an operator can act on.
std::string refusal_reason(int err) {
    switch (err) {
    case EPERM:
    case EACCES: {
        std::ifstream sysctl("/proc/sys/kernel/io_uring_disabled");
        int disabled = 0;
        if (sysctl >> disabled && disabled != 0) {
            return disabled == 2 ? "(io_uring is switched off: sysctl kernel.io_uring_disabled=2)"
                                 : "(io_uring is limited to kernel.io_uring_group: sysctl kernel.io_uring_disabled=1)";
        }
        return "(refused although kernel.io_uring_disabled allows it: a seccomp filter, as container runtimes install?)";
    }
    case ENOSYS:
        return "(this kernel has no io_uring, or a seccomp filter hides it)";
    case ENOMEM:
        return "(not enough locked memory for the rings: raise RLIMIT_MEMLOCK, ulimit -l)";
    default:
        return {};
    }
}

}  // namespace

Result<std::unique_ptr<Backend>> UringBackend::create() {
    auto backend = std::unique_ptr<UringBackend>(new UringBackend());
    // Newest first: one submitting thread whose completions run only when it waits (6.1), then
    // completions that do not interrupt the thread (5.19), then the plain ring.
    const unsigned choices[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    Result<void> ready = Error{"io_uring_setup", std::make_error_code(std::errc::invalid_argument)};
    for (const unsigned flags : choices) {
        ready = backend->set_up(flags);
        if (ready || ready.error().code != std::errc::invalid_argument) {
            break;
        }
    }
    if (!ready) {
        return std::move(ready).error();
    }
    if (auto buffers = backend->set_up_buffers(); !buffers) {
        return std::move(buffers).error();
    }
    return std::unique_ptr<Backend>(std::move(backend));
}

Result<void> UringBackend::set_up(unsigned flags) {
    io_uring_params params{};
    params.flags = flags | IORING_SETUP_CQSIZE;
    params.cq_entries = completion_entries;
    const int rc = ::io_uring_queue_init_params(submission_entries, &ring_, &params);
    if (rc < 0) {
        return from_result("io_uring_setup", rc, refusal_reason(-rc));
    }
    ring_ready_ = true;
    return {};
}

Result<void> UringBackend::set_up_buffers() {
    if (auto small = set_up_buffer_ring(small_, ReceiveBuffer::small, 0); !small) {
        return small;
    }
    lend_buffers(small_, buffers_lent_first);
    if (auto large = set_up_buffer_ring(large_, ReceiveBuffer::large, small_.count); !large) {
        return large;
    }
    lend_buffers(large_, large_.count);
    return {};
}

Result<void> UringBackend::set_up_buffer_ring(BufferRing& ring, ReceiveBuffer kind, unsigned first_id) {
    ring.count = static_cast<unsigned>(kind == ReceiveBuffer::large ? io_uring_large_buffer_count : buffer_count);
    ring.size = static_cast<unsigned>(buffer_bytes(kind));
    ring.first_id = first_id;
    // A slow client's queue may keep large buffers until none is left (receives then fall back to
    // small ones); it may keep only half of the small ones, which every connection needs.
    ring.keep_limit = kind == ReceiveBuffer::large ? ring.count : ring.count / 2;
    // liburing 2.3 has io_uring_register_buf_ring but not io_uring_setup_buf_ring: the ring is
    // page-aligned memory of our own, registered, then filled as buffers are lent.
    void* entries = ::mmap(nullptr, ring.count * sizeof(io_uring_buf), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (entries == MAP_FAILED) {
        return Error::from_errno("mmap", errno);
    }
    ring.entries = static_cast<io_uring_buf_ring*>(entries);
    void* memory = ::mmap(nullptr, std::size_t{ring.count} * ring.size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        return Error::from_errno("mmap", errno);
    }
    ring.memory = static_cast<char*>(memory);
    io_uring_buf_reg registration{};
    registration.ring_addr = reinterpret_cast<std::uintptr_t>(entries);
    registration.ring_entries = ring.count;
    registration.bgid = group_of(kind);
    if (const int rc = ::io_uring_register_buf_ring(&ring_, &registration, 0); rc < 0) {
        return from_result("io_uring_register(PBUF_RING)", rc, "(provided-buffer rings need Linux 5.19 or later)");
    }
    ring.registered = true;
    io_uring_buf_ring_init(ring.entries);
    return {};
}

void UringBackend::lend_buffers(BufferRing& ring, unsigned count) noexcept {
    const unsigned first = ring.lent;
    const unsigned last = std::min(ring.count, first + count);
    const int mask = io_uring_buf_ring_mask(ring.count);
    for (unsigned i = first; i < last; ++i) {
        io_uring_buf_ring_add(ring.entries, ring.memory + std::size_t{i} * ring.size, ring.size,
                              static_cast<unsigned short>(ring.first_id + i), mask, static_cast<int>(i - first));
    }
    io_uring_buf_ring_advance(ring.entries, static_cast<int>(last - first));
    ring.lent = last;
}

void UringBackend::release(BufferRing& ring) noexcept {
    if (ring.memory != nullptr) {
        ::munmap(ring.memory, std::size_t{ring.count} * ring.size);
    }
    if (ring.entries != nullptr) {
        ::munmap(ring.entries, ring.count * sizeof(io_uring_buf));
    }
}

UringBackend::~UringBackend() {
    if (ring_ready_) {
        // Stop whatever is still in the kernel before its buffers are unmapped.
        io_uring_sync_cancel_reg everything{};
        everything.flags = IORING_ASYNC_CANCEL_ANY;
        everything.timeout.tv_sec = -1;
        everything.timeout.tv_nsec = -1;
        (void)::io_uring_submit(&ring_);
        (void)::io_uring_register_sync_cancel(&ring_, &everything);
        ::io_uring_queue_exit(&ring_);
    }
    release(small_);
    release(large_);
}

int UringBackend::fd_limit() const noexcept { return std::numeric_limits<int>::max(); }

io_uring_sqe* UringBackend::next_sqe() noexcept {
    io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
        // The submission queue is full: hand it to the kernel now (one extra io_uring_enter).
        (void)::io_uring_submit(&ring_);
        sqe = ::io_uring_get_sqe(&ring_);
    }
    if (sqe == nullptr) {
        failed_submit_ = true;
    }
    return sqe;
}

void UringBackend::arm_poll(int fd) noexcept {
    io_uring_sqe* sqe = next_sqe();
    if (sqe == nullptr) {
        return;
    }
    const auto i = static_cast<std::size_t>(fd);
    ::io_uring_prep_poll_add(sqe, fd, static_cast<unsigned>(poll_events(wanted_[i])));
    ::io_uring_sqe_set_data64(sqe, poll_data(fd, sequence_[i]));
    armed_[i] = 1;
}

Result<void> UringBackend::modify(int fd, Interest old_interest, Interest new_interest) {
    if (fd < 0) {
        return Error{"io_uring poll", make_error_code(errc::fd_out_of_range)};
    }
    if (old_interest == new_interest) {
        return {};
    }
    const auto i = static_cast<std::size_t>(fd);
    const Interest current = i < wanted_.size() ? wanted_[i] : Interest::none;
    if (old_interest != current) {
        return Error{"io_uring poll", make_error_code(errc::bad_argument), "(old interest differs from the set's)"};
    }
    if (i >= wanted_.size()) {
        const std::size_t size = std::max(i + 1, wanted_.size() * 2);
        wanted_.resize(size, Interest::none);
        armed_.resize(size, 0);
        sequence_.resize(size, 0);
    }
    if (armed_[i] != 0) {
        // The poll in the kernel asks the old question: remove it. Its completion (cancelled, or
        // its own if it raced) carries the old sequence number and is ignored.
        if (io_uring_sqe* sqe = next_sqe(); sqe != nullptr) {
            ::io_uring_prep_poll_remove(sqe, poll_data(fd, sequence_[i]));
            ::io_uring_sqe_set_data64(sqe, ignored_data);
        }
        armed_[i] = 0;
    }
    ++sequence_[i];
    wanted_[i] = new_interest;
    if (new_interest != Interest::none) {
        arm_poll(fd);
    }
    return {};
}

void UringBackend::collect(const io_uring_cqe& cqe) {
    const std::uint64_t data = cqe.user_data;
    if (op_data::from_handler(data)) {
        if (cqe.res == -ENOBUFS) {
            ++shortages_;
            if (small_.lent < small_.count) {
                lend_buffers(small_, buffers_lent_first);  // receives outran the buffers lent so far
            }
        }
        completions_.push_back({data, cqe.res, cqe.flags});
        return;
    }
    if ((data & ignored_data) != 0) {
        return;
    }
    const int fd = static_cast<int>(data & 0xffff'ffffU);
    const auto i = static_cast<std::size_t>(fd);
    const auto sequence = static_cast<std::uint32_t>(data >> 32U) & sequence_mask;
    if (i >= armed_.size() || armed_[i] == 0 || (sequence_[i] & sequence_mask) != sequence) {
        return;  // a poll that modify() removed
    }
    armed_[i] = 0;
    const Interest want = wanted_[i];
    const auto events = static_cast<unsigned>(cqe.res);
    // A poll that failed (the descriptor closed under it) reports like an error condition, so
    // the handler's own call discovers what happened; poll(2) reports POLLNVAL the same way.
    const bool trouble = cqe.res < 0 || (events & (POLLERR | POLLHUP | POLLNVAL)) != 0;
    const bool r = wants_read(want) && (trouble || (events & (POLLIN | POLLRDHUP)) != 0);
    const bool w = wants_write(want) && (trouble || (events & POLLOUT) != 0);
    if (r || w) {
        ready_.push_back({fd, r, w});
    }
    // A poll completes once: asked again on the next wait, it reports at once if the descriptor
    // is still ready. That re-arm is what makes this backend level-triggered like the others.
    rearm_.push_back(fd);
}

Result<std::span<const Readiness>> UringBackend::wait(std::optional<std::chrono::milliseconds> timeout) {
    ready_.clear();
    completions_.clear();
    for (const int fd : rearm_) {
        const auto i = static_cast<std::size_t>(fd);
        if (armed_[i] == 0 && wanted_[i] != Interest::none) {
            arm_poll(fd);
        }
    }
    rearm_.clear();
    if (failed_submit_) {
        failed_submit_ = false;
        return Error{"io_uring_get_sqe", std::make_error_code(std::errc::no_buffer_space),
                     "(the submission queue stayed full)"};
    }
    // One io_uring_enter submits everything queued since the last wait and waits.
    int rc = 0;
    io_uring_cqe* first = nullptr;
    if (!timeout) {
        rc = ::io_uring_submit_and_wait(&ring_, 1);
    } else if (timeout->count() <= 0) {
        rc = ::io_uring_submit_and_get_events(&ring_);
    } else {
        __kernel_timespec ts{};
        ts.tv_sec = timeout->count() / 1000;
        ts.tv_nsec = (timeout->count() % 1000) * 1'000'000;
        rc = ::io_uring_submit_and_wait_timeout(&ring_, &first, 1, &ts, nullptr);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        return from_result("io_uring_enter", rc);
    }
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        collect(*cqe);
        ++seen;
    }
    ::io_uring_cq_advance(&ring_, seen);
    return std::span<const Readiness>(ready_);
}

bool UringBackend::keep_received() noexcept {
    if (delivering_ == nullptr || (delivering_->flags & IORING_CQE_F_BUFFER) == 0 || delivering_->result <= 0) {
        return false;
    }
    BufferRing& ring = ring_of(delivering_->flags >> IORING_CQE_BUFFER_SHIFT);
    if (ring.kept >= ring.keep_limit) {
        return false;
    }
    ++ring.kept;
    keep_received_ = true;
    return true;
}

UringBackend::BufferRing& UringBackend::ring_of(const char* buffer) noexcept {
    const bool large = buffer >= large_.memory && buffer < large_.memory + std::size_t{large_.count} * large_.size;
    return large ? large_ : small_;
}

CompletionInfo UringBackend::describe(const Completion& completion) const noexcept {
    delivering_ = &completion;
    CompletionInfo info{completion.result, (completion.flags & IORING_CQE_F_MORE) != 0, {}};
    if ((completion.flags & IORING_CQE_F_BUFFER) != 0 && completion.result > 0) {
        const unsigned id = completion.flags >> IORING_CQE_BUFFER_SHIFT;
        const BufferRing& ring = ring_of(id);
        info.bytes = {ring.memory + std::size_t{id - ring.first_id} * ring.size,
                      static_cast<std::size_t>(completion.result)};
    }
    return info;
}

void UringBackend::finished(const Completion& completion, bool delivered) noexcept {
    delivering_ = nullptr;
    const bool kept = std::exchange(keep_received_, false);
    if ((completion.flags & IORING_CQE_F_BUFFER) != 0 && !kept) {
        recycle(completion.flags >> IORING_CQE_BUFFER_SHIFT);
    }
    if (!delivered && op_data::fd_result(completion.data) && completion.result >= 0) {
        ::close(completion.result);  // accepted for a listener that has gone
    }
}

void UringBackend::recycle(unsigned buffer_id) noexcept {
    BufferRing& ring = ring_of(buffer_id);
    io_uring_buf_ring_add(ring.entries, ring.memory + std::size_t{buffer_id - ring.first_id} * ring.size, ring.size,
                          static_cast<unsigned short>(buffer_id), io_uring_buf_ring_mask(ring.count), 0);
    io_uring_buf_ring_advance(ring.entries, 1);
}

void UringBackend::give_back(const char* buffer) noexcept {
    BufferRing& ring = ring_of(buffer);
    --ring.kept;
    recycle(ring.first_id + static_cast<unsigned>(static_cast<std::size_t>(buffer - ring.memory) / ring.size));
}

void UringBackend::accept_multishot(int listen_fd, std::uint64_t data) {
    if (io_uring_sqe* sqe = next_sqe(); sqe != nullptr) {
        ::io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        ::io_uring_sqe_set_data64(sqe, data);
    }
}

void UringBackend::receive(int fd, bool multishot, ReceiveBuffer from, std::uint64_t data) {
    if (io_uring_sqe* sqe = next_sqe(); sqe != nullptr) {
        if (multishot) {
            ::io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
        } else {
            ::io_uring_prep_recv(sqe, fd, nullptr, 0, 0);
        }
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = group_of(from);
        ::io_uring_sqe_set_data64(sqe, data);
    }
}

void UringBackend::send_message(int fd, const msghdr* message, int flags, std::uint64_t data) {
    if (io_uring_sqe* sqe = next_sqe(); sqe != nullptr) {
        ::io_uring_prep_sendmsg(sqe, fd, message, static_cast<unsigned>(flags));
        ::io_uring_sqe_set_data64(sqe, data);
    }
}

void UringBackend::cancel(std::uint64_t target, std::uint64_t data) {
    if (io_uring_sqe* sqe = next_sqe(); sqe != nullptr) {
        ::io_uring_prep_cancel64(sqe, target, 0);
        ::io_uring_sqe_set_data64(sqe, data);
    }
}

void UringBackend::cancel_now(int fd) noexcept {
    // Operations still queued here are not in the kernel yet: submit them so the cancel sees them.
    (void)::io_uring_submit(&ring_);
    io_uring_sync_cancel_reg on_fd{};
    on_fd.fd = fd;
    on_fd.flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
    on_fd.timeout.tv_sec = -1;
    on_fd.timeout.tv_nsec = -1;
    (void)::io_uring_register_sync_cancel(&ring_, &on_fd);
}

}  // namespace echoplex::detail
