// ByteQueue: a FIFO of bytes in fixed-size blocks borrowed from a BlockPool, exported as iovecs
// for writev/sendmsg. Blocks move between queues without copying (splice), and an empty queue
// holds no block, so an idle connection costs no buffer memory.
//
//   chunks_:  (consumed slots) [ block | begin..end ] [ block | begin..end ] ...
//                    head_ -----^ next byte out                  ^ next byte in (tail space follows)
//
// The chunks live in a vector with a moving head rather than a std::deque: an empty deque still
// allocates a 576-byte map and node, which was most of an idle connection's memory; an empty
// vector allocates nothing, and a drained one keeps its few slots for the next message.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace echoplex {

// Recycles blocks so the steady state allocates nothing. Single-threaded, like the loop.
class BlockPool {
public:
    static constexpr std::size_t block_size = 16 * 1024;
    using Block = std::array<char, block_size>;

    // Keeps at most `max_free` idle blocks; the rest go back to the allocator.
    explicit BlockPool(std::size_t max_free = 256) : max_free_(max_free) {}

    std::unique_ptr<Block> take();
    void give(std::unique_ptr<Block> block) noexcept;
    std::size_t free_blocks() const noexcept { return free_.size(); }

private:
    std::size_t max_free_;
    std::vector<std::unique_ptr<Block>> free_;
};

class ByteQueue {
public:
    explicit ByteQueue(BlockPool& pool) : pool_(&pool) {}
    ByteQueue(ByteQueue&& other) noexcept
        : pool_(other.pool_),
          chunks_(std::move(other.chunks_)),
          head_(std::exchange(other.head_, 0)),
          size_(std::exchange(other.size_, 0)) {
        other.chunks_.clear();
    }
    ByteQueue& operator=(ByteQueue&&) = delete;  // would drop this queue's blocks without returning them
    ~ByteQueue() { clear(); }

    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    // Blocks held, counting a tail block with no data yet.
    std::size_t blocks() const noexcept { return chunks_.size() - head_; }

    void append(std::string_view bytes);

    // Free space at the tail to read into (takes a block if there is none); commit(n) makes
    // the first n bytes of it part of the queue. Use release_unused_tail() after a read that
    // got nothing, so an idle queue keeps no block.
    std::span<char> prepare();
    // The same for a scatter read: up to `max_iov` iovecs of tail space totalling at most
    // `max_bytes`, taking blocks as needed; returns the count. commit(n) then fills them in order.
    std::size_t prepare(iovec* iov, std::size_t max_iov, std::size_t max_bytes);
    void commit(std::size_t n) noexcept;
    // Gives back every block at the tail that holds no data.
    void release_unused_tail() noexcept;

    // Moves every byte of `other` to the end of this queue, block by block, without copying.
    void splice_from(ByteQueue& other);

    // Fills up to `max_iov` iovecs covering at most `max_bytes` from the front; returns the count.
    std::size_t peek(iovec* iov, std::size_t max_iov, std::size_t max_bytes) const noexcept;
    // Drops n bytes from the front (n <= size()), returning emptied blocks to the pool.
    void consume(std::size_t n) noexcept;
    void clear() noexcept;

    // Copies everything out (for tests and small replies).
    std::string to_string() const;

private:
    struct Chunk {
        std::unique_ptr<BlockPool::Block> block;
        std::uint32_t begin = 0;
        std::uint32_t end = 0;
    };
    bool no_chunks() const noexcept { return head_ == chunks_.size(); }
    std::span<Chunk> live() noexcept { return {chunks_.data() + head_, chunks_.size() - head_}; }
    std::span<const Chunk> live() const noexcept { return {chunks_.data() + head_, chunks_.size() - head_}; }

    BlockPool* pool_;
    std::vector<Chunk> chunks_;  // chunks_[head_..] hold the bytes; earlier slots are spent
    std::size_t head_ = 0;
    std::size_t prepared_ = 0;  // the first chunk of the space the last prepare() offered
    std::size_t size_ = 0;
};

}  // namespace echoplex
