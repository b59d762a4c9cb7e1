// Encoding: added-token splitting, the GPT-2 pre-tokenizer and byte-level BPE.
#include <queue>
#include <vector>

#include "io/tokenizer.h"
#include "io/unicode.h"

namespace speechcore::io {

namespace {

using unicode::CharClass;

struct Char {
  uint32_t offset;  // byte offset of the character in the text
  CharClass cls;
  bool is_space_char;  // U+0020 exactly (the optional " " prefix of the regex)
};

// One BPE symbol in a doubly linked list over the piece.
struct Symbol {
  int id;
  int prev;
  int next;
  bool alive;
};

struct Candidate {
  int rank;
  int pos;  // index of the left symbol
  int left;
  int right;
  int new_id;
  // Min-heap on (rank, pos): the lowest-ranked merge first, leftmost among equals.
  bool operator<(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

// Splits chars[begin, end) into pieces with the semantics of the GPT-2 regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (alternatives tried in order at each position). Calls emit(first_char, end_char).
template <typename Emit>
void split_pieces(const std::string& text, const std::vector<Char>& chars, Emit&& emit) {
  const size_t n = chars.size();
  auto byte_at = [&](size_t i) { return text[chars[i].offset]; };
  size_t i = 0;
  while (i < n) {
    // Contractions (ASCII apostrophe, case-sensitive).
    if (byte_at(i) == '\'' && i + 1 < n) {
      const char a = byte_at(i + 1);
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        const char b = byte_at(i + 2);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    // " ?X+" for X = letters, numbers, other (not space/letter/number).
    size_t start = i;
    size_t j = i;
    if (chars[j].is_space_char && j + 1 < n && chars[j + 1].cls != CharClass::kSpace) ++j;
    const CharClass run = chars[j].cls;
    if (run != CharClass::kSpace) {
      while (j < n && chars[j].cls == run) ++j;
      emit(start, j);
      i = j;
      continue;
    }
    // Whitespace: \s+(?!\S) leaves the last space before a non-space to the next piece;
    // otherwise \s+ takes the single space.
    while (j < n && chars[j].cls == CharClass::kSpace) ++j;
    if (j < n && j - i >= 2) --j;
    emit(start, j);
    i = j;
  }
}

// Characters of text[begin, end) with their classes.
std::vector<Char> classify_chars(const std::string& text, size_t begin, size_t end) {
  std::vector<Char> chars;
  chars.reserve(end - begin);
  size_t pos = begin;
  while (pos < end) {
    uint32_t cp;
    size_t len = unicode::decode_utf8(text, pos, cp);
    CharClass cls;
    if (len == 0 || pos + len > end) {  // ill-formed byte: a character of its own
      len = 1;
      cls = CharClass::kOther;
      cp = 0xFFFD;
    } else {
      cls = unicode::classify(cp);
    }
    chars.push_back(Char{static_cast<uint32_t>(pos), cls, cp == 0x20});
    pos += len;
  }
  return chars;
}

}  // namespace

int Tokenizer::match_added(const std::string& text, size_t pos, size_t& len) const {
  int best = -1;
  len = 0;
  for (const AddedToken& a : added_) {
    if (a.content.size() > len && text.compare(pos, a.content.size(), a.content) == 0) {
      best = a.id;
      len = a.content.size();
    }
  }
  return best;
}

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 4);
  size_t segment = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    const int added = added_first_byte_[static_cast<unsigned char>(text[pos])]
                          ? match_added(text, pos, len)
                          : -1;
    if (added >= 0) {
      encode_ordinary(text, segment, pos, ids);
      ids.push_back(added);
      pos += len;
      segment = pos;
    } else {
      ++pos;
    }
  }
  encode_ordinary(text, segment, text.size(), ids);
  return ids;
}

std::vector<std::string> Tokenizer::pre_tokenize(const std::string& text) {
  const std::vector<Char> chars = classify_chars(text, 0, text.size());
  std::vector<std::string> pieces;
  split_pieces(text, chars, [&](size_t first, size_t last) {
    const size_t b = chars[first].offset;
    const size_t e = last < chars.size() ? chars[last].offset : text.size();
    pieces.push_back(text.substr(b, e - b));
  });
  return pieces;
}

void Tokenizer::encode_ordinary(const std::string& text, size_t begin, size_t end,
                                std::vector<int>& out) const {
  if (begin >= end) return;
  const std::vector<Char> chars = classify_chars(text, begin, end);
  split_pieces(text, chars, [&](size_t first, size_t last) {
    const size_t b = chars[first].offset;
    const size_t e = last < chars.size() ? chars[last].offset : end;
    bpe(text, b, e, out);
  });
}

void Tokenizer::bpe(const std::string& text, size_t begin, size_t end,
                    std::vector<int>& out) const {
  const int n = static_cast<int>(end - begin);
  if (n == 1) {
    out.push_back(byte_to_id_[static_cast<unsigned char>(text[begin])]);
    return;
  }
  std::vector<Symbol> symbols(n);
  for (int i = 0; i < n; ++i)
    symbols[i] = Symbol{byte_to_id_[static_cast<unsigned char>(text[begin + i])], i - 1,
                        i + 1 < n ? i + 1 : -1, true};
  std::priority_queue<Candidate> queue;
  auto push_pair = [&](int left_pos) {
    const int right_pos = symbols[left_pos].next;
    if (right_pos < 0) return;
    const int l = symbols[left_pos].id, r = symbols[right_pos].id;
    const auto it = merges_.find(pair_key(l, r));
    if (it != merges_.end())
      queue.push(Candidate{it->second.rank, left_pos, l, r, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0 || left.id != top.left) continue;  // stale
    Symbol& right = symbols[left.next];
    if (right.id != top.right) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace speechcore::io
