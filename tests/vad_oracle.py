"""Oracles for the Silero VAD tests (test_vad.py), reusable by other tests (e.g. vad_filter
parity with faster-whisper): Silero ONNX exports -> our safetensors tensor names, and silero-vad's
streaming ONNX graph run window by window with onnxruntime."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np

SR = 16000
WIN = 512

OURS = ["stft_conv.weight", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight",
        "conv3.bias", "conv4.weight", "conv4.bias", "lstm_cell.weight_ih", "lstm_cell.weight_hh",
        "lstm_cell.bias_ih", "lstm_cell.bias_hh", "final_conv.weight", "final_conv.bias"]


# ----------------------------------------------------------------------------- oracles

def onnx_weights(path) -> dict:
    """Our tensor names -> arrays, from a Silero ONNX export: silero-vad's graphs (PyTorch
    LSTMCell layout) or the sequence exports (ONNX LSTM: gates i, o, f, c; biases concatenated)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in m.graph.initializer}
    out = {}
    out["stft_conv.weight"] = next(v for k, v in init.items() if k.endswith("forward_basis_buffer"))
    for i in range(4):
        for suf in ("weight", "bias"):
            (k,) = [k for k in init if k.endswith(f".{i}.reparam_conv.{suf}")
                    or k == f"encoder.conv_layers.{i}.{suf}" or k == f"encoder.{i}.{suf}"]
            out[f"conv{i + 1}.{suf}"] = init[k]
    for suf in ("weight", "bias"):
        (k,) = [k for k in init if k.endswith(f"decoder.decoder.2.{suf}") or k in (f"decoder.conv1d.{suf}", f"output.{suf}")]
        out[f"final_conv.{suf}"] = init[k]
    cell = {k.split(".")[-1]: v for k, v in init.items() if k.split(".")[-1] in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    if cell:
        out.update({f"lstm_cell.{k}": v for k, v in cell.items()})
    else:
        (lstm,) = [n for n in m.graph.node if n.op_type == "LSTM"]
        w, r, b = (init[x] for x in lstm.input[1:4])

        def torch_order(a):  # ONNX i, o, f, c -> PyTorch i, f, g, o
            i, o, f, c = np.split(a, 4, axis=0)
            return np.concatenate([i, f, c, o], 0)

        out["lstm_cell.weight_ih"], out["lstm_cell.weight_hh"] = torch_order(w[0]), torch_order(r[0])
        out["lstm_cell.bias_ih"], out["lstm_cell.bias_hh"] = torch_order(b[0, :512]), torch_order(b[0, 512:])
    assert sorted(out) == sorted(OURS)
    return out


_OP15_NAMES = {"model.stft.forward_basis_buffer": "stft_conv.weight",
               **{f"model.encoder.{i}.reparam_conv.{s}": f"conv{i + 1}.{s}" for i in range(4) for s in ("weight", "bias")},
               **{f"model.decoder.rnn.{s}": f"lstm_cell.{s}" for s in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
               "model.decoder.decoder.2.weight": "final_conv.weight", "model.decoder.decoder.2.bias": "final_conv.bias"}


class OnnxVad:
    """silero-vad's streaming ONNX graph (input, state, sr) run window by window with
    onnxruntime, framed as silero-vad frames audio: 64 samples of context, last window padded."""

    def __init__(self, model_bytes: bytes):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        self._cache = {}

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(np.ascontiguousarray(audio, np.float32).tobytes()).digest()
        if key not in self._cache:
            self._cache[key] = self._run(audio)
        return self._cache[key].copy()

    def _run(self, audio: np.ndarray) -> np.ndarray:
        n = len(audio)
        nw = -(-n // WIN)
        a = np.zeros(nw * WIN, np.float32)
        a[:n] = audio
        ctx = np.zeros(64, np.float32)
        state = np.zeros((2, 1, 128), np.float32)
        sr = np.array(SR, np.int64)
        out = np.empty(nw, np.float32)
        for i in range(nw):
            w = a[i * WIN:(i + 1) * WIN]
            p, state = self.session.run(None, {"input": np.concatenate([ctx, w])[None], "state": state, "sr": sr})
            out[i] = p[0, 0]
            ctx = w[-64:]
        return out


def silero_data_dir() -> Path | None:
    """silero_vad/data of the installed silero-vad package (found without importing it), or None."""
    try:
        dist = importlib.metadata.distribution("silero-vad")
    except importlib.metadata.PackageNotFoundError:
        return None
    d = Path(str(dist.locate_file("silero_vad/data")))
    return d if (d / "silero_vad_16k.safetensors").is_file() else None


def faster_whisper_weights(path) -> None:
    """Writes faster-whisper's bundled Silero model (silero_vad_v6.onnx) as a safetensors file
    speechcore.vad.SileroVad loads: its chunks then equal faster-whisper's vad_filter's."""
    from faster_whisper.utils import get_assets_path
    from safetensors.numpy import save_file

    save_file(onnx_weights(Path(get_assets_path()) / "silero_vad_v6.onnx"), str(path))


def shipped_weights_onnx_model(data_dir: Path) -> bytes:
    """silero-vad's official 16 kHz graph (silero_vad_16k_op15.onnx) with the package's
    silero_vad_16k.safetensors weights in place of its own, serialized for onnxruntime."""
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    weights = load_file(str(data_dir / "silero_vad_16k.safetensors"))
    m = onnx.load(str(data_dir / "silero_vad_16k_op15.onnx"))
    seen = set()
    for init in m.graph.initializer:
        name = _OP15_NAMES[init.name]
        assert weights[name].shape == tuple(init.dims)
        init.CopyFrom(numpy_helper.from_array(weights[name], init.name))
        seen.add(name)
    assert seen == set(OURS)
    return m.SerializeToString()
