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

std::span<char> ByteQueue::prepare() {
    if (no_chunks() || chunks_.back().end == BlockPool::block_size) {
        chunks_.push_back(Chunk{pool_->take(), 0, 0});
    }
    prepared_ = chunks_.size() - 1;
    Chunk& tail = chunks_.back();
    return {tail.block->data() + tail.end, BlockPool::block_size - tail.end};
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
        chunks_.push_back(Chunk{pool_->take(), 0, 0});
        const std::size_t len = std::min(BlockPool::block_size, max_bytes - offered);
        iov[count++] = iovec{chunks_.back().block->data(), len};
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
        pool_->give(std::move(chunks_.back().block));
        chunks_.pop_back();
    }
}

void ByteQueue::splice_from(ByteQueue& other) {
    other.release_unused_tail();
    for (auto& chunk : other.live()) {
        chunks_.push_back(std::move(chunk));
    }
    size_ += other.size_;
    other.chunks_.clear();
    other.head_ = 0;
    other.size_ = 0;
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
        iov[count++] = iovec{chunk.block->data() + chunk.begin, len};
        max_bytes -= len;
    }
    return count;
}

void ByteQueue::consume(std::size_t n) noexcept {
    assert(n <= size_);
    size_ -= n;
    while (n > 0) {
        Chunk& front = chunks_[head_];
        const std::size_t len = std::min<std::size_t>(front.end - front.begin, n);
        front.begin += static_cast<std::uint32_t>(len);
        n -= len;
        if (front.begin == front.end) {
            pool_->give(std::move(front.block));
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
    for (auto& chunk : live()) {
        pool_->give(std::move(chunk.block));
    }
    chunks_.clear();  // keeps the capacity: a drained queue fills again without allocating
    head_ = 0;
    size_ = 0;
}

std::string ByteQueue::to_string() const {
    std::string out;
    out.reserve(size_);
    for (const Chunk& chunk : live()) {
        out.append(chunk.block->data() + chunk.begin, chunk.end - chunk.begin);
    }
    return out;
}

}  // namespace echoplex
