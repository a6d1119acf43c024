"""CLIP's text tokenizer: prompts -> ``(B, 77)`` int32 token ids, as the checkpoint's own does.

Built on the maintained HF ``tokenizers`` library (byte-level BPE); pbmlx writes no BPE of its
own and needs neither torch nor transformers at run time. The result is token-for-token what
transformers' ``CLIPTokenizer`` gives for the same files with ``padding="max_length",
max_length=77, truncation=True`` (what diffusers' StableDiffusionInstructPix2PixPipeline calls):

    ids = [bos] + bpe(pre_tokenize(normalize(text)))[: max_length - 2] + [eos] + [pad] * rest

- normalize: Unicode NFC, every whitespace run -> one space, lowercase;
- pre_tokenize: CLIP's word pattern (the two special-token literals, English contractions,
  letter runs, single digits, punctuation runs; whitespace dropped), then the GPT-2 byte-to-
  unicode mapping (so every byte sequence is representable and nothing is ever unknown);
- bpe: merges from ``merges.txt`` in rank order; a word's last symbol carries ``</w>``.

Which special tokens and which pad token a checkpoint uses is read from its files, never
assumed: SD 1.5 and InstructPix2Pix pad with ``<|endoftext|>`` (id 49407), SD 2 / SDXL's second
tokenizer pad with ``!`` (id 0). Special-token literals typed in a prompt are matched the way
transformers matches them (see :func:`_added_tokens`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from pbmlx.errors import PbmlxError

DEFAULT_MAX_LENGTH = 77  # CLIP ViT-L/14's text context (max_position_embeddings)
# transformers writes model_max_length = int(1e30) for "no limit"; any value this large is unset.
_UNSET_MAX_LENGTH = 1_000_000
# The default special tokens of CLIP (transformers' CLIPTokenizer defaults).
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
# CLIP's word pattern (from the original CLIP tokenizer), in the `tokenizers` regex dialect.
_WORD_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)
_END_OF_WORD = "</w>"
_NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass(frozen=True)
class SpecialToken:
    """A token matched in the raw prompt before BPE (``normalized``: matched after normalizing)."""

    content: str
    normalized: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    special: bool = True


class CLIPTokenizer:
    """Byte-level BPE tokenizer of CLIP text encoders; see the module docstring for the contract.

    ``vocab`` maps token strings to ids; ``merges`` are BPE merge pairs in rank order.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        bos_token: str = BOS,
        eos_token: str = EOS,
        pad_token: str = EOS,
        unk_token: str = EOS,
        max_length: int = DEFAULT_MAX_LENGTH,
        added_tokens: Sequence[SpecialToken] = (),
        source: str = "the vocabulary",
    ) -> None:
        if max_length < 2:
            raise PbmlxError(f"max_length {max_length} of {source} leaves no room for bos and eos.")
        for name, token in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token)):
            if token not in vocab:
                raise PbmlxError(f"The {name} token {token!r} is not in {source}.")
        self.max_length = max_length
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.bos_id, self.eos_id, self.pad_id = vocab[bos_token], vocab[eos_token], vocab[pad_token]

        model = BPE(
            vocab=dict(vocab),
            merges=list(merges),
            unk_token=unk_token,
            continuing_subword_prefix="",
            end_of_word_suffix=_END_OF_WORD,
            fuse_unk=False,
            dropout=None,
        )
        tok = Tokenizer(model)
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                # invert=True: the pattern says what to keep; everything between (spaces) goes.
                pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        # Added before the post-processor so their ids are known; later entries override
        # earlier ones with the same content (as in the `tokenizers` library itself).
        tok.add_tokens(
            [
                AddedToken(
                    t.content,
                    normalized=t.normalized,
                    lstrip=t.lstrip,
                    rstrip=t.rstrip,
                    single_word=t.single_word,
                    special=t.special,
                )
                for t in added_tokens
            ]
        )
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A {eos_token}",
            special_tokens=[(bos_token, self.bos_id), (eos_token, self.eos_id)],
        )
        # Truncation counts the two special tokens the post-processor adds, so the kept
        # text is max_length - 2 tokens and eos always closes the sequence.
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=pad_token)
        self._tok = tok

    @classmethod
    def from_folder(cls, path: str | Path) -> CLIPTokenizer:
        """Load a checkpoint's tokenizer: ``path`` is the checkpoint root or its ``tokenizer/``.

        Reads ``vocab.json`` + ``merges.txt`` (real checkpoints) or, lacking them,
        ``tokenizer.json`` (what transformers 5 ``save_pretrained`` writes); special tokens,
        the pad token and ``model_max_length`` from ``tokenizer_config.json`` and
        ``special_tokens_map.json`` when present.
        """
        folder = Path(path)
        if (folder / "tokenizer").is_dir():
            folder = folder / "tokenizer"
        if not folder.is_dir():
            raise PbmlxError(f"Tokenizer folder {folder} does not exist.")
        config = _read_json(folder / "tokenizer_config.json")
        special_map = _read_json(folder / "special_tokens_map.json")
        vocab, merges, source = _read_vocab_and_merges(folder)

        named: dict[str, object] = {}
        for key in _NAMED_SPECIALS:
            value = special_map.get(key, config.get(key))
            if value is not None:
                named[key] = value
        defaults = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
        contents = {key: _content(named.get(key, default)) for key, default in defaults.items()}

        max_length = config.get("model_max_length")
        if not _is_length(max_length):
            max_length = DEFAULT_MAX_LENGTH
        return cls(
            vocab,
            merges,
            bos_token=contents["bos_token"],
            eos_token=contents["eos_token"],
            pad_token=contents["pad_token"],
            unk_token=contents["unk_token"],
            max_length=max_length,
            added_tokens=_added_tokens(config, named, contents),
            source=str(source),
        )

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        """Token ids of each prompt, ``(B, max_length)`` int32: bos, text, eos, then pad."""
        if isinstance(texts, str):
            texts = [texts]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise PbmlxError(f"Prompt {i} is a {type(text).__name__}, not a string.")
        encodings = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(texts), -1)
        return ids  # (B, max_length)

    def tokenize(self, text: str) -> list[str]:
        """The token strings of one prompt, specials and padding included (for inspection)."""
        return self._tok.encode(text).tokens

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


def _is_length(value: object) -> bool:
    """A usable ``model_max_length``: an int below transformers' "no limit" sentinel."""
    return isinstance(value, int) and not isinstance(value, bool) and value < _UNSET_MAX_LENGTH


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PbmlxError(f"Tokenizer file {path} is not valid JSON ({e}).") from e
    if not isinstance(data, dict):
        raise PbmlxError(f"Tokenizer file {path} does not hold a JSON object.")
    return data


def _read_vocab_and_merges(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]], Path]:
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if vocab_file.is_file() and merges_file.is_file():
        try:
            vocab, merges = BPE.read_file(str(vocab_file), str(merges_file))
        except Exception as e:  # the library raises its own Exception subclass for bad files
            raise PbmlxError(
                f"Tokenizer files {vocab_file} / {merges_file} are malformed ({e})."
            ) from e
        return vocab, merges, vocab_file
    json_file = folder / "tokenizer.json"
    if json_file.is_file():
        model = _read_json(json_file).get("model", {})
        vocab, merges = model.get("vocab"), model.get("merges")
        if (
            model.get("type") != "BPE"
            or not isinstance(vocab, dict)
            or not isinstance(merges, list)
        ):
            raise PbmlxError(f"Tokenizer file {json_file} does not hold a BPE vocabulary.")
        pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
        if any(len(p) != 2 for p in pairs):
            raise PbmlxError(f"Tokenizer file {json_file} has a malformed merge.")
        return vocab, pairs, json_file
    raise PbmlxError(
        f"Tokenizer folder {folder} has neither vocab.json + merges.txt nor tokenizer.json."
    )


def _content(value: object) -> str:
    """A special token's text, whether the file gives a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str) or not value:
        raise PbmlxError(f"Special token {value!r} in the tokenizer config is not a string.")
    return value


def _added_tokens(
    config: dict, named: dict[str, object], contents: dict[str, str]
) -> list[SpecialToken]:
    """The special tokens matched in raw text, with the flags transformers gives them.

    ``added_tokens_decoder`` in ``tokenizer_config.json`` (newer files) is authoritative.
    Named special tokens it does not list are added in the order bos, eos, unk, pad, a later
    one overriding an earlier one with the same text: a dict keeps its ``normalized`` flag
    (older files write ``{"__type": "AddedToken", ...}``), a bare string is matched
    un-normalized. Only prompts that spell a special token out (e.g. ``<|ENDOFTEXT|>``)
    depend on these flags.
    """
    declared: list[SpecialToken] = []
    for key, entry in sorted(
        (config.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0])
    ):
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise PbmlxError(
                f"added_tokens_decoder entry {key} in tokenizer_config.json is malformed."
            )
        declared.append(
            SpecialToken(
                entry["content"],
                normalized=bool(entry.get("normalized", False)),
                lstrip=bool(entry.get("lstrip", False)),
                rstrip=bool(entry.get("rstrip", False)),
                single_word=bool(entry.get("single_word", False)),
                special=bool(entry.get("special", True)),
            )
        )
    listed = {t.content for t in declared}
    by_content: dict[str, SpecialToken] = {}
    for key in _NAMED_SPECIALS:
        content = contents[key]
        if content in listed:
            continue
        value = named.get(key)
        normalized = bool(value.get("normalized", False)) if isinstance(value, dict) else False
        by_content[content] = SpecialToken(content, normalized=normalized)
    return declared + list(by_content.values())
