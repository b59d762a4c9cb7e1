// Whisper's byte-level BPE tokenizer, loaded from a Hugging Face `tokenizer.json` (the file
// shipped with CTranslate2 and Hugging Face Whisper checkpoints). Immutable after loading, so
// one instance can be shared by any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace speechcore::io {

class Tokenizer {
 public:
  // Parses tokenizer.json (model.vocab, model.merges, added_tokens). Throws
  // Error(kInvalidModel, "<path>: ...") when the file is missing, unreadable, not JSON, or lacks
  // what a Whisper tokenizer needs (vocab, merges, the 256 byte tokens, <|endoftext|>,
  // <|startoftranscript|>, <|notimestamps|>).
  static std::shared_ptr<const Tokenizer> from_file(const std::string& tokenizer_json);
  // Same from the JSON text; `source_name` prefixes error messages.
  static std::shared_ptr<const Tokenizer> from_json(const std::string& json_text,
                                                    const std::string& source_name);

  // Number of ids tokenizer.json defines (vocab + added tokens: max id + 1). Timestamp tokens
  // are not in tokenizer.json; see model_vocab_size().
  int vocab_size() const { return static_cast<int>(id_to_token_.size()); }
  // Whisper's logits size: timestamp_begin() + 1501 timestamps (0.00 .. 30.00 s), or
  // vocab_size() if larger. 51864 for English-only models, 51865 (51866 for large-v3) otherwise.
  int model_vocab_size() const;

  // UTF-8 text of the ids below eot(); ids >= eot() (special and timestamp tokens) are
  // skipped, as faster-whisper's Tokenizer.decode. Byte sequences that are not valid UTF-8
  // become U+FFFD per maximal ill-formed subpart, exactly as HF `tokenizers`.
  // Throws kInvalidArgument on a negative id.
  std::string decode(const std::vector<int>& ids) const;
  // Like faster-whisper's decode_with_timestamps: ids >= timestamp_begin() become "<|1.23|>",
  // other special tokens are skipped.
  std::string decode_with_timestamps(const std::vector<int>& ids) const;

  // Token ids of `text` (UTF-8), no special tokens added. As HF `tokenizers`
  // (encode(text, add_special_tokens=False)): added-token strings written in the text (such as
  // "<|en|>") map to their ids (leftmost-longest match), the rest is split with the GPT-2
  // pre-tokenizer regex and encoded with byte-level BPE by merge rank. Bytes that are not
  // valid UTF-8 are each treated as a punctuation-like character.
  std::vector<int> encode(const std::string& text) const;

  // The GPT-2 pre-tokenizer alone: the pieces (byte strings) `text` splits into before BPE
  // (added tokens are not recognized here). Exposed for tests and debugging.
  static std::vector<std::string> pre_tokenize(const std::string& text);

  int token_to_id(const std::string& token) const;  // -1 if absent
  std::string id_to_token(int id) const;            // raw token string; "" if out of range

  // Special tokens, found by their strings (-1 when the tokenizer lacks one; eot, sot and
  // no_timestamps always exist). no_speech is <|nospeech|> or else <|nocaptions|>.
  int eot() const { return eot_; }
  int sot() const { return sot_; }
  int translate() const { return translate_; }
  int transcribe() const { return transcribe_; }
  int sot_lm() const { return sot_lm_; }
  int sot_prev() const { return sot_prev_; }
  int no_speech() const { return no_speech_; }
  int no_timestamps() const { return no_timestamps_; }
  int timestamp_begin() const { return no_timestamps_ + 1; }

  // Multilingual iff model_vocab_size() >= 51865 (openai-whisper's n_vocab rule; CTranslate2's
  // is_multilingual applies the same rule to vocabulary.txt).
  bool multilingual() const { return multilingual_; }
  // "<|en|>" -> id; -1 if the tokenizer has no such language token.
  int language_token(const std::string& code) const;
  // Language codes of the language tokens (between sot and translate), in id order. English-only
  // models return {"en"}, like faster-whisper's supported_languages.
  std::vector<std::string> language_codes() const;
  // The ids of language_codes()' tokens, in the same order.
  std::vector<int> language_tokens() const;
  // The code of a language token ("fr" for <|fr|>'s id); "" for any other id.
  std::string language_code(int token) const;
  // faster-whisper's sot_sequence: [sot] for English-only models (arguments ignored, as
  // faster-whisper does); [sot, <|language|>, <|task|>] for multilingual ones. Throws
  // kInvalidArgument for an unknown language or a task other than transcribe/translate.
  std::vector<int> sot_sequence(const std::string& language, const std::string& task) const;
  // Whisper's non_speech_tokens (sorted ids of speaker tags / non-speech symbols), used for
  // suppress_tokens=[-1]. Same construction as openai-whisper and faster-whisper.
  std::vector<int> non_speech_tokens() const;

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

 private:
  struct AddedToken {
    std::string content;
    int id;
    bool special;
  };
  struct MergeInfo {
    int rank;
    int new_id;
  };

  Tokenizer() = default;
  void load(const std::string& json_text);
  void find_special_tokens();
  void encode_ordinary(const std::string& text, size_t begin, size_t end,
                       std::vector<int>& out) const;
  void bpe(const std::string& text, size_t begin, size_t end, std::vector<int>& out) const;
  // Leftmost-longest added token starting exactly at `pos`; -1 if none. Sets `len`.
  int match_added(const std::string& text, size_t pos, size_t& len) const;
  static uint64_t pair_key(int left, int right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  std::string source_;                              // file name, for messages
  std::vector<std::string> id_to_token_;            // raw token strings
  std::vector<std::string> id_to_bytes_;            // decoded bytes of each token
  std::vector<uint8_t> is_special_;                 // added token flagged special
  std::unordered_map<std::string, int> token_to_id_;
  std::unordered_map<uint64_t, MergeInfo> merges_;  // (left id, right id) -> rank, merged id
  int byte_to_id_[256] = {};
  std::vector<AddedToken> added_;                   // sorted by content
  bool added_first_byte_[256] = {};

  int eot_ = -1, sot_ = -1, translate_ = -1, transcribe_ = -1, sot_lm_ = -1, sot_prev_ = -1;
  int no_speech_ = -1, no_timestamps_ = -1;
  bool multilingual_ = false;
  std::vector<std::pair<std::string, int>> languages_;  // (code, id) in id order
};

}  // namespace speechcore::io
