"""pbmlx's CLIP tokenizer against transformers' CLIPTokenizer (the reference), id for id.

Two vocabularies:
- the real CLIP BPE (OpenAI's ``bpe_simple_vocab_16e6.txt.gz``, MIT) when an installed package
  ships it (``open_clip_torch`` or ``clip``; ``pip install --no-deps open_clip_torch`` is enough)
  or ``PBMLX_CLIP_BPE`` points to it: turned into ``vocab.json`` + ``merges.txt`` exactly as
  CLIP's checkpoints on the hub lay them out (49408 tokens, bos 49406, eos 49407);
- a BPE vocabulary trained here with ``tokenizers`` in the same layout, always available.
Each is saved beside the tokenizer configs real checkpoints carry (SD 1.5 / InstructPix2Pix,
SDXL's second tokenizer that pads with "!", transformers 5 ``save_pretrained``).
Tolerance: none, token ids must be equal.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)
from pbmlx.errors import PbmlxError
from pbmlx.models.tokenizer import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LEN = 77

INSTRUCTIONS = [
    "make it winter",
    "add a red scarf to the dog",
    "Remove the person on the left and fill in the background naturally.",
    "Replace the coffee cup with a glass of orange juice",
    "Change the color of the car to matte black",
    "Transform the photo into a Pixar-like 3D character render, keeping the pose",
    "Turn the sky into a dramatic golden-hour sunset; keep the buildings unchanged",
    "Convert the scene to a snowy winter day with frost on the trees",
    "apply a strong Van Gogh 'Starry Night' style to the whole image",
    'Add the text "OPEN 24/7" on the shop sign in bold red letters',
    "translate the sign's text into French",
    "Make the woman smile and give her round glasses",
    "zoom in 2x on the cat's face",
    "outpaint: extend the beach to the right by ~30%",
    "LEGO minifigure version of the man, on a plain white background",
]
CORPUS = [
    *INSTRUCTIONS,
    "",
    " ",
    "a photo of a cat",
    "Hello, world!!! What's up?? (nothing...) [ok] {x} <tag> @user #hashtag",
    "it's they're we've I'm you'll he'd IT'S THEY'RE don't can't won't",
    "1 23 456 7890 3.14159 1,000,000 $19.99 50% 2024-01-31 12:30pm 4K 1080p",
    "café naïve résumé Ångström Zoë façade crème brûlée",
    "e\u0301 versus \u00e9 (combining accent vs precomposed)",
    "ΟΔΟΣ ΣΟΦΙΑ Straße İstanbul ǅemal ﬁne ligature",
    "你好世界 東京タワー 한국어 문장 русский текст עברית العربية हिन्दी",
    "emoji 🎉🐶🌨️ 👩‍👩‍👧 ✨ flags 🇫🇷",
    "   leading, trailing and    inner   spaces   ",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u3000ideographic space\u2003em space",
    "zero\u200bwidth\ufeffbom\u00adsoft hyphen \x00nul \x07bell",
    "<|startoftext|>already<|endoftext|> <|ENDOFTEXT|> <|StartOfText|> tokens",
    "wow! so good!! really!!!",
    "mixed CASE WoRdS and snake_case and kebab-case and CamelCase",
    "https://example.com/path?q=1&r=2 user@mail.org C:\\Windows\\path",
    "a " * 100,  # 100 words: truncated at 75 text tokens
    "supercalifragilisticexpialidocious " * 20,
    "the quick brown fox jumps over the lazy dog. " * 12,
]

# -- vocabularies ---------------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's byte -> printable-unicode table, in CLIP's vocabulary order.

    Printable latin-1 bytes map to themselves and come first; the other 68 bytes map to
    U+0100.. in byte order and follow.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def _write_clip_layout(folder: Path, merges: list[tuple[str, str]]) -> Path:
    """vocab.json + merges.txt laid out like CLIP's: bytes, bytes+</w>, merges, bos, eos."""
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges), BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _real_bpe_file() -> Path | None:
    env = os.environ.get("PBMLX_CLIP_BPE")
    if env and Path(env).is_file():
        return Path(env)
    for package in ("open_clip", "clip"):
        # find_spec locates the package without importing it (and so without torch).
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / "bpe_simple_vocab_16e6.txt.gz"
            if candidate.is_file():
                return candidate
    return None


@pytest.fixture(scope="session")
def real_vocab(tmp_path_factory) -> Path:
    source = _real_bpe_file()
    if source is None:
        pytest.skip(
            "the real CLIP BPE file is not installed (pip install --no-deps open_clip_torch)"
        )
    lines = gzip.decompress(source.read_bytes()).decode("utf-8").split("\n")
    # CLIP keeps the first 49152 - 256 - 2 merges (line 0 is a header).
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    folder = _write_clip_layout(tmp_path_factory.mktemp("real") / "tokenizer", merges)
    assert len(json.loads((folder / "vocab.json").read_text(encoding="utf-8"))) == 49408
    return folder


@pytest.fixture(scope="session")
def trained_vocab(tmp_path_factory) -> Path:
    """A ~2k-token BPE trained with `tokenizers` on CLIP-normalized text, in CLIP's layout."""
    from tokenizers import Tokenizer, trainers
    from tokenizers import pre_tokenizers as pt
    from tokenizers.models import BPE

    probe = CLIPTokenizer({"a": 0, BOS: 1, EOS: 2}, [])
    tok = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = probe._tok.normalizer
    tok.pre_tokenizer = probe._tok.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        min_frequency=1,
        initial_alphabet=pt.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3 + [s.lower() for s in INSTRUCTIONS], trainer)
    merges = [tuple(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    assert len(merges) > 300
    return _write_clip_layout(tmp_path_factory.mktemp("trained") / "tokenizer", merges)


# -- the tokenizer configs real checkpoints carry ---------------------------------------------


def _legacy_added(content: str) -> dict:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def _sd15_configs(folder: Path) -> None:
    """SD 1.5 / timbrooks/instruct-pix2pix style (2022-23 transformers): pads with eos."""
    config = {
        "add_prefix_space": False,
        "bos_token": _legacy_added(BOS),
        "do_lower_case": True,
        "eos_token": _legacy_added(EOS),
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": EOS,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": _legacy_added(EOS),
    }
    special = {
        "bos_token": {k: v for k, v in _legacy_added(BOS).items() if k != "__type"},
        "eos_token": {k: v for k, v in _legacy_added(EOS).items() if k != "__type"},
        "pad_token": EOS,
        "unk_token": {k: v for k, v in _legacy_added(EOS).items() if k != "__type"},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def _sdxl2_configs(folder: Path) -> None:
    """SDXL tokenizer_2 / SD 2 style (transformers >= 4.34): pads with "!" (id 0)."""

    def entry(content: str, normalized: bool) -> dict:
        return {
            "content": content,
            "lstrip": False,
            "normalized": normalized,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }

    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "0": entry("!", False),
            "49406": entry(BOS, True),
            "49407": entry(EOS, False),
        },
        "bos_token": BOS,
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": EOS,
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": "!",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": EOS,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


VARIANTS = ["bare", "sd15", "sdxl2", "saved"]


def _variant(base: Path, variant: str, tmp_path: Path) -> Path:
    folder = tmp_path / variant / "tokenizer"
    folder.mkdir(parents=True)
    if variant == "saved":
        # What transformers 5 save_pretrained writes (tokenizer.json, no vocab.json/merges.txt):
        # the layout of a tiny checkpoint built in tests.
        transformers = pytest.importorskip("transformers")
        transformers.CLIPTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
        assert not (folder / "vocab.json").exists()
        return folder
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((base / name).read_bytes())
    if variant == "sd15":
        _sd15_configs(folder)
    elif variant == "sdxl2":
        _sdxl2_configs(folder)
    return folder


@functools.cache
def _reference(folder: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(str(folder))


@functools.cache
def _ours(folder: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_folder(folder)


def _reference_ids(folder: Path, texts: list[str]) -> np.ndarray:
    ref = _reference(folder)
    # Exactly the call of diffusers' StableDiffusionInstructPix2PixPipeline._encode_prompt.
    out = ref(texts, padding="max_length", max_length=MAX_LEN, truncation=True)
    return np.array(out["input_ids"], dtype=np.int64)


def _assert_same(folder: Path, texts: list[str]) -> None:
    got = _ours(folder).encode(texts)
    want = _reference_ids(folder, texts)
    assert got.dtype == np.int32
    assert got.shape == (len(texts), MAX_LEN)
    bad = [i for i in range(len(texts)) if not np.array_equal(got[i], want[i])]
    assert not bad, [(texts[i], got[i].tolist(), want[i].tolist()) for i in bad[:3]]


# -- parity with transformers -------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_real_vocab_matches_transformers(real_vocab, variant, tmp_path):
    _assert_same(_variant(real_vocab, variant, tmp_path), CORPUS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_trained_vocab_matches_transformers(trained_vocab, variant, tmp_path):
    _assert_same(_variant(trained_vocab, variant, tmp_path), CORPUS)


@pytest.mark.parametrize("variant", ["sd15", "sdxl2"])
def test_special_token_flags_match_transformers(trained_vocab, variant, tmp_path):
    """The raw-text matching flags of special tokens are the ones transformers derives."""
    transformers = pytest.importorskip("transformers")
    folder = _variant(trained_vocab, variant, tmp_path)
    want = transformers.CLIPTokenizer.from_pretrained(str(folder)).backend_tokenizer
    got = CLIPTokenizer.from_folder(folder)._tok

    def flags(tok):
        return {
            i: (t.content, t.normalized, t.lstrip, t.rstrip, t.single_word, t.special)
            for i, t in tok.get_added_tokens_decoder().items()
        }

    assert flags(got) == flags(want)


_printable = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120
)
_wordy = st.lists(
    st.sampled_from(["make", "it", "WINTER", "dog's", "!", "  ", "café", "42", "🎉", "東京", "\t"]),
    max_size=60,
).map("".join)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(texts=st.lists(st.one_of(_printable, _wordy), min_size=1, max_size=4))
def test_random_text_matches_transformers(trained_vocab, texts):
    """Arbitrary unicode (all categories but surrogates) and word soups, against the reference."""
    _assert_same(trained_vocab, texts)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(texts=st.lists(st.one_of(_printable, _wordy), min_size=1, max_size=4))
def test_random_text_matches_transformers_real_vocab(real_vocab, texts):
    _assert_same(real_vocab, texts)


# -- contract without the reference ---------------------------------------------------------------


def test_known_ids_of_real_clip(real_vocab):
    """Published CLIP ids: 'a photo of a cat' -> 320 1125 539 320 2368; bos 49406, eos 49407."""
    ids = CLIPTokenizer.from_folder(real_vocab).encode(["a photo of a cat", ""])
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (ids[0, 7:] == 49407).all()
    assert ids[1, :2].tolist() == [49406, 49407]


def test_layout_padding_and_truncation(trained_vocab, tmp_path):
    tok = CLIPTokenizer.from_folder(_variant(trained_vocab, "sdxl2", tmp_path))
    assert tok.pad_token == "!" and tok.pad_id == 0
    ids = tok.encode(["make it winter", "", "a " * 300])
    assert ids.shape == (3, MAX_LEN) and ids.dtype == np.int32
    assert (ids[:, 0] == tok.bos_id).all()
    row = ids[0].tolist()
    end = row.index(tok.eos_id)
    assert all(t == tok.pad_id for t in row[end + 1 :])
    assert ids[1, :2].tolist() == [tok.bos_id, tok.eos_id] and (ids[1, 2:] == 0).all()
    # 300 words: bos + 75 kept + eos, no padding.
    assert ids[2, -1] == tok.eos_id and tok.eos_id not in ids[2, 1:-1].tolist()


def test_single_string_and_determinism(trained_vocab):
    tok = CLIPTokenizer.from_folder(trained_vocab)
    once = tok.encode("Add a red scarf")
    again = CLIPTokenizer.from_folder(trained_vocab).encode(["Add a red scarf"])
    assert once.shape == (1, MAX_LEN)
    np.testing.assert_array_equal(once, again)


def test_checkpoint_root_is_accepted(trained_vocab, tmp_path):
    root = tmp_path / "ckpt"
    _variant(trained_vocab, "sd15", root)  # -> root/sd15/tokenizer
    tok = CLIPTokenizer.from_folder(root / "sd15")
    assert tok.max_length == 77 and tok.pad_token == EOS


def test_model_max_length_is_read(trained_vocab, tmp_path):
    folder = _variant(trained_vocab, "sd15", tmp_path)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 16
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert CLIPTokenizer.from_folder(folder).encode(["x " * 40]).shape == (1, 16)


def test_bad_folders_raise_pbmlx_errors(trained_vocab, tmp_path):
    with pytest.raises(PbmlxError, match="does not exist"):
        CLIPTokenizer.from_folder(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PbmlxError, match=r"neither vocab\.json"):
        CLIPTokenizer.from_folder(empty)

    folder = _variant(trained_vocab, "sd15", tmp_path)
    (folder / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(PbmlxError, match=r"tokenizer_config\.json"):
        CLIPTokenizer.from_folder(folder)

    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<|pad|>"}))
    (folder / "special_tokens_map.json").unlink()
    with pytest.raises(PbmlxError, match=re.escape("pad token '<|pad|>'")):
        CLIPTokenizer.from_folder(folder)

    (folder / "tokenizer_config.json").unlink()
    (folder / "merges.txt").write_text("#version: 0.2\nnot_in_vocab x y z\n")
    with pytest.raises(PbmlxError, match="malformed"):
        CLIPTokenizer.from_folder(folder)

    with pytest.raises(PbmlxError, match="Prompt 1"):
        CLIPTokenizer.from_folder(trained_vocab).encode(["ok", None])  # type: ignore[list-item]


def test_runtime_needs_no_torch_or_transformers():
    code = (
        "import sys, pbmlx.models.tokenizer; "
        "bad = {'torch', 'diffusers', 'transformers'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
