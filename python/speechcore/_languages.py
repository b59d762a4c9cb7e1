"""Language codes Whisper models know (code -> English name), for early, helpful validation."""

from __future__ import annotations

import difflib
from typing import Dict, Optional

# Whisper's language tokens, in the order of the multilingual vocabulary.
_TABLE = """
en english|zh chinese|de german|es spanish|ru russian|ko korean|fr french|ja japanese|
pt portuguese|tr turkish|pl polish|ca catalan|nl dutch|ar arabic|sv swedish|it italian|
id indonesian|hi hindi|fi finnish|vi vietnamese|he hebrew|uk ukrainian|el greek|ms malay|
cs czech|ro romanian|da danish|hu hungarian|ta tamil|no norwegian|th thai|ur urdu|
hr croatian|bg bulgarian|lt lithuanian|la latin|mi maori|ml malayalam|cy welsh|sk slovak|
te telugu|fa persian|lv latvian|bn bengali|sr serbian|az azerbaijani|sl slovenian|
kn kannada|et estonian|mk macedonian|br breton|eu basque|is icelandic|hy armenian|
ne nepali|mn mongolian|bs bosnian|kk kazakh|sq albanian|sw swahili|gl galician|
mr marathi|pa punjabi|si sinhala|km khmer|sn shona|yo yoruba|so somali|af afrikaans|
oc occitan|ka georgian|be belarusian|tg tajik|sd sindhi|gu gujarati|am amharic|
yi yiddish|lo lao|uz uzbek|fo faroese|ht haitian creole|ps pashto|tk turkmen|
nn nynorsk|mt maltese|sa sanskrit|lb luxembourgish|my myanmar|bo tibetan|tl tagalog|
mg malagasy|as assamese|tt tatar|haw hawaiian|ln lingala|ha hausa|ba bashkir|
jw javanese|su sundanese|yue cantonese
"""

LANGUAGES: Dict[str, str] = dict(
    entry.strip().split(" ", 1) for entry in _TABLE.replace("\n", "").split("|")
)
_BY_NAME: Dict[str, str] = {name: code for code, name in LANGUAGES.items()}


def normalize_language(value: str) -> Optional[str]:
    """Returns the code for a language code or English name (any case); None if unknown."""
    key = value.strip().lower()
    if key in LANGUAGES:
        return key
    return _BY_NAME.get(key)


def suggest_language(value: str) -> Optional[str]:
    """The closest known code or name to `value`, for "did you mean" messages."""
    key = value.strip().lower()
    matches = difflib.get_close_matches(key, list(LANGUAGES) + list(_BY_NAME), n=1, cutoff=0.6)
    return matches[0] if matches else None
