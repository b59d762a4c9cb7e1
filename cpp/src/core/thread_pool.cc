#include "core/thread_pool.h"

#include <algorithm>

namespace speechcore::core {

int ThreadPool::hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads <= 0 ? hardware_threads() : num_threads) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int) {
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lock(state_mutex_);
    wake_.wait(lock, [&] { return stop_ || (generation_ != seen && next_chunk_ < job_chunks_); });
    if (stop_) return;
    seen = generation_;
    while (next_chunk_ < job_chunks_) {
      const int c = next_chunk_++;
      const auto* job = job_;
      const int64_t b = c * job_chunk_, e = std::min(job_n_, b + job_chunk_);
      lock.unlock();
      try {
        (*job)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> g(state_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      lock.lock();
      if (--pending_ == 0) done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int chunks = static_cast<int>(std::min<int64_t>(num_threads_, (n + grain - 1) / grain));
  if (chunks <= 1 || workers_.empty()) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> job_lock(mutex_);
  const int64_t chunk = (n + chunks - 1) / chunks;
  chunks = static_cast<int>((n + chunk - 1) / chunk);
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    job_ = &fn;
    job_n_ = n;
    job_chunk_ = chunk;
    job_chunks_ = chunks;
    next_chunk_ = 0;
    pending_ = chunks;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  std::unique_lock<std::mutex> lock(state_mutex_);
  while (next_chunk_ < job_chunks_) {
    const int c = next_chunk_++;
    const int64_t b = c * chunk, e = std::min(n, b + chunk);
    lock.unlock();
    try {
      fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> g(state_mutex_);
      if (!error_) error_ = std::current_exception();
    }
    lock.lock();
    --pending_;
  }
  done_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
  std::exception_ptr err = error_;
  error_ = nullptr;
  lock.unlock();
  if (err) std::rethrow_exception(err);
}

}  // namespace speechcore::core
