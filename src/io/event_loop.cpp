// EventLoop implementation.
#include "echoplex/io/event_loop.hpp"

#include <cassert>

#include "echoplex/io/fmt.hpp"

namespace echoplex {

// Reads the self-pipe and hands each signal to the callbacks registered with on_signal.
class EventLoop::SignalHandler final : public IoHandler {
public:
    explicit SignalHandler(EventLoop& loop) : loop_(loop) {}
    void on_readable() override {
        for (const int signo : loop_.signals_->take_pending()) {
            if (auto it = loop_.signal_callbacks_.find(signo); it != loop_.signal_callbacks_.end()) {
                it->second(signo);
            }
        }
    }
    void on_writable() override {}

private:
    EventLoop& loop_;
};

EventLoop::EventLoop(std::unique_ptr<Backend> backend) : backend_(std::move(backend)) {
    assert(backend_ != nullptr);
    ring_ = backend_->completion_ring();
}

EventLoop::~EventLoop() {
    if (signals_) {
        unwatch(signals_->fd());
    }
}

Result<std::unique_ptr<EventLoop>> EventLoop::create(BackendKind kind) {
    auto backend = make_backend(kind);
    if (!backend) {
        return std::move(backend).error();
    }
    return std::make_unique<EventLoop>(std::move(backend).value());
}

EventLoop::Slot* EventLoop::live_slot(int fd) noexcept {
    if (fd < 0 || static_cast<std::size_t>(fd) >= slots_.size()) {
        return nullptr;
    }
    Slot& slot = slots_[static_cast<std::size_t>(fd)];
    if (slot.handler == nullptr || slot.watched_in_batch == batch_) {
        return nullptr;
    }
    return &slot;
}

Result<void> EventLoop::watch(int fd, IoHandler& handler, Interest want) {
    // Checked here rather than left to the backend, so that a descriptor watched with
    // Interest::none (the backend does not hear of it until its interest changes) is refused too.
    if (fd < 0 || fd >= backend_->fd_limit()) {
        return Error{"watch", make_error_code(errc::fd_out_of_range),
                     fmt::format("(fd {}; {} watches 0..{})", fd, backend_name(backend_->kind()), backend_->fd_limit() - 1)};
    }
    if (static_cast<std::size_t>(fd) < slots_.size()) {
        const Slot& existing = slots_[static_cast<std::size_t>(fd)];
        if (existing.handler == &handler) {
            return set_interest(fd, want);
        }
        if (existing.handler != nullptr) {
            return Error{"watch", make_error_code(errc::bad_argument), "(descriptor already watched)"};
        }
    }
    if (want != Interest::none) {
        if (auto added = backend_->modify(fd, Interest::none, want); !added) {
            return added;
        }
    }
    if (static_cast<std::size_t>(fd) >= slots_.size()) {
        slots_.resize(static_cast<std::size_t>(fd) + 1);
    }
    slots_[static_cast<std::size_t>(fd)] = Slot{&handler, batch_, want};
    return {};
}

Result<void> EventLoop::change_interest(int fd, Interest want) {
    if (!watched(fd)) {
        return Error{"set_interest", make_error_code(errc::bad_argument), "(descriptor not watched)"};
    }
    Slot& slot = slots_[static_cast<std::size_t>(fd)];
    if (slot.interest == want) {
        return {};
    }
    if (auto changed = backend_->modify(fd, slot.interest, want); !changed) {
        return changed;
    }
    slot.interest = want;
    return {};
}

Interest EventLoop::interest(int fd) const noexcept {
    return watched(fd) ? slots_[static_cast<std::size_t>(fd)].interest : Interest::none;
}

bool EventLoop::watched(int fd) const noexcept {
    return fd >= 0 && static_cast<std::size_t>(fd) < slots_.size() &&
           slots_[static_cast<std::size_t>(fd)].handler != nullptr;
}

void EventLoop::unwatch(int fd) noexcept {
    if (!watched(fd)) {
        return;
    }
    Slot& slot = slots_[static_cast<std::size_t>(fd)];
    if (slot.interest != Interest::none) {
        // Removing a descriptor that is still open does not fail. A failure means the caller closed
        // it first (see Backend's contract): nothing left here can take it out of the kernel's
        // set, and forgetting the slot is still right, so the error is dropped.
        (void)backend_->modify(fd, slot.interest, Interest::none);
    }
    slot = Slot{};
}

TimerId EventLoop::add_timer(Clock::duration delay, std::function<void()> callback) {
    return timers_.add(Clock::now() + delay, std::move(callback));
}

TimerId EventLoop::add_timer_at(Clock::time_point deadline, std::function<void()> callback) {
    return timers_.add(deadline, std::move(callback));
}

bool EventLoop::cancel_timer(TimerId id) { return timers_.cancel(id); }

Result<void> EventLoop::on_signal(int signo, std::function<void(int)> callback) {
    if (!signals_) {
        auto created = SignalWatcher::create();
        if (!created) {
            return std::move(created).error();
        }
        signals_ = std::move(created).value();
        signal_handler_ = std::make_unique<SignalHandler>(*this);
        if (auto watching = watch(signals_->fd(), *signal_handler_, Interest::read); !watching) {
            signals_.reset();
            return watching;
        }
    }
    if (auto added = signals_->add(signo); !added) {
        return added;
    }
    signal_callbacks_[signo] = std::move(callback);
    return {};
}

void EventLoop::allocate_read_scratch() {
    // Not value-initialised: only bytes a read wrote are ever looked at.
    read_scratch_.reset(new char[read_scratch_size]);
}

void EventLoop::defer(std::function<void()> work) { deferred_.push_back(std::move(work)); }

CompletionTag EventLoop::add_completion_handler(CompletionHandler& handler) {
    std::uint32_t slot = 0;
    if (!free_handler_slots_.empty()) {
        slot = free_handler_slots_.back();
        free_handler_slots_.pop_back();
    } else {
        slot = static_cast<std::uint32_t>(handlers_.size());
        handlers_.emplace_back();
    }
    handlers_[slot].handler = &handler;
    return {slot, handlers_[slot].generation};
}

void EventLoop::remove_completion_handler(CompletionTag tag) noexcept {
    if (live_handler(tag) == nullptr) {
        return;
    }
    HandlerSlot& slot = handlers_[tag.slot];
    slot.handler = nullptr;
    // The next handler in this slot gets a new generation: the old tag matches nothing.
    slot.generation = (slot.generation + 1) & op_data::generation_mask;
    free_handler_slots_.push_back(tag.slot);
}

CompletionHandler* EventLoop::live_handler(CompletionTag tag) noexcept {
    if (tag.slot >= handlers_.size()) {
        return nullptr;
    }
    const HandlerSlot& slot = handlers_[tag.slot];
    return slot.generation == (tag.generation & op_data::generation_mask) ? slot.handler : nullptr;
}

void EventLoop::post(CompletionTag tag, OpCode op, int result) { posted_.push_back({tag, op, result}); }

std::size_t EventLoop::complete(std::span<const Completion> done) {
    std::size_t calls = 0;
    for (const Completion& completion : done) {
        // Looked up for each completion: an earlier callback may have removed this handler.
        CompletionHandler* handler = nullptr;
        if (op_data::from_handler(completion.data)) {
            handler = live_handler(op_data::tag(completion.data));
        }
        if (handler != nullptr) {
            handler->on_completion(op_data::op(completion.data), backend_->describe(completion));
            ++calls;
        }
        backend_->finished(completion, handler != nullptr);
    }
    return calls;
}

std::size_t EventLoop::run_posted() {
    // Posted by posted work: delivered in the next iteration, so this is bounded.
    std::vector<Posted> work;
    work.swap(posted_);
    std::size_t calls = 0;
    for (const Posted& item : work) {
        if (CompletionHandler* handler = live_handler(item.tag)) {
            handler->on_completion(item.op, CompletionInfo{item.result, false, {}});
            ++calls;
        }
    }
    if (posted_.empty()) {
        work.clear();
        posted_.swap(work);  // keeps the capacity for the next iteration
    }
    return calls;
}

std::optional<std::chrono::milliseconds> EventLoop::wait_bound(std::optional<std::chrono::milliseconds> max_wait) {
    if (!deferred_.empty() || !posted_.empty()) {
        return std::chrono::milliseconds(0);
    }
    std::optional<std::chrono::milliseconds> bound = max_wait;
    if (const auto deadline = timers_.next_deadline()) {
        // Rounded up: a sub-millisecond remainder rounded down to 0 would spin until it passes.
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
        const auto until_timer = std::max(left, std::chrono::milliseconds(0));
        bound = bound ? std::min(*bound, until_timer) : until_timer;
    }
    return bound;
}

std::size_t EventLoop::dispatch(std::span<const Readiness> ready) {
    std::size_t calls = 0;
    for (const Readiness& event : ready) {
        // Slots are looked up again before each callback: an earlier callback may have unwatched,
        // closed or re-watched this descriptor, or grown slots_ (moving every Slot).
        Slot* slot = live_slot(event.fd);
        if (slot == nullptr) {
            continue;
        }
        IoHandler* const handler = slot->handler;
        if (event.readable && wants_read(slot->interest)) {
            handler->on_readable();
            ++calls;
            if (!event.writable) {
                continue;  // the usual event: nothing more to look up
            }
            slot = live_slot(event.fd);
        }
        if (slot != nullptr && slot->handler == handler && event.writable && wants_write(slot->interest)) {
            handler->on_writable();
            ++calls;
        }
    }
    return calls;
}

std::size_t EventLoop::run_deferred() {
    // Work deferred by deferred work runs in the next iteration, so this is bounded.
    std::vector<std::function<void()>> work;
    work.swap(deferred_);
    for (auto& item : work) {
        item();
    }
    return work.size();
}

void LoopStats::record(std::size_t events_this_wait) noexcept {
    ++waits;
    events += events_this_wait;
    std::size_t bucket = 0;
    while (bucket < bucket_bounds.size() && events_this_wait > bucket_bounds[bucket]) {
        ++bucket;
    }
    ++waits_in_bucket[bucket];
}

LoopStats& LoopStats::operator+=(const LoopStats& other) noexcept {
    waits += other.waits;
    events += other.events;
    for (std::size_t i = 0; i < waits_in_bucket.size(); ++i) {
        waits_in_bucket[i] += other.waits_in_bucket[i];
    }
    return *this;
}

Result<std::size_t> EventLoop::run_once(std::optional<std::chrono::milliseconds> max_wait) {
    auto ready = backend_->wait(wait_bound(max_wait));
    if (!ready) {
        return std::move(ready).error();
    }
    ++batch_;
    now_ = Clock::now();
    batch_events_ = ready->size() + backend_->completions().size();
    stats_.record(batch_events_);
    std::size_t calls = dispatch(*ready);
    // Asked for again after the readiness callbacks, as before the count was kept: a span taken
    // earlier would rely on those callbacks never touching the backend's completion storage.
    calls += complete(backend_->completions());
    calls += run_posted();
    calls += timers_.run_due(now_);
    calls += run_deferred();
    return calls;
}

Result<void> EventLoop::run() {
    while (!stop_requested_) {
        if (auto step = run_once(); !step) {
            stop_requested_ = false;
            return std::move(step).error();
        }
    }
    stop_requested_ = false;
    return {};
}

}  // namespace echoplex
