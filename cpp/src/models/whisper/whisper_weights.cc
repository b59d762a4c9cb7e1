#include "models/whisper/whisper_weights.h"

#include <sys/stat.h>

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "core/status.h"
#include "io/checkpoint.h"
#include "io/json.h"

namespace speechcore::models::whisper {

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A weight spec being checked: every expected (name, shape) is recorded first, all
// mismatches are reported together, and only then are tensors converted.
class SpecChecker {
 public:
  SpecChecker(const io::CheckpointReader& reader, std::string source)
      : reader_(reader), source_(std::move(source)) {}

  void expect(const std::string& name, const Shape& shape) {
    if (!reader_.has(name)) {
      problems_.push_back("missing weight '" + name + "' (expected shape " + shape_str(shape) + ")");
      return;
    }
    const io::TensorInfo& info = reader_.info(name);
    if (info.shape != shape)
      problems_.push_back("weight '" + name + "' has shape " + shape_str(info.shape) +
                          ", expected " + shape_str(shape));
    else if (info.dtype != DType::kFloat32 && info.dtype != DType::kFloat16 &&
             info.dtype != DType::kBFloat16)
      problems_.push_back("weight '" + name + "' has dtype " + dtype_name(info.dtype) +
                          ", expected a float type");
  }

  void verify() const {
    if (problems_.empty()) return;
    std::ostringstream os;
    os << source_ << " does not match the Whisper weight spec: ";
    for (size_t i = 0; i < problems_.size() && i < 5; ++i) os << (i ? "; " : "") << problems_[i];
    if (problems_.size() > 5) os << "; and " << problems_.size() - 5 << " more";
    throw Error(ErrorCode::kInvalidModel, os.str());
  }

  Tensor f32(const std::string& name) const { return reader_.get_float32(name); }

 private:
  const io::CheckpointReader& reader_;
  std::string source_;
  std::vector<std::string> problems_;
};

// Concatenates float32 tensors along dim 0.
Tensor cat0(const std::vector<Tensor>& parts) {
  int64_t rows = 0;
  for (const auto& p : parts) rows += p.dim(0);
  Shape shape = parts[0].shape();
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, DType::kFloat32);
  char* dst = static_cast<char*>(out.raw());
  for (const auto& p : parts) {
    std::memcpy(dst, p.raw(), p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

int64_t read_scalar_int(const io::CheckpointReader& r, const std::string& name) {
  const std::optional<int64_t> v = r.scalar_int(name);
  SC_CHECK(v.has_value(), ErrorCode::kInvalidModel, r.path(), ": missing scalar '", name, "'");
  return *v;
}

std::vector<int> int_list(const io::JsonValue* v) {
  std::vector<int> out;
  if (v && v->is_array())
    for (const auto& x : v->as_array())
      if (x.is_number()) out.push_back(static_cast<int>(x.as_int()));
  return out;
}

std::vector<std::pair<int, int>> pair_list(const io::JsonValue* v) {
  std::vector<std::pair<int, int>> out;
  if (v && v->is_array())
    for (const auto& x : v->as_array())
      if (x.is_array() && x.size() == 2)
        out.emplace_back(static_cast<int>(x.as_array()[0].as_int()), static_cast<int>(x.as_array()[1].as_int()));
  return out;
}

io::JsonValue read_config(const std::string& path) {
  try {
    return io::read_json_file(path);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kNotFound) throw;
    throw Error(ErrorCode::kInvalidModel, std::string("corrupt config: ") + e.what());
  }
}

// ---------------------------------------------------------------- CTranslate2 --------
WhisperWeights load_ct2(const std::string& dir) {
  const std::string bin = dir + "/model.bin";
  std::unique_ptr<io::CheckpointReader> reader = io::open_ctranslate2(bin);
  const io::CheckpointReader& r = *reader;
  WhisperWeights w;
  w.format = "ctranslate2";
  WhisperConfig& c = w.config;

  for (const char* key : {"decoder/embeddings/weight", "encoder/conv1/weight", "encoder/num_heads",
                          "decoder/num_heads", "encoder/position_encodings/encodings",
                          "decoder/position_encodings/encodings"})
    SC_CHECK(r.has(key), ErrorCode::kInvalidModel, bin, ": not a Whisper model (missing '", key, "')");
  const Shape emb = r.info("decoder/embeddings/weight").shape;
  const Shape conv1 = r.info("encoder/conv1/weight").shape;
  SC_CHECK(emb.size() == 2 && conv1.size() == 3, ErrorCode::kInvalidModel, bin, ": unexpected embedding/conv shapes");
  c.vocab_size = static_cast<int>(emb[0]);
  c.d_model = static_cast<int>(emb[1]);
  c.n_mels = static_cast<int>(conv1[1]);
  c.encoder_heads = static_cast<int>(read_scalar_int(r, "encoder/num_heads"));
  c.decoder_heads = static_cast<int>(read_scalar_int(r, "decoder/num_heads"));
  c.n_audio_ctx = static_cast<int>(r.info("encoder/position_encodings/encodings").shape.at(0));
  c.n_text_ctx = static_cast<int>(r.info("decoder/position_encodings/encodings").shape.at(0));
  while (r.has("encoder/layer_" + std::to_string(c.encoder_layers) + "/ffn/linear_0/weight")) ++c.encoder_layers;
  while (r.has("decoder/layer_" + std::to_string(c.decoder_layers) + "/ffn/linear_0/weight")) ++c.decoder_layers;
  SC_CHECK(c.encoder_layers > 0 && c.decoder_layers > 0 && c.encoder_heads > 0 && c.decoder_heads > 0 &&
               c.d_model % c.encoder_heads == 0 && c.d_model % c.decoder_heads == 0,
           ErrorCode::kInvalidModel, bin, ": inconsistent Whisper dimensions (d_model ", c.d_model,
           ", heads ", c.encoder_heads, "/", c.decoder_heads, ", layers ", c.encoder_layers, "/",
           c.decoder_layers, ")");

  const std::string cfg_path = dir + "/config.json";
  if (file_exists(cfg_path)) {
    const io::JsonValue cfg = read_config(cfg_path);
    c.suppress_ids = int_list(cfg.find("suppress_ids"));
    c.suppress_ids_begin = int_list(cfg.find("suppress_ids_begin"));
    c.alignment_heads = pair_list(cfg.find("alignment_heads"));
  }

  const int64_t d = c.d_model, f = 4 * d;
  SpecChecker spec(r, bin);
  auto expect_ln = [&](const std::string& p) {
    spec.expect(p + "/gamma", {d});
    spec.expect(p + "/beta", {d});
  };
  auto expect_ffn = [&](const std::string& p) {
    expect_ln(p + "/layer_norm");
    spec.expect(p + "/linear_0/weight", {f, d});
    spec.expect(p + "/linear_0/bias", {f});
    spec.expect(p + "/linear_1/weight", {d, f});
    spec.expect(p + "/linear_1/bias", {d});
  };
  auto expect_self = [&](const std::string& p) {
    expect_ln(p + "/layer_norm");
    spec.expect(p + "/linear_0/weight", {3 * d, d});
    spec.expect(p + "/linear_0/bias", {3 * d});
    spec.expect(p + "/linear_1/weight", {d, d});
    spec.expect(p + "/linear_1/bias", {d});
  };
  spec.expect("encoder/conv1/weight", {d, c.n_mels, 3});
  spec.expect("encoder/conv1/bias", {d});
  spec.expect("encoder/conv2/weight", {d, d, 3});
  spec.expect("encoder/conv2/bias", {d});
  spec.expect("encoder/position_encodings/encodings", {c.n_audio_ctx, d});
  expect_ln("encoder/layer_norm");
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string p = "encoder/layer_" + std::to_string(i);
    expect_self(p + "/self_attention");
    expect_ffn(p + "/ffn");
  }
  spec.expect("decoder/embeddings/weight", {c.vocab_size, d});
  spec.expect("decoder/position_encodings/encodings", {c.n_text_ctx, d});
  expect_ln("decoder/layer_norm");
  for (int i = 0; i < c.decoder_layers; ++i) {
    const std::string p = "decoder/layer_" + std::to_string(i);
    expect_self(p + "/self_attention");
    expect_ln(p + "/attention/layer_norm");
    spec.expect(p + "/attention/linear_0/weight", {d, d});
    spec.expect(p + "/attention/linear_0/bias", {d});
    spec.expect(p + "/attention/linear_1/weight", {2 * d, d});
    spec.expect(p + "/attention/linear_1/bias", {2 * d});
    spec.expect(p + "/attention/linear_2/weight", {d, d});
    spec.expect(p + "/attention/linear_2/bias", {d});
    expect_ffn(p + "/ffn");
  }
  spec.verify();

  auto load_ln = [&](const std::string& p, Tensor& g, Tensor& b) {
    g = spec.f32(p + "/gamma");
    b = spec.f32(p + "/beta");
  };
  auto load_ffn = [&](const std::string& p, FfnWeights& o) {
    load_ln(p + "/layer_norm", o.ln_gamma, o.ln_beta);
    o.fc1_w = spec.f32(p + "/linear_0/weight");
    o.fc1_b = spec.f32(p + "/linear_0/bias");
    o.fc2_w = spec.f32(p + "/linear_1/weight");
    o.fc2_b = spec.f32(p + "/linear_1/bias");
  };
  auto load_self = [&](const std::string& p, AttentionWeights& o) {
    load_ln(p + "/layer_norm", o.ln_gamma, o.ln_beta);
    o.qkv_w = spec.f32(p + "/linear_0/weight");
    o.qkv_b = spec.f32(p + "/linear_0/bias");
    o.out_w = spec.f32(p + "/linear_1/weight");
    o.out_b = spec.f32(p + "/linear_1/bias");
  };
  w.conv1_w = spec.f32("encoder/conv1/weight");
  w.conv1_b = spec.f32("encoder/conv1/bias");
  w.conv2_w = spec.f32("encoder/conv2/weight");
  w.conv2_b = spec.f32("encoder/conv2/bias");
  w.enc_pos = spec.f32("encoder/position_encodings/encodings");
  load_ln("encoder/layer_norm", w.enc_ln_gamma, w.enc_ln_beta);
  w.enc_layers.resize(c.encoder_layers);
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string p = "encoder/layer_" + std::to_string(i);
    load_self(p + "/self_attention", w.enc_layers[i].self_attn);
    load_ffn(p + "/ffn", w.enc_layers[i].ffn);
  }
  w.tok_emb = spec.f32("decoder/embeddings/weight");
  w.dec_pos = spec.f32("decoder/position_encodings/encodings");
  load_ln("decoder/layer_norm", w.dec_ln_gamma, w.dec_ln_beta);
  w.dec_layers.resize(c.decoder_layers);
  for (int i = 0; i < c.decoder_layers; ++i) {
    const std::string p = "decoder/layer_" + std::to_string(i);
    DecoderLayer& L = w.dec_layers[i];
    load_self(p + "/self_attention", L.self_attn);
    load_ln(p + "/attention/layer_norm", L.cross_attn.ln_gamma, L.cross_attn.ln_beta);
    L.cross_attn.qkv_w = spec.f32(p + "/attention/linear_0/weight");
    L.cross_attn.qkv_b = spec.f32(p + "/attention/linear_0/bias");
    L.cross_attn.kv_w = spec.f32(p + "/attention/linear_1/weight");
    L.cross_attn.kv_b = spec.f32(p + "/attention/linear_1/bias");
    L.cross_attn.out_w = spec.f32(p + "/attention/linear_2/weight");
    L.cross_attn.out_b = spec.f32(p + "/attention/linear_2/bias");
    load_ffn(p + "/ffn", L.ffn);
  }
  return w;
}

// ------------------------------------------------------------ transformers ---------
WhisperWeights load_hf(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  SC_CHECK(file_exists(cfg_path), ErrorCode::kInvalidModel, dir, ": missing config.json");
  const io::JsonValue cfg = read_config(cfg_path);
  const std::string model_type = cfg.get_string("model_type", "");
  SC_CHECK(model_type == "whisper", ErrorCode::kInvalidModel, cfg_path, ": model_type is '", model_type,
           "', expected 'whisper'");
  WhisperWeights w;
  w.format = "transformers";
  WhisperConfig& c = w.config;
  c.d_model = static_cast<int>(cfg.get_int("d_model", 0));
  c.encoder_layers = static_cast<int>(cfg.get_int("encoder_layers", 0));
  c.decoder_layers = static_cast<int>(cfg.get_int("decoder_layers", 0));
  c.encoder_heads = static_cast<int>(cfg.get_int("encoder_attention_heads", 0));
  c.decoder_heads = static_cast<int>(cfg.get_int("decoder_attention_heads", 0));
  c.vocab_size = static_cast<int>(cfg.get_int("vocab_size", 0));
  c.n_mels = static_cast<int>(cfg.get_int("num_mel_bins", 80));
  c.n_audio_ctx = static_cast<int>(cfg.get_int("max_source_positions", 1500));
  c.n_text_ctx = static_cast<int>(cfg.get_int("max_target_positions", 448));
  SC_CHECK(c.d_model > 0 && c.encoder_layers > 0 && c.decoder_layers > 0 && c.encoder_heads > 0 &&
               c.decoder_heads > 0 && c.vocab_size > 0 && c.d_model % c.encoder_heads == 0 &&
               c.d_model % c.decoder_heads == 0,
           ErrorCode::kInvalidModel, cfg_path, ": missing or inconsistent Whisper dimensions");
  const std::string gen_path = dir + "/generation_config.json";
  const io::JsonValue gen = file_exists(gen_path) ? read_config(gen_path) : io::JsonValue();
  auto pick = [&](const char* key) {
    const io::JsonValue* v = gen.find(key);
    return v ? v : cfg.find(key);
  };
  c.suppress_ids = int_list(pick("suppress_tokens"));
  c.suppress_ids_begin = int_list(pick("begin_suppress_tokens"));
  c.alignment_heads = pair_list(pick("alignment_heads"));

  std::string st_path = dir + "/model.safetensors";
  if (!file_exists(st_path)) st_path = dir + "/model.safetensors.index.json";
  std::unique_ptr<io::CheckpointReader> reader = io::open_safetensors(st_path);
  const io::CheckpointReader& r = *reader;
  const int64_t d = c.d_model, f = 4 * d;
  SpecChecker spec(r, st_path);
  auto expect_ln = [&](const std::string& p) {
    spec.expect(p + ".weight", {d});
    spec.expect(p + ".bias", {d});
  };
  auto expect_lin = [&](const std::string& p, int64_t out, int64_t in, bool bias) {
    spec.expect(p + ".weight", {out, in});
    if (bias) spec.expect(p + ".bias", {out});
  };
  auto expect_attn = [&](const std::string& p) {
    expect_lin(p + ".q_proj", d, d, true);
    expect_lin(p + ".k_proj", d, d, false);
    expect_lin(p + ".v_proj", d, d, true);
    expect_lin(p + ".out_proj", d, d, true);
  };
  const std::string E = "model.encoder", D = "model.decoder";
  spec.expect(E + ".conv1.weight", {d, c.n_mels, 3});
  spec.expect(E + ".conv1.bias", {d});
  spec.expect(E + ".conv2.weight", {d, d, 3});
  spec.expect(E + ".conv2.bias", {d});
  spec.expect(E + ".embed_positions.weight", {c.n_audio_ctx, d});
  expect_ln(E + ".layer_norm");
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string p = E + ".layers." + std::to_string(i);
    expect_attn(p + ".self_attn");
    expect_ln(p + ".self_attn_layer_norm");
    expect_lin(p + ".fc1", f, d, true);
    expect_lin(p + ".fc2", d, f, true);
    expect_ln(p + ".final_layer_norm");
  }
  spec.expect(D + ".embed_tokens.weight", {c.vocab_size, d});
  spec.expect(D + ".embed_positions.weight", {c.n_text_ctx, d});
  expect_ln(D + ".layer_norm");
  for (int i = 0; i < c.decoder_layers; ++i) {
    const std::string p = D + ".layers." + std::to_string(i);
    expect_attn(p + ".self_attn");
    expect_ln(p + ".self_attn_layer_norm");
    expect_attn(p + ".encoder_attn");
    expect_ln(p + ".encoder_attn_layer_norm");
    expect_lin(p + ".fc1", f, d, true);
    expect_lin(p + ".fc2", d, f, true);
    expect_ln(p + ".final_layer_norm");
  }
  spec.verify();

  auto zeros = [&](int64_t n) { return Tensor::zeros({n}, DType::kFloat32); };
  auto load_ln = [&](const std::string& p, Tensor& g, Tensor& b) {
    g = spec.f32(p + ".weight");
    b = spec.f32(p + ".bias");
  };
  auto load_self = [&](const std::string& p, const std::string& ln, AttentionWeights& o) {
    load_ln(ln, o.ln_gamma, o.ln_beta);
    o.qkv_w = cat0({spec.f32(p + ".q_proj.weight"), spec.f32(p + ".k_proj.weight"), spec.f32(p + ".v_proj.weight")});
    o.qkv_b = cat0({spec.f32(p + ".q_proj.bias"), zeros(d), spec.f32(p + ".v_proj.bias")});
    o.out_w = spec.f32(p + ".out_proj.weight");
    o.out_b = spec.f32(p + ".out_proj.bias");
  };
  auto load_ffn = [&](const std::string& p, FfnWeights& o) {
    load_ln(p + ".final_layer_norm", o.ln_gamma, o.ln_beta);
    o.fc1_w = spec.f32(p + ".fc1.weight");
    o.fc1_b = spec.f32(p + ".fc1.bias");
    o.fc2_w = spec.f32(p + ".fc2.weight");
    o.fc2_b = spec.f32(p + ".fc2.bias");
  };
  w.conv1_w = spec.f32(E + ".conv1.weight");
  w.conv1_b = spec.f32(E + ".conv1.bias");
  w.conv2_w = spec.f32(E + ".conv2.weight");
  w.conv2_b = spec.f32(E + ".conv2.bias");
  w.enc_pos = spec.f32(E + ".embed_positions.weight");
  load_ln(E + ".layer_norm", w.enc_ln_gamma, w.enc_ln_beta);
  w.enc_layers.resize(c.encoder_layers);
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string p = E + ".layers." + std::to_string(i);
    load_self(p + ".self_attn", p + ".self_attn_layer_norm", w.enc_layers[i].self_attn);
    load_ffn(p, w.enc_layers[i].ffn);
  }
  w.tok_emb = spec.f32(D + ".embed_tokens.weight");
  w.dec_pos = spec.f32(D + ".embed_positions.weight");
  load_ln(D + ".layer_norm", w.dec_ln_gamma, w.dec_ln_beta);
  w.dec_layers.resize(c.decoder_layers);
  for (int i = 0; i < c.decoder_layers; ++i) {
    const std::string p = D + ".layers." + std::to_string(i);
    DecoderLayer& L = w.dec_layers[i];
    load_self(p + ".self_attn", p + ".self_attn_layer_norm", L.self_attn);
    const std::string x = p + ".encoder_attn";
    load_ln(p + ".encoder_attn_layer_norm", L.cross_attn.ln_gamma, L.cross_attn.ln_beta);
    L.cross_attn.qkv_w = spec.f32(x + ".q_proj.weight");
    L.cross_attn.qkv_b = spec.f32(x + ".q_proj.bias");
    L.cross_attn.kv_w = cat0({spec.f32(x + ".k_proj.weight"), spec.f32(x + ".v_proj.weight")});
    L.cross_attn.kv_b = cat0({zeros(d), spec.f32(x + ".v_proj.bias")});
    L.cross_attn.out_w = spec.f32(x + ".out_proj.weight");
    L.cross_attn.out_b = spec.f32(x + ".out_proj.bias");
    load_ffn(p, L.ffn);
  }
  return w;
}

}  // namespace

size_t WhisperWeights::bytes() const {
  size_t n = conv1_w.nbytes() + conv1_b.nbytes() + conv2_w.nbytes() + conv2_b.nbytes() + enc_pos.nbytes() +
             enc_ln_gamma.nbytes() * 2 + tok_emb.nbytes() + dec_pos.nbytes() + dec_ln_gamma.nbytes() * 2;
  auto attn = [](const AttentionWeights& a) {
    return a.ln_gamma.nbytes() * 2 + a.qkv_w.nbytes() + a.qkv_b.nbytes() + a.kv_w.nbytes() + a.kv_b.nbytes() +
           a.out_w.nbytes() + a.out_b.nbytes();
  };
  auto ffn = [](const FfnWeights& f) {
    return f.ln_gamma.nbytes() * 2 + f.fc1_w.nbytes() + f.fc1_b.nbytes() + f.fc2_w.nbytes() + f.fc2_b.nbytes();
  };
  for (const auto& L : enc_layers) n += attn(L.self_attn) + ffn(L.ffn);
  for (const auto& L : dec_layers) n += attn(L.self_attn) + attn(L.cross_attn) + ffn(L.ffn);
  return n;
}

WhisperWeights load_whisper_weights(const std::string& model_dir) {
  struct stat st;
  SC_CHECK(::stat(model_dir.c_str(), &st) == 0, ErrorCode::kNotFound, "model directory not found: ", model_dir);
  SC_CHECK(S_ISDIR(st.st_mode), ErrorCode::kInvalidModel, "model path is not a directory: ", model_dir);
  if (file_exists(model_dir + "/model.bin")) return load_ct2(model_dir);
  if (file_exists(model_dir + "/model.safetensors") || file_exists(model_dir + "/model.safetensors.index.json"))
    return load_hf(model_dir);
  throw_error(ErrorCode::kInvalidModel, model_dir,
              ": no model weights found (expected model.bin for CTranslate2/faster-whisper, or "
              "model.safetensors for Hugging Face transformers)");
}

}  // namespace speechcore::models::whisper
