"""Regenerates the language-detection fixtures lang_*.wav (needs espeak-ng and scipy):

    python tests/data/make_language_clips.py

Each sentence is synthesized by espeak-ng (22,050 Hz), resampled to 16 kHz with
scipy.signal.resample_poly and written as 16-bit mono WAV. The tests only read the WAVs.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SENTENCES = {
    "fr": ("fr-fr", "Bonjour, je m'appelle Marie et j'habite à Paris depuis dix ans."),
    "de": ("de", "Guten Morgen, ich heiße Thomas und wohne seit zehn Jahren in Berlin."),
    "es": ("es", "Buenos días, me llamo Carlos y vivo en Madrid desde hace diez años."),
}


def main() -> None:
    here = Path(__file__).resolve().parent
    for code, (voice, text) in SENTENCES.items():
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
            audio, rate = sf.read(str(raw), dtype="float32")
        assert rate == 22050, rate
        audio16 = resample_poly(audio, 320, 441).astype(np.float32)
        sf.write(str(here / f"lang_{code}.wav"), np.clip(audio16, -1.0, 1.0), 16000, subtype="PCM_16")


if __name__ == "__main__":
    main()
