// Paged self-attention KV cache bookkeeping: fixed-size blocks handed out from one pool, a
// block table per sequence. Metadata only (CPU): the runner maps block ids onto its memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace speechcore::engine {

// A pool of `num_blocks` block ids, 0..num_blocks-1.
class BlockPool {
 public:
  explicit BlockPool(int num_blocks);
  int num_blocks() const { return num_blocks_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  // Appends n blocks to `out`, all or nothing: false (out untouched) when fewer are free.
  bool allocate(int n, std::vector<int>& out);
  // Returns blocks to the pool (each must be allocated; kInternal otherwise).
  void release(const std::vector<int>& blocks);

 private:
  int num_blocks_;
  std::vector<int> free_;       // stack of free ids (lowest id on top: deterministic tables)
  std::vector<char> in_use_;
};

// Block tables of sequences over one pool, `block_size` token positions per block.
class KVCacheManager {
 public:
  KVCacheManager(int num_blocks, int block_size);
  int block_size() const { return block_size_; }
  int blocks_for(int positions) const { return (positions + block_size_ - 1) / block_size_; }
  int num_free() const { return pool_.num_free(); }
  int num_blocks() const { return pool_.num_blocks(); }
  int num_used() const { return pool_.num_blocks() - pool_.num_free(); }
  // Grows sequence `id`'s table to hold `positions` positions in each of its `rows` rows (beams
  // or sampled candidates of one window; always the same count for one id); false (nothing
  // allocated) when the pool cannot; a table already large enough is left as it is. The table
  // is block-major: block k of row r is table[k * rows + r].
  bool reserve(uint64_t id, int positions, int rows = 1);
  // Blocks `id` would need to grow to `positions` positions in each of `rows` rows.
  int blocks_missing(uint64_t id, int positions, int rows = 1) const;
  void release(uint64_t id);  // frees the sequence's blocks (no-op for an unknown id)
  const std::vector<int>& table(uint64_t id) const;  // empty for an unknown id
  size_t sequences() const { return tables_.size(); }

 private:
  BlockPool pool_;
  int block_size_;
  std::unordered_map<uint64_t, std::vector<int>> tables_;
};

}  // namespace speechcore::engine
