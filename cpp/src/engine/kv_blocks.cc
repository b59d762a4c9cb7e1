#include "engine/kv_blocks.h"

#include "core/status.h"

namespace speechcore::engine {

BlockPool::BlockPool(int num_blocks) : num_blocks_(num_blocks) {
  SC_CHECK(num_blocks >= 1, ErrorCode::kInvalidArgument, "the KV cache needs at least one block, got ", num_blocks);
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int i = num_blocks - 1; i >= 0; --i) free_.push_back(i);
  in_use_.assign(static_cast<size_t>(num_blocks), 0);
}

bool BlockPool::allocate(int n, std::vector<int>& out) {
  SC_ASSERT(n >= 0);
  if (n > num_free()) return false;
  for (int i = 0; i < n; ++i) {
    const int b = free_.back();
    free_.pop_back();
    in_use_[b] = 1;
    out.push_back(b);
  }
  return true;
}

void BlockPool::release(const std::vector<int>& blocks) {
  for (int b : blocks) {
    SC_CHECK(b >= 0 && b < num_blocks_ && in_use_[b], ErrorCode::kInternal, "KV block ", b,
             " released but not allocated");
    in_use_[b] = 0;
    free_.push_back(b);
  }
}

KVCacheManager::KVCacheManager(int num_blocks, int block_size) : pool_(num_blocks), block_size_(block_size) {
  SC_CHECK(block_size >= 1, ErrorCode::kInvalidArgument, "KV block size must be >= 1, got ", block_size);
}

int KVCacheManager::blocks_missing(uint64_t id, int positions, int rows) const {
  SC_CHECK(rows >= 1, ErrorCode::kInvalidArgument, "a sequence needs at least one row, got ", rows);
  auto it = tables_.find(id);
  const int have = it == tables_.end() ? 0 : static_cast<int>(it->second.size());
  SC_CHECK(have % rows == 0, ErrorCode::kInternal, "sequence ", id, " holds ", have, " blocks, not a multiple of its ",
           rows, " rows");
  const int need = blocks_for(positions) * rows;
  return need > have ? need - have : 0;
}

bool KVCacheManager::reserve(uint64_t id, int positions, int rows) {
  const int missing = blocks_missing(id, positions, rows);
  if (missing == 0) {
    tables_.try_emplace(id);
    return true;
  }
  std::vector<int>& t = tables_[id];
  if (!pool_.allocate(missing, t)) {
    if (t.empty()) tables_.erase(id);
    return false;
  }
  return true;
}

void KVCacheManager::release(uint64_t id) {
  auto it = tables_.find(id);
  if (it == tables_.end()) return;
  pool_.release(it->second);
  tables_.erase(it);
}

const std::vector<int>& KVCacheManager::table(uint64_t id) const {
  static const std::vector<int> kEmpty;
  auto it = tables_.find(id);
  return it == tables_.end() ? kEmpty : it->second;
}

}  // namespace speechcore::engine
