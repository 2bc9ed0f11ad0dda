// ByteQueue and BlockPool implementation.
#include "echoplex/io/byte_queue.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string>

namespace echoplex {

std::unique_ptr<BlockPool::Block> BlockPool::take() {
    if (free_.empty()) {
        // Not value-initialised: the bytes are always written before they are read.
        return std::unique_ptr<Block>(new Block);
    }
    auto block = std::move(free_.back());
    free_.pop_back();
    return block;
}

void BlockPool::give(std::unique_ptr<Block> block) noexcept {
    if (block && free_.size() < max_free_) {
        free_.push_back(std::move(block));
    }
}

void ByteQueue::append(std::string_view bytes) {
    while (!bytes.empty()) {
        const std::span<char> space = prepare();
        const std::size_t n = std::min(space.size(), bytes.size());
        std::memcpy(space.data(), bytes.data(), n);
        commit(n);
        bytes.remove_prefix(n);
    }
}

void ByteQueue::append_lent(std::span<const char> bytes) {
    assert(pool_->lender() != nullptr && !bytes.empty());
    Chunk chunk;
    // The lender's buffer is only read through this chunk (has_room() is false for it).
    chunk.memory = const_cast<char*>(bytes.data());
    chunk.end = static_cast<std::uint32_t>(bytes.size());
    chunk.lent = 1;
    chunks_.push_back(chunk);
    size_ += bytes.size();
}

void ByteQueue::append_borrowed(std::span<const char> bytes) {
    assert(!bytes.empty() && bytes.size() < (std::size_t{1} << 30));
    Chunk chunk;
    chunk.memory = const_cast<char*>(bytes.data());  // only read through this chunk, as a lent one
    chunk.end = static_cast<std::uint32_t>(bytes.size());
    chunk.borrowed = 1;
    chunks_.push_back(chunk);
    size_ += bytes.size();
    has_borrowed_ = true;
}

void ByteQueue::copy_borrowed() {
    // Rare (a protocol left part of what one read brought): the queue is rebuilt in order, each
    // borrowed chunk copied as appends fill blocks, the others moved.
    std::vector<Chunk> old;
    old.swap(chunks_);
    const std::size_t first = std::exchange(head_, 0);
    size_ = 0;
    has_borrowed_ = false;
    for (std::size_t i = first; i < old.size(); ++i) {
        const Chunk& chunk = old[i];
        if (chunk.borrowed != 0) {
            append({chunk.data() + chunk.begin, chunk.end - chunk.begin});
        } else {
            chunks_.push_back(chunk);
            size_ += chunk.end - chunk.begin;
        }
    }
}

void ByteQueue::add_block() {
    Chunk chunk;
    chunk.memory = pool_->take().release();
    chunks_.push_back(chunk);
}

void ByteQueue::release(Chunk& chunk) noexcept {
    if (chunk.lent != 0) {
        pool_->lender()->give_back(static_cast<const char*>(chunk.memory));
    } else if (chunk.borrowed == 0) {
        pool_->give(std::unique_ptr<BlockPool::Block>(static_cast<BlockPool::Block*>(chunk.memory)));
    }
    chunk.memory = nullptr;
}

void ByteQueue::take_chunk(Chunk& chunk) {
    const std::uint32_t len = chunk.end - chunk.begin;
    if (chunk.borrowed != 0) {
        append({chunk.data() + chunk.begin, len});  // borrowed memory never leaves its queue
        chunk.memory = nullptr;
        return;
    }
    if (chunk.lent != 0 && !no_chunks() && chunks_.back().has_room() &&
        (BlockPool::block_size - chunks_.back().end >= len || chunks_.back().end < BlockPool::block_size / 2)) {
        // A lent buffer behind a block that it would leave less than half full is copied there
        // (and on into new blocks) and given back. Moved, queues that mix short appends with lent
        // buffers (a stamp before each echoed line) would hold a block per few bytes; copied,
        // every block but the first and the last stays at least half full, as with appends.
        append({chunk.data() + chunk.begin, len});
        release(chunk);
        return;
    }
    chunks_.push_back(chunk);  // the block (or lent buffer) changes hands
    size_ += len;
    chunk.memory = nullptr;
}

void ByteQueue::own_front() {
    const Chunk lent = chunks_[head_];
    std::vector<Chunk> copy;
    for (std::uint32_t at = lent.begin; at < lent.end;) {
        Chunk chunk;
        chunk.memory = pool_->take().release();
        const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(BlockPool::block_size, lent.end - at));
        std::memcpy(chunk.data(), lent.data() + at, n);
        chunk.end = n;
        copy.push_back(chunk);
        at += n;
    }
    release(chunks_[head_]);
    const auto front = chunks_.begin() + static_cast<std::ptrdiff_t>(head_);
    chunks_.insert(chunks_.erase(front), copy.begin(), copy.end());
}

std::span<char> ByteQueue::prepare() {
    if (no_chunks() || !chunks_.back().has_room()) {
        add_block();
    }
    prepared_ = static_cast<std::uint32_t>(chunks_.size() - 1);
    Chunk& tail = chunks_.back();
    return {tail.data() + tail.end, BlockPool::block_size - tail.end};
}

std::size_t ByteQueue::prepare(iovec* iov, std::size_t max_iov, std::size_t max_bytes) {
    if (max_iov == 0 || max_bytes == 0) {
        return 0;
    }
    const std::span<char> first = prepare();
    std::size_t count = 0;
    std::size_t offered = std::min(first.size(), max_bytes);
    iov[count++] = iovec{first.data(), offered};
    while (count < max_iov && offered < max_bytes) {
        add_block();
        const std::size_t len = std::min(BlockPool::block_size, max_bytes - offered);
        iov[count++] = iovec{chunks_.back().data(), len};
        offered += len;
    }
    return count;
}

void ByteQueue::commit(std::size_t n) noexcept {
    size_ += n;
    for (std::size_t i = prepared_; n > 0; ++i) {
        assert(i < chunks_.size());
        Chunk& chunk = chunks_[i];
        const std::size_t len = std::min<std::size_t>(BlockPool::block_size - chunk.end, n);
        chunk.end += static_cast<std::uint32_t>(len);
        n -= len;
    }
}

void ByteQueue::release_unused_tail() noexcept {
    while (!no_chunks() && chunks_.back().begin == chunks_.back().end) {
        release(chunks_.back());
        chunks_.pop_back();
    }
}

void ByteQueue::splice_from(ByteQueue& other) {
    other.release_unused_tail();
    assert(other.pool_->lender() == pool_->lender() || other.pool_ == pool_);
    for (Chunk& chunk : other.live()) {
        take_chunk(chunk);
    }
    other.chunks_.clear();
    other.head_ = 0;
    other.size_ = 0;
    other.has_borrowed_ = false;
}

std::size_t ByteQueue::splice_from(ByteQueue& other, std::size_t max_bytes) {
    if (other.size_ <= max_bytes) {
        const std::size_t all = other.size_;
        splice_from(other);
        return all;
    }
    assert(other.pool_->lender() == pool_->lender() || other.pool_ == pool_);
    // other holds more than max_bytes, so it never runs empty here.
    std::size_t moved = 0;
    while (moved < max_bytes) {
        Chunk& front = other.chunks_[other.head_];
        const std::size_t len = front.end - front.begin;
        if (front.lent != 0 && len <= max_bytes - moved) {
            take_chunk(front);  // a lent buffer that fits goes whole
            ++other.head_;
            other.size_ -= len;
            moved += len;
            continue;
        }
        if (front.lent != 0) {
            other.own_front();  // one that does not fit is never split
        }
        // Blocks are copied, as appends fill them: moving a part-read block would leave the
        // copy of the next part a block of its own.
        const Chunk& owned = other.chunks_[other.head_];
        const std::size_t n = std::min<std::size_t>(owned.end - owned.begin, max_bytes - moved);
        append({owned.data() + owned.begin, n});
        other.consume(n);
        moved += n;
    }
    return moved;
}

std::size_t ByteQueue::peek(iovec* iov, std::size_t max_iov, std::size_t max_bytes) const noexcept {
    std::size_t count = 0;
    for (const Chunk& chunk : live()) {
        if (count == max_iov || max_bytes == 0) {
            break;
        }
        const std::size_t len = std::min<std::size_t>(chunk.end - chunk.begin, max_bytes);
        if (len == 0) {
            continue;
        }
        iov[count++] = iovec{chunk.data() + chunk.begin, len};
        max_bytes -= len;
    }
    return count;
}

void ByteQueue::consume(std::size_t n) noexcept {
    assert(n <= size_);
    if (n == size_) {
        clear();  // the common case (an echo the kernel took whole): nothing to walk
        return;
    }
    size_ -= n;
    while (n > 0) {
        Chunk& front = chunks_[head_];
        const std::size_t len = std::min<std::size_t>(front.end - front.begin, n);
        front.begin += static_cast<std::uint32_t>(len);
        n -= len;
        if (front.begin == front.end) {
            release(front);
            ++head_;
        }
    }
    // Spent slots are reclaimed once they are the majority, so a queue that never drains
    // completely (a steady stream) does not grow its vector without bound.
    if (head_ > 16 && head_ * 2 > chunks_.size()) {
        chunks_.erase(chunks_.begin(), chunks_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
    }
    // A fully consumed queue keeps nothing, not even a partly filled last block.
    if (size_ == 0) {
        clear();
    }
}

void ByteQueue::clear() noexcept {
    for (std::size_t i = head_; i < chunks_.size(); ++i) {
        if (chunks_[i].borrowed == 0) {
            release(chunks_[i]);
        }
    }
    chunks_.clear();  // keeps the capacity: a drained queue fills again without allocating
    head_ = 0;
    size_ = 0;
    has_borrowed_ = false;
}

std::string ByteQueue::to_string() const {
    std::string out;
    out.reserve(size_);
    for (const Chunk& chunk : live()) {
        out.append(chunk.data() + chunk.begin, chunk.end - chunk.begin);
    }
    return out;
}

}  // namespace echoplex
